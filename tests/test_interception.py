"""How extsan sees an extension's capsule calls: by patching the callers' GOT entries.

Debian's /usr/bin/python3.11 links libpython into the executable, so a preloaded library that
merely defined PyCapsule_New would never be called (NOTES.md section 1); pyenv's Pythons are
--enable-shared builds. The shim must see a GIL-less PyCapsule_New on both, whether the
extension calls through the PLT (JUMP_SLOT) or, built with -fno-plt, through GLOB_DAT entries;
and it must never reference libpython itself (that would load a second runtime under a static
Python).
"""

import re
import subprocess

import pytest

from conftest import DEBIAN_ID, PYENV_MINORS, PYTHON_IDS, check_stack, extension_path, program_pid, pythons
from test_capsules import PRELUDE, check_findings, one


def tool(*args):
    out = subprocess.run(list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
    assert out.returncode == 0, "%s failed: %s" % (" ".join(args), out.stderr)
    return out.stdout


def needed(path):
    """The DT_NEEDED entries of an ELF object."""
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", tool("readelf", "-dW", str(path)))


def dynamic_symbols(path, which):
    """Names of the dynamic symbols of path; which: "--defined-only" or "--undefined-only"."""
    names = []
    for line in tool("nm", "-D", which, str(path)).splitlines():
        fields = line.split()
        if fields:
            names.append(fields[-1].split("@")[0])
    return names


def relocations(path):
    """{(relocation type, symbol)} of an ELF object's dynamic relocations."""
    found = set()
    for line in tool("readelf", "-rW", str(path)).splitlines():
        m = re.match(r"^[0-9a-f]+\s+[0-9a-f]+\s+(R_\w+)\s+[0-9a-f]+\s+(\S+)", line)
        if m:
            found.add((m.group(1), m.group(2).split("@")[0]))
    return found


def check_gil_less_new_is_seen(run, module="capsule_defects"):
    code = PRELUDE.replace("import capsule_defects as m", "import %s as m" % module)
    result = run(code + "cap = m.new_without_gil()\nprint(m.get_pointer_with_gil(cap))\n")
    assert result.returncode == 0, result.describe()
    assert result.stdout.splitlines()[1:] == ["42"], result.describe()
    check_findings(result, one("PyCapsule_New", "new_without_gil"), program_pid(result), module=module)


@pytest.mark.pythons(DEBIAN_ID)
def test_static_python_is_seen(python, run):
    """Debian's python3.11: no libpython NEEDED, the C API defined by the executable itself."""
    assert not [n for n in needed(python.path) if n.startswith("libpython")], \
        "%s links libpython: not the static build this test is about" % python.path
    assert "PyCapsule_New" in dynamic_symbols(python.path, "--defined-only")
    check_gil_less_new_is_seen(run)


@pytest.mark.pythons(*PYENV_MINORS)
def test_shared_python_is_seen(python, run):
    """pyenv's --enable-shared builds: the C API comes from libpython3.X.so."""
    assert [n for n in needed(python.path) if n.startswith("libpython3.%d" % python.minor)], \
        "%s does not link libpython: not the shared build this test is about" % python.path
    check_gil_less_new_is_seen(run)


@pytest.mark.pythons(*PYTHON_IDS)
@pytest.mark.parametrize("module, relocation", [
    ("capsule_defects", "R_X86_64_JUMP_SLOT"),  # calls through the PLT (DT_JMPREL)
    ("capsule_defects_noplt", "R_X86_64_GLOB_DAT"),  # -fno-plt: calls through the GOT (DT_RELA)
])
def test_got_entry_kinds_are_patched(python, fixtures, run, module, relocation):
    so = extension_path(fixtures, module)
    kinds = {kind for kind, symbol in relocations(so) if symbol == "PyCapsule_New"}
    assert kinds == {relocation}, "%s reaches PyCapsule_New through %s, not %s" % (so.name, kinds, relocation)
    check_gil_less_new_is_seen(run, module)


def test_shim_has_no_python_symbols(shim_libraries):
    """No build/libextsan*.so defines or imports a Py*/_Py* symbol or needs libpython: every C
    API function is reached through dlsym."""
    problems = []
    for library in shim_libraries:
        for which in ("--defined-only", "--undefined-only"):
            python_symbols = [s for s in dynamic_symbols(library, which) if re.match(r"_?Py", s)]
            if python_symbols:
                problems.append("%s %s: %s" % (library.name, which, " ".join(sorted(python_symbols)[:20])))
        libpython = [n for n in needed(library) if "libpython" in n]
        if libpython:
            problems.append("%s NEEDED %s" % (library.name, " ".join(libpython)))
    # Every core is among those checked, not only the loader.
    names = sorted(l.name for l in shim_libraries)
    cores = ["libextsan-py3.%d.so" % python.minor for python in pythons().values() if python.path is not None]
    assert "libextsan.so" in names and set(cores) <= set(names), names
    assert not problems, "\n".join(problems)


def test_stack_frames_name_the_extension_module(run, fixtures):
    """Frames carry the module path and an offset inside it (for symbolising later)."""
    result = run(PRELUDE + "m.new_without_gil()\n")
    assert result.returncode == 0, result.describe()
    (finding,) = result.findings()
    check_stack(finding, "new_without_gil", module="capsule_defects")
    (frame,) = [f for f in finding["stack"] if (f.get("function") or "") == "new_without_gil"][:1]
    so = extension_path(fixtures, "capsule_defects")
    assert frame["module"].endswith(so.name), result.describe()
    offset = frame["offset"]
    offset = int(offset, 0) if isinstance(offset, str) else offset
    assert 0 < offset < mapped_size(so), result.describe()


def mapped_size(path):
    """The end of the highest PT_LOAD segment of an ELF object (its size once mapped)."""
    end = 0
    for line in tool("readelf", "-lW", str(path)).splitlines():
        fields = line.split()
        if fields and fields[0] == "LOAD":
            end = max(end, int(fields[2], 16) + int(fields[5], 16))
    return end
