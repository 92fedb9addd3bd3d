"""Small pytest projects written into a test's tmp_path and run by an interpreter of the matrix,
under `scripts/extsan run --json` or on their own (the plugin's in-process activation).

The projects import the fixture extensions (PYTHONPATH: the fixture build of that Python) and
pytest with pytest-xdist from build/pytest-deps (pure wheels that scripts/install-deps puts
there: pytest 9 for 3.10+, pytest 8.4 in build/pytest-deps-3.9 for 3.9), and scripts/ for the plugin
`extsan_pytest`. Each project has its own pytest.ini, so the suite's conftest never applies.

Project tests record which process ran them: `record("name")` (from the generated helper module
`record.py`) writes the pid into pids/<name>, which the checks read back.
"""

import json
import os
import subprocess
import textwrap
from pathlib import Path
from typing import NamedTuple, Optional

import pytest

from conftest import (BUILD, EXTSAN, PYTHON_IDS, RUN_TIMEOUT, ROOT, base_env, check_report,
                      run_captured)

SCRIPTS = ROOT / "scripts"
PYTEST_IDS = PYTHON_IDS


def pytest_deps(python):
    """Where pytest and pytest-xdist for `python` are: pytest 9 needs 3.10, 3.9 has pytest 8.4."""
    return BUILD / ("pytest-deps-3.9" if python.minor == 9 else "pytest-deps")

RECORD = """\
import os
from pathlib import Path

PIDS = Path(__file__).resolve().parent / "pids"


def record(name, pid=None):
    PIDS.mkdir(exist_ok=True)
    (PIDS / name).write_text(str(pid or os.getpid()))
"""


class PytestRun(NamedTuple):
    returncode: int
    stdout: str
    stderr: str
    report: Optional[dict]  # the merged JSON report, None when none was written
    project: Path

    def pids(self):
        """{name: pid} recorded by the project's tests."""
        directory = self.project / "pids"
        return {p.name: int(p.read_text()) for p in directory.iterdir()} if directory.is_dir() else {}

    def findings(self, kind=None, pid=None):
        if self.report is None:
            pytest.fail("no JSON report was written\n" + self.describe(), pytrace=False)
        return [f for f in self.report["findings"]
                if (kind is None or f["kind"] == kind) and (pid is None or f["pid"] == pid)]

    def describe(self):
        report = json.dumps(self.report, indent=1)[:12000] if self.report is not None else "none"
        return ("status %d\n--- stdout ---\n%s\n--- stderr ---\n%s\n--- pids ---\n%s\n--- report ---\n%s"
                % (self.returncode, self.stdout[-8000:], self.stderr[-8000:], self.pids(), report))


def write_project(project, files, ini="[pytest]\n"):
    """Writes pytest.ini, record.py and `files` ({name: source}, dedented) into project."""
    project.mkdir(parents=True, exist_ok=True)
    (project / "pytest.ini").write_text(ini)
    (project / "record.py").write_text(RECORD)
    for name, text in files.items():
        (project / name).write_text(textwrap.dedent(text))
    return project


def project_env(python, fixtures, extra=None):
    """A clean environment: PYTHONPATH = fixture build, pytest-deps, scripts/; no PYTEST_*."""
    deps = pytest_deps(python)
    if not (deps / "pytest").is_dir():
        pytest.fail("%s has no pytest: run scripts/install-deps" % deps, pytrace=False)
    env = base_env(fixtures, extra)
    env["PYTHONPATH"] = os.pathsep.join([str(fixtures), str(deps), str(SCRIPTS)])
    for name in list(env):
        if name.startswith("PYTEST_") or name.startswith("COV_"):
            del env[name]
    env.update(extra or {})
    return env


def run_pytest(python, fixtures, project, args=(), under_extsan=True, extsan_args=(), env=None,
               script=None, timeout=RUN_TIMEOUT):
    """Runs `python -m pytest -p no:cacheprovider ARGS` in project (`python SCRIPT ...` when
    script is given: a script that calls pytest.main).

    under_extsan: through `scripts/extsan run --json F` (the report is F). Otherwise directly,
    with EXTSAN_OPTIONS=log_dir=<project>/logs added, and the report is those logs merged by
    `scripts/extsan merge` (None when no process wrote one).
    """
    runner = [str(script)] if script is not None else ["-m", "pytest"]
    command = [str(python.path)] + runner + ["-p", "no:cacheprovider"] + list(args)
    report_path = project / "extsan.json"
    extra = dict(env or {})
    if under_extsan:
        command = [str(EXTSAN), "run", "--json", str(report_path)] + list(extsan_args) + ["--"] + command
    else:
        logs = project / "logs"
        logs.mkdir(exist_ok=True)
        options = [o for o in (extra.get("EXTSAN_OPTIONS"), "log_dir=%s" % logs) if o]
        extra["EXTSAN_OPTIONS"] = ":".join(options)
    out = run_captured(command, project_env(python, fixtures, extra), project, timeout)
    if not under_extsan and any((project / "logs").glob("extsan.*.json")):
        merged = subprocess.run([str(EXTSAN), "merge", str(report_path), str(project / "logs")],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=base_env(), timeout=timeout)
        assert merged.returncode == 0, merged.stdout
    report = None
    if report_path.exists():
        report = json.loads(report_path.read_text())
        check_report(report, report_path)
    return PytestRun(out.returncode, out.stdout, out.stderr, report, project)


def one(findings, where):
    """The only finding of `findings`; fails the test when there are none or several."""
    assert len(findings) == 1, "expected exactly one finding, got %d:\n%s" % (len(findings), where)
    return findings[0]
