"""Shared machinery of extsan's integration tests.

- The Python matrix: pyenv's 3.9-3.13 (the newest patch release of each, found through
  `pyenv root`) and Debian's statically linked /usr/bin/python3.11 ("debian3.11"). A test that
  takes the `python` argument runs once per interpreter, or for those a `pythons(...)` mark
  names. A missing interpreter fails the test; EXTSAN_ALLOW_MISSING_PYTHONS=1 makes it a skip.
- The fixture extensions (tests/fixtures) built with Meson once per interpreter into
  build/fixtures-<id>, under a file lock so that pytest-xdist workers do not race; a later
  session only runs `meson compile`, which does nothing when nothing changed.
- `run_extsan`: runs Python code under `scripts/extsan run --json FILE` and returns
  (returncode, stdout, stderr, report), the report checked against the contract's shape.
- Helpers that read the planted defects' source lines and check findings and stacks.
"""

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple, Optional, Tuple

import jsonschema
import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build"
EXTSAN = ROOT / "scripts" / "extsan"
FIXTURES_SRC = ROOT / "tests" / "fixtures"
DEPS = BUILD / "deps"
DEMO = FIXTURES_SRC / "demo.py"

KIND = "capsule-without-gil"
# extsan's version: meson.build's project() version, its one source.
EXTSAN_VERSION = re.search(r"^project\([^)]*?\bversion:\s*'([^']+)'", (ROOT / "meson.build").read_text(),
                           re.M | re.S).group(1)
PYENV_MINORS = ("3.9", "3.10", "3.11", "3.12", "3.13")
DEBIAN_ID = "debian3.11"
DEBIAN_PYTHON = Path("/usr/bin/python3.11")
PYTHON_IDS = PYENV_MINORS + (DEBIAN_ID,)
# nanobind 3.x needs Python 3.10 or newer.
NANOBIND_IDS = tuple(i for i in PYTHON_IDS if i != "3.9")
ALLOW_MISSING = os.environ.get("EXTSAN_ALLOW_MISSING_PYTHONS") == "1"

RUN_TIMEOUT = 180  # seconds for one program under extsan
BUILD_TIMEOUT = 900  # seconds for one fixture build step

# Status of `extsan run` when extsan itself fails (bad option, ...), never CMD's.
EXTSAN_FAILURE_STATUS = 125
# Default halt_exitcode.
HALT_STATUS = 66

# Variables that would change how the program under test behaves; the runs set their own.
SCRUBBED_ENV = (
    "EXTSAN_OPTIONS", "LD_PRELOAD", "PYTHONPATH", "PYTHONHOME", "PYTHONMALLOC", "PYTHONDEVMODE",
    "PYTHONSTARTUP", "PYTHONWARNINGS", "PYTHONINSPECT", "PYTHONUSERBASE", "PYTHONSAFEPATH",
)


# ---- the Python matrix ----------------------------------------------------------------------


class Python(NamedTuple):
    id: str
    path: Optional[Path]  # None when missing
    missing: Optional[str]  # why it is missing
    version: Optional[tuple] = None

    @property
    def minor(self):
        return self.version[1]


def _pyenv_root():
    try:
        out = subprocess.run(["pyenv", "root"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        return None, "`pyenv root` failed: %s" % e
    if out.returncode != 0 or not out.stdout.strip():
        return None, "`pyenv root` exited %d: %s" % (out.returncode, out.stderr.strip())
    return Path(out.stdout.strip()), None


def _interpreter_version(path):
    try:
        out = subprocess.run([str(path), "-I", "-c", "import sys; print(*sys.version_info[:3])"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
        return tuple(int(n) for n in out.stdout.split())
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def discover_pythons():
    """{id: Python} for every id of the matrix, found or with the reason it is missing."""
    found = {}
    root, problem = _pyenv_root()
    newest = {}
    if root is not None:
        versions = root / "versions"
        for entry in versions.iterdir() if versions.is_dir() else ():
            m = re.fullmatch(r"3\.(\d+)\.(\d+)", entry.name)
            if m:
                minor, patch = int(m.group(1)), int(m.group(2))
                if patch >= newest.get(minor, (-1, None))[0]:
                    newest[minor] = (patch, entry)
    for pid in PYENV_MINORS:
        minor = int(pid.split(".")[1])
        if root is None:
            found[pid] = Python(pid, None, problem)
        elif minor not in newest:
            found[pid] = Python(pid, None, "no pyenv Python %s under %s/versions" % (pid, root))
        else:
            found[pid] = Python(pid, newest[minor][1] / "bin" / ("python" + pid), None)
    found[DEBIAN_ID] = Python(DEBIAN_ID, DEBIAN_PYTHON, None)
    for pid, python in list(found.items()):
        if python.path is None:
            continue
        version = _interpreter_version(python.path)
        expected = (3, 11) if pid == DEBIAN_ID else tuple(int(n) for n in pid.split("."))
        if version is None:
            found[pid] = Python(pid, None, "%s does not run" % python.path)
        elif version[:2] != expected:
            found[pid] = Python(pid, None, "%s is Python %s, not %s"
                                % (python.path, ".".join(map(str, version)), pid))
        else:
            found[pid] = python._replace(version=version)
    return found


_PYTHONS = None


def pythons():
    global _PYTHONS
    if _PYTHONS is None:
        _PYTHONS = discover_pythons()
    return _PYTHONS


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "pythons(*ids): run the test only for these interpreters of the matrix")


def pytest_generate_tests(metafunc):
    if "python" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("pythons")
        ids = marker.args if marker else PYTHON_IDS
        metafunc.parametrize("python", ids, indirect=True)


@pytest.fixture
def python(request):
    """The interpreter of this parametrization (a Python tuple). A missing one makes the test
    fail (in pytest_pyfunc_call, so that it counts as FAILED, not as a setup ERROR), or skip
    with EXTSAN_ALLOW_MISSING_PYTHONS=1; fixtures that need it do nothing for a missing one."""
    found = pythons()[request.param]
    if found.path is None and ALLOW_MISSING:
        pytest.skip(_missing_message(found) + " (EXTSAN_ALLOW_MISSING_PYTHONS=1)")
    return found


def _missing_message(python):
    return "Python %s is missing: %s" % (python.id, python.missing)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    python = pyfuncitem.funcargs.get("python")
    if isinstance(python, Python) and python.path is None:
        pytest.fail(_missing_message(python) + " (set EXTSAN_ALLOW_MISSING_PYTHONS=1 to skip instead)",
                    pytrace=False)


# ---- building the fixture extensions --------------------------------------------------------


def _venv_bin():
    return Path(sys.executable).parent


def _meson():
    for candidate in (_venv_bin() / "meson", BUILD / "venv" / "bin" / "meson"):
        if candidate.exists():
            return [str(candidate)]
    found = shutil.which("meson")
    if found:
        return [found]
    raise RuntimeError("meson not found: run scripts/install-deps")


def _build_env():
    env = dict(os.environ)
    # Meson finds ninja on PATH; the venv's bin holds it even when the venv is not activated.
    env["PATH"] = os.pathsep.join([str(_venv_bin()), str(BUILD / "venv" / "bin"), env.get("PATH", "")])
    for name in SCRUBBED_ENV:
        env.pop(name, None)
    return env


def _step(args, log, what):
    started = time.monotonic()
    try:
        out = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env=_build_env(), timeout=BUILD_TIMEOUT)
    except subprocess.TimeoutExpired as e:
        raise RuntimeError("%s timed out after %d s" % (what, BUILD_TIMEOUT)) from e
    log.write("$ %s\n%s(%.1f s, status %d)\n" % (" ".join(args), out.stdout,
                                                 time.monotonic() - started, out.returncode))
    if out.returncode != 0:
        tail = "\n".join(out.stdout.splitlines()[-40:])
        raise RuntimeError("%s failed (status %d):\n%s" % (what, out.returncode, tail))


def build_fixtures(python):
    """Builds the fixture extensions for python into build/fixtures-<id>; returns that path.

    Serialised across processes with a lock file; configures only when the directory is new or
    was configured with other options, otherwise only compiles (a no-op when up to date).
    """
    BUILD.mkdir(exist_ok=True)
    builddir = BUILD / ("fixtures-" + python.id)
    deps = str(DEPS) if (DEPS / "nanobind").is_dir() or (DEPS / "pybind11").is_dir() else ""
    wanted = {"python": str(python.path), "deps": deps}
    stamp = builddir / "extsan-fixture-options.json"
    with open(BUILD / ("fixtures-" + python.id + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with open(BUILD / ("fixtures-" + python.id + ".log"), "a") as log:
            configured = (builddir / "build.ninja").exists() and stamp.exists() \
                and json.loads(stamp.read_text()) == wanted
            if not configured:
                shutil.rmtree(builddir, ignore_errors=True)
                _meson_setup(FIXTURES_SRC, builddir, wanted, log, "the fixtures for Python %s" % python.id)
                stamp.write_text(json.dumps(wanted))
            _meson_compile(builddir, log, "the fixtures for Python %s" % python.id)
    return builddir


def _meson_setup(source, builddir, options, log, what):
    _step(_meson() + ["setup", str(builddir), str(source)] + ["-D%s=%s" % item for item in options.items()],
          log, "meson setup of " + what)


def _meson_compile(builddir, log, what):
    _step(_meson() + ["compile", "-C", str(builddir)], log, "meson compile of " + what)


def rebuild_fixtures_elsewhere(python, directory, c_args):
    """Rebuilds the C fixture extensions (not the nanobind/pybind11 ones) from a copy of
    tests/fixtures in directory/fixtures, into directory/build, with c_args added to the
    compiler's flags: the same sources from another checkout, built another way. Returns the
    build directory (for PYTHONPATH)."""
    source, builddir = directory / "fixtures", directory / "build"
    shutil.copytree(str(FIXTURES_SRC), str(source))
    what = "the fixtures rebuilt in %s" % directory
    with open(directory / "build.log", "w") as log:
        _meson_setup(source, builddir, {"python": str(python.path), "c_args": c_args}, log, what)
        _meson_compile(builddir, log, what)
    return builddir


@pytest.fixture(scope="session")
def fixture_builds():
    """Session cache {python id: build dir or the error}: each Python is built once."""
    return {}


@pytest.fixture
def fixtures(python, fixture_builds):
    """The build directory holding the fixture extensions for this test's Python."""
    if python.path is None:
        return None  # the test fails in pytest_pyfunc_call
    if python.id not in fixture_builds:
        try:
            fixture_builds[python.id] = build_fixtures(python)
        except RuntimeError as e:
            fixture_builds[python.id] = e
    built = fixture_builds[python.id]
    if isinstance(built, Exception):
        pytest.fail(str(built), pytrace=False)
    return built


def extension_path(builddir, module):
    """The built extension `module` in builddir; fails the test when it was not built."""
    found = sorted(builddir.glob(module + ".cpython-*.so")) + sorted(builddir.glob(module + ".so"))
    if not found:
        pytest.fail("%s was not built in %s (for nanobind/pybind11: is build/deps populated? "
                    "run scripts/install-deps)" % (module, builddir), pytrace=False)
    return found[0]


# ---- the shim ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def shim_libraries():
    """build/libextsan*.so, building them with `scripts/extsan build` when absent."""
    BUILD.mkdir(exist_ok=True)
    with open(BUILD / "tests-shim.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (BUILD / "libextsan.so").exists():
            out = subprocess.run([str(EXTSAN), "build"], stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True, timeout=BUILD_TIMEOUT)
            if out.returncode != 0:
                pytest.fail("scripts/extsan build failed (status %d):\n%s"
                            % (out.returncode, out.stdout[-4000:]), pytrace=False)
    libraries = sorted(BUILD.glob("libextsan*.so"))
    if not (BUILD / "libextsan.so").exists():
        pytest.fail("scripts/extsan build made no build/libextsan.so", pytrace=False)
    return libraries


# ---- the report contract --------------------------------------------------------------------

FRAME_SCHEMA = {
    "type": "object",
    "required": ["function", "module", "offset", "in_extension"],
    "properties": {
        "function": {"type": ["string", "null"]},
        "module": {"type": ["string", "null"]},
        "offset": {"type": ["integer", "string"]},
        "file": {"type": "string"},
        "line": {"type": "integer", "minimum": 1},
        "in_extension": {"type": "boolean"},
    },
    "dependentRequired": {"file": ["line"], "line": ["file"]},
}

FINDING_SCHEMA = {
    "type": "object",
    "required": ["kind", "count", "pid", "stack"],
    "properties": {
        "kind": {"type": "string"},
        "count": {"type": "integer", "minimum": 1},
        "pid": {"type": "integer", "minimum": 1},
        "stack": {"type": "array", "items": FRAME_SCHEMA},
        "type_stack": {"type": "array", "items": FRAME_SCHEMA},
        "tp_new": {"oneOf": [{"type": "null"}, FRAME_SCHEMA]},
        "tp_init": {"oneOf": [{"type": "null"}, FRAME_SCHEMA]},
    },
    "if": {"properties": {"kind": {"const": KIND}}},
    "then": {
        "required": ["api", "capsule", "thread"],
        "properties": {
            "api": {"type": "string", "minLength": 1},
            "capsule": {"type": ["string", "null"]},
            "thread": {
                "type": "object",
                "required": ["tid", "name", "python_thread_state"],
                "properties": {
                    "tid": {"type": "integer", "minimum": 1},
                    "name": {"type": ["string", "null"]},
                    "python_thread_state": {"type": "boolean"},
                },
            },
        },
    },
}

REPORT_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["extsan", "extsan_version", "processes", "findings"],
    "properties": {
        "extsan": {"const": 1},
        "extsan_version": {"const": EXTSAN_VERSION},
        "processes": {"type": "array", "items": {"type": "object"}},
        "findings": {"type": "array", "items": FINDING_SCHEMA},
    },
}


def check_report(report, where):
    """Fails the test when report does not have the contract's shape."""
    try:
        jsonschema.Draft202012Validator(REPORT_SCHEMA).validate(report)
    except jsonschema.ValidationError as e:
        pytest.fail("%s does not match the report contract: %s at %s"
                    % (where, e.message, "/".join(map(str, e.absolute_path))), pytrace=False)


# ---- running programs under extsan ----------------------------------------------------------


def check_process_checked(report, describe, pid=None, argv=None):
    """Fails unless the merged report lists the program's own process, by pid and/or argv, once
    and with "complete": true.

    An empty findings list proves nothing by itself: a process extsan never ran in (no
    preload, no core for its Python, a crash before the report) reports no finding either. The
    process's own complete report is what shows that extsan ran in it to the end.
    """
    assert pid is not None or argv is not None, "the program's process needs a pid or an argv"
    if report is None:
        pytest.fail("no JSON report was written\n" + describe, pytrace=False)
    wanted = dict(pid=pid, argv=list(argv) if argv is not None else None)
    wanted = {key: value for key, value in wanted.items() if value is not None}
    mine = [p for p in report["processes"] if all(p.get(k) == v for k, v in wanted.items())]
    assert len(mine) == 1, "the report lists %d processes with %s, not one: extsan did not check " \
        "the program's process\n%s" % (len(mine), json.dumps(wanted), describe)
    assert mine[0].get("complete") is True, \
        "the program's process did not complete its report:\n" + describe


def program_pid(result):
    """The pid the program printed on its first line, `pid N`."""
    first = result.stdout.splitlines()[:1]
    assert first and first[0].startswith("pid "), "the program did not start:\n" + result.describe()
    return int(first[0].split()[1])


class Run(NamedTuple):
    returncode: int
    stdout: str
    stderr: str
    report: Optional[dict]
    command: Tuple[str, ...] = ()  # the program's argv

    def findings(self, kind=KIND):
        """The report's findings of kind; fails the test when there is no report."""
        return [f for f in self.all_findings() if f["kind"] == kind]

    def all_findings(self):
        if self.report is None:
            pytest.fail("no JSON report was written\n" + self.describe(), pytrace=False)
        return self.report["findings"]

    def check_process_checked(self, pid=None):
        """The program's own process (its argv, and pid when given) is in the report, complete."""
        check_process_checked(self.report, self.describe(), pid=pid, argv=self.command)

    def check_silent(self, pid=None):
        """A clean run: status 0, no finding in the report nor on stderr, and the program's own
        process checked to the end (so that the silence is extsan's, not its absence)."""
        assert self.returncode == 0, self.describe()
        assert self.all_findings() == [], self.describe()
        assert stderr_finding_lines(self.stderr) == [], self.describe()
        self.check_process_checked(pid)

    def describe(self):
        report = json.dumps(self.report, indent=1)[:12000] if self.report is not None else "none"
        return ("status %d\n--- stdout ---\n%s\n--- stderr ---\n%s\n--- report ---\n%s"
                % (self.returncode, self.stdout[-6000:], self.stderr[-8000:], report))


class WorkloadOutput(NamedTuple):
    """What a fixture workload printed: `pid N` first, `workload ok` last, one `info {json}`
    line, and lines `<tag> {json}` (tests/fixtures/*_workload.py, gc_workloads.py)."""
    pid: int
    info: dict
    tagged: dict  # {tag: its JSON value}, for every tag but info
    lines: Tuple[str, ...]


def parse_workload_output(stdout, describe):
    lines = stdout.splitlines()
    assert lines and lines[0].startswith("pid "), "the workload did not start:\n" + describe
    assert lines[-1] == "workload ok", "the workload did not finish:\n" + describe
    tagged = {}
    for line in lines[1:-1]:
        tag, _, value = line.partition(" ")
        if value.startswith("{"):
            tagged.setdefault(tag, []).append(json.loads(value))
    info = tagged.pop("info", [])
    assert len(info) == 1, describe
    return WorkloadOutput(int(lines[0].split()[1]), info[0],
                          {tag: values[0] for tag, values in tagged.items()}, tuple(lines))


def run_plain_workload(python, script, args, cwd, env):
    """A workload without extsan: (CompletedProcess, WorkloadOutput, description)."""
    out = subprocess.run([str(python.path), str(script)] + list(args), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env, cwd=str(cwd),
                         timeout=RUN_TIMEOUT, stdin=subprocess.DEVNULL)
    describe = "status %d\n--- stdout ---\n%s\n--- stderr ---\n%s" % (
        out.returncode, out.stdout[-6000:], out.stderr[-6000:])
    assert out.returncode == 0, describe
    return out, parse_workload_output(out.stdout, describe), describe


def base_env(builddir=None, extra=None):
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
    env["PYTHONFAULTHANDLER"] = "1"  # a crash shows the Python stack in the failure output
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    if builddir is not None:
        env["PYTHONPATH"] = str(builddir)
    env.update(extra or {})
    return env


def run_captured(command, env, cwd, timeout=RUN_TIMEOUT):
    """Runs command with stdout and stderr captured and no stdin; a time-out fails the test with
    what the command had printed."""
    try:
        # errors: a text report names paths as their bytes, which need not be UTF-8.
        return subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              errors="surrogateescape", env=env, cwd=str(cwd), timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        pytest.fail("timed out after %d s: %s\n--- stdout ---\n%s\n--- stderr ---\n%s"
                    % (timeout, " ".join(map(str, command)), e.stdout, e.stderr), pytrace=False)


def run_extsan(python, builddir, tmp_path, code=None, script=None, args=(), extsan_args=(),
               env=None, json_report=True, timeout=RUN_TIMEOUT):
    """Runs `python -c code` (or `python script args`) under `scripts/extsan run [--json F]`.

    Returns Run(returncode, stdout, stderr, report, command); report is None when no file was
    written.
    env adds to a clean environment with PYTHONPATH=builddir.
    """
    assert (code is None) != (script is None)
    command = [str(python.path)] + (["-c", code] if code is not None else [str(script)]) + [str(a) for a in args]
    report_path = None
    cli = [str(EXTSAN), "run"]
    if json_report:
        report_path = tmp_path / ("report-%d.json" % len(list(tmp_path.glob("report-*.json*"))))
        cli += ["--json", str(report_path)]
    cli += list(extsan_args) + ["--"] + command
    out = run_captured(cli, base_env(builddir, env), tmp_path, timeout)
    report = None
    if report_path is not None and report_path.exists():
        text = report_path.read_text()
        try:
            report = json.loads(text)
        except ValueError as e:
            pytest.fail("%s is not JSON: %s\n%s" % (report_path, e, text[:4000]), pytrace=False)
        check_report(report, report_path)
    return Run(out.returncode, out.stdout, out.stderr, report, tuple(command))


@pytest.fixture
def run(python, fixtures, tmp_path):
    """run(code=..., **kw): run_extsan bound to this test's Python and fixture build."""

    def runner(code=None, **kwargs):
        return run_extsan(python, fixtures, tmp_path, code=code, **kwargs)

    return runner


# ---- planted defects: source lines, findings, stacks ----------------------------------------

_SITE = re.compile(r"^\s*(?:/\*|//) site (\w+) (.+?)\s*(?:\*/)?\s*$")


def defect_sites():
    """{(function, api): (file name, line)} from the fixture sources' `site <function> <api>`
    comment lines: the line after one is where a frame of <function> must point for a finding
    of <api>."""
    sites = {}
    for source in sorted(FIXTURES_SRC.glob("*.c")) + sorted(FIXTURES_SRC.glob("*.cpp")):
        for number, line in enumerate(source.read_text().splitlines(), 1):
            m = _SITE.match(line)
            if m:
                sites[(m.group(1), m.group(2))] = (source.name, number + 1)
    return sites


def names_function(frame, function):
    """True when the frame's function is `function` (C name, or a demangled C++ name)."""
    name = frame.get("function") or ""
    return re.search(r"(?<![\w])%s(?![\w])" % re.escape(function), name) is not None


def check_stack(finding, function, api=None, module=None, inline_headers=()):
    """Fails unless the finding's stack has a frame of `function` with file:line.

    The frame must name the line of its `site` comment (for the finding's api, or `api`), and
    lie in the extension `module` when given. inline_headers: header names a frame may name
    instead, where the call is inside code a header forces inline (Py_DECREF is always-inline
    from 3.12 on).
    """
    api = api or finding["api"]
    frames = [f for f in finding["stack"] if names_function(f, function)]
    where = json.dumps(finding, indent=1)
    assert frames, "no frame of the stack names %s:\n%s" % (function, where)
    frame = frames[0]
    if module is not None:
        assert os.path.basename(frame.get("module") or "").startswith(module + "."), \
            "the frame of %s is not in the extension %s:\n%s" % (function, module, where)
    assert frame.get("file") and frame.get("line"), \
        "the frame of %s has no file:line (fixtures are built with -g):\n%s" % (function, where)
    site = defect_sites().get((function, api))
    assert site is not None, "no `site %s %s` comment in tests/fixtures" % (function, api)
    source, line = site
    name = os.path.basename(frame["file"])
    if name in inline_headers:
        return
    assert (name, frame["line"]) == (source, line), \
        "the frame of %s names %s:%s, the defect is at %s:%d:\n%s" % (
            function, frame["file"], frame["line"], source, line, where)


def stderr_finding_lines(stderr, pid=None):
    """The text report's lines (`==PID==extsan:`), for pid or any."""
    prefix = re.compile(r"^==%s==extsan:" % (pid if pid is not None else r"\d+"))
    return [line for line in stderr.splitlines() if prefix.match(line)]


def check_stopped_before_command(out, status=EXTSAN_FAILURE_STATUS):
    """Fails unless the completed process `out`, a command that prints `ran`, was stopped before
    it ran, with `status` and one line of stderr starting `extsan: `; returns that line."""
    describe = "status %d\n--- stdout ---\n%s\n--- stderr ---\n%s" % (out.returncode, out.stdout, out.stderr)
    assert out.returncode == status, describe
    assert "ran" not in out.stdout, "the command ran:\n" + describe
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("extsan: "), describe
    return lines[0]
