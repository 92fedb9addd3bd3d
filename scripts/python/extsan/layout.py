"""Where extsan's native parts are: inside the installed package, or in a checkout's build/.

Installed (`pip install extsan`, or `pip install .` from a checkout), the package holds them in
extsan/lib/: the preload library libextsan.so, the core built for the installing Python
(libextsan-py3.X.so) and the options tool. Nothing is built then: `extsan build` and `extsan demo`
need a checkout, whose sources they compile into build/.

In a checkout (scripts/extsan, the tests), this package is scripts/python/extsan and the
libraries are in build/, built on first use by `extsan build` for every Python found.
"""

import os

PACKAGE_DIR = os.path.dirname(os.path.realpath(__file__))
INSTALLED_LIB_DIR = os.path.join(PACKAGE_DIR, "lib")

# The checkout root when this package is scripts/python/extsan of one, else None.
_root = os.path.dirname(os.path.dirname(os.path.dirname(PACKAGE_DIR)))
CHECKOUT = _root if os.path.exists(os.path.join(_root, "meson.build")) \
    and os.path.basename(os.path.dirname(PACKAGE_DIR)) == "python" else None

# An installed package wins: its libraries are the ones it was built with.
INSTALLED = os.path.exists(os.path.join(INSTALLED_LIB_DIR, "libextsan.so"))
LIB_DIR = INSTALLED_LIB_DIR if INSTALLED or CHECKOUT is None else os.path.join(CHECKOUT, "build")

SHIM = os.path.join(LIB_DIR, "libextsan.so")
OPTIONS_TOOL = os.path.join(LIB_DIR, "extsan-options")


def core_path(minor, lib_dir=LIB_DIR):
    """The core for CPython 3.<minor>."""
    return os.path.join(lib_dir, "libextsan-py3.%d.so" % minor)
