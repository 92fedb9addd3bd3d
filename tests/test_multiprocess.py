"""Real test runs: `scripts/extsan run --json F -- python -m pytest ...` over a pytest project
(generated in tmp_path, tests/pytest_projects.py) whose tests start other processes.

Every process reports for its own pid and the merged report lists each finding once, with the
pid of the process that made it: the pytest process itself, pytest-xdist workers, fork and spawn
multiprocessing children, subprocesses. A child killed with SIGKILL leaves the report it wrote
when it made its finding (protected or not), and the merge holds it with everything else.
"""

import json
import signal

import pytest

from conftest import DEBIAN_ID, FIXTURES_SRC, KIND
from pytest_projects import PYTEST_IDS, one, run_pytest, write_project

pytestmark = pytest.mark.pythons(*PYTEST_IDS)

LEAK = "leaked-cycle"
HOLDER = "gc_defects.Holder"

# The processes of the multi-process project and the defect each makes: a capsule call without
# the GIL with an API of its own, so that every finding tells which process it came from.
CHILDREN = """\
import os
import signal

import capsule_defects as m
import gc_defects

from record import record


def leak():
    # A Holder in a cycle through its callback, garbage once this returns: a leaked cycle.
    c = gc_defects.Holder()
    c.set_callback(lambda: c.touch())


def fork_child():
    record("fork")
    m.get_pointer_without_gil(m.new_with_gil())
    leak()


def spawn_child():
    record("spawn")
    m.set_pointer_without_gil(m.new_with_gil())
    leak()


def subprocess_child():
    record("subprocess")
    m.is_valid_without_gil(m.new_with_gil())


def killed_after_snapshot():
    # protect=0: the call is left unprotected, so its finding is written out before it.
    record("killed-snapshot")
    m.get_name_without_gil(m.new_with_gil())
    os.kill(os.getpid(), signal.SIGKILL)


def killed_silently():
    # Protected (the default): the finding reaches the report when made, before the kill.
    record("killed-silent")
    m.set_context_without_gil(m.new_with_gil())
    os.kill(os.getpid(), signal.SIGKILL)
"""

TEST_PROCESSES = """\
import multiprocessing
import os
import signal
import subprocess
import sys

import capsule_defects as m
import children
from record import record

WORKLOADS = {workloads!r}


def test_in_pytest_process():
    record("main")
    m.new_without_gil()


def test_fork():
    process = multiprocessing.get_context("fork").Process(target=children.fork_child)
    process.start()
    process.join(120)
    assert process.exitcode == 0


def test_spawn():
    process = multiprocessing.get_context("spawn").Process(target=children.spawn_child)
    process.start()
    process.join(120)
    assert process.exitcode == 0


def child(function, env=None):
    code = "import children; children.%s()" % function
    return subprocess.run([sys.executable, "-c", code], env=env, timeout=120)


def test_subprocess():
    assert child("subprocess_child").returncode == 0


def test_gc_workload_subprocess():
    out = subprocess.run([sys.executable, WORKLOADS, "holder", "garbage"], timeout=120,
                         stdout=subprocess.PIPE, text=True, check=True).stdout
    record("workload", int(out.split()[1]))


def test_killed_after_snapshot():
    env = dict(os.environ)
    env["EXTSAN_OPTIONS"] = ":".join(o for o in (env.get("EXTSAN_OPTIONS"), "protect=0") if o)
    assert child("killed_after_snapshot", env).returncode == -signal.SIGKILL


def test_killed_silently():
    assert child("killed_silently").returncode == -signal.SIGKILL
"""

# Capsule API -> the process (recorded name) whose call it is.
CAPSULE_APIS = {
    "PyCapsule_New": "main",
    "PyCapsule_GetPointer": "fork",
    "PyCapsule_SetPointer": "spawn",
    "PyCapsule_IsValid": "subprocess",
    "PyCapsule_GetName": "killed-snapshot",
    "PyCapsule_SetContext": "killed-silent",
}


def describe(findings):
    return json.dumps([{k: f.get(k) for k in ("kind", "pid", "api", "type", "count", "test")}
                       for f in findings], indent=1)


def test_every_process_reports_once(python, fixtures, tmp_path):
    """The pytest process, a fork and a spawn multiprocessing child, two subprocesses and two
    children killed by SIGKILL: each finding once, with its own process's pid; the killed
    children's reports, written when they made their findings, are in the merge, incomplete."""
    project = write_project(tmp_path / "project", {
        "children.py": CHILDREN,
        "test_processes.py": TEST_PROCESSES.format(workloads=str(FIXTURES_SRC / "gc_workloads.py")),
    })
    result = run_pytest(python, fixtures, project, ["-q"])
    assert result.returncode == 0, result.describe()
    pids = result.pids()
    assert set(pids) == {"main", "fork", "spawn", "subprocess", "workload", "killed-snapshot",
                         "killed-silent"}, result.describe()
    assert len(set(pids.values())) == len(pids), result.describe()

    processes = {p["pid"]: p for p in result.report["processes"]}
    assert len(processes) == len(result.report["processes"]), "a process is listed twice:\n" + result.describe()
    for name in pids:
        assert pids[name] in processes, "no report from the %s process:\n%s" % (name, result.describe())
    for name in ("killed-snapshot", "killed-silent"):
        assert processes[pids[name]]["complete"] is False, result.describe()
    for name in ("main", "fork", "spawn", "subprocess", "workload"):
        assert processes[pids[name]]["complete"] is True, result.describe()

    capsules = result.findings(KIND)
    assert sorted(f["api"] for f in capsules) == sorted(CAPSULE_APIS), describe(capsules)
    for finding in capsules:
        assert finding["pid"] == pids[CAPSULE_APIS[finding["api"]]], describe(capsules)
        assert finding["count"] == 1, describe(capsules)

    # Leaked cycles: one per child that made one, none in the pytest process (it made none).
    leaks = result.findings(LEAK)
    assert sorted(f["pid"] for f in leaks) == sorted(pids[n] for n in ("fork", "spawn", "workload")), \
        describe(leaks)
    for finding in leaks:
        assert finding["type"] == HOLDER, describe(leaks)
    assert one([f for f in leaks if f["pid"] == pids["workload"]], describe(leaks))["count"] == 3
    for name in ("fork", "spawn"):
        assert one([f for f in leaks if f["pid"] == pids[name]], describe(leaks))["count"] == 1

    # Nothing doubled: no two findings of one process alike.
    keys = [(f["pid"], f["kind"], f.get("api"), f.get("type")) for f in result.report["findings"]]
    assert len(keys) == len(set(keys)), describe(result.report["findings"])


XDIST_FILE = """\
import capsule_defects as m
import gc_defects

from record import record


def test_capsule_{name}():
    record("test_{name}.py::test_capsule_{name}")
    m.{call}


def test_leak_{name}():
    record("test_{name}.py::test_leak_{name}")
    c = gc_defects.Holder()
    c.set_callback(lambda: c.touch())
"""

XDIST_CALLS = {"a": ("new_without_gil()", "PyCapsule_New"),
               "b": ("is_valid_without_gil(m.new_with_gil())", "PyCapsule_IsValid")}


@pytest.mark.pythons("3.10", "3.12", "3.13", DEBIAN_ID)
def test_xdist_workers_report_for_themselves(python, fixtures, tmp_path):
    """pytest -n 2 --dist loadfile over two files: each worker runs one, and the findings of
    both workers are in the merge, each with the pid of its worker, once, and (with the plugin)
    naming the test that made it."""
    project = write_project(tmp_path / "project", {
        "test_%s.py" % name: XDIST_FILE.format(name=name, call=call)
        for name, (call, _) in XDIST_CALLS.items()})
    result = run_pytest(python, fixtures, project,
                        ["-q", "-n", "2", "--dist", "loadfile", "-p", "extsan_pytest"])
    assert result.returncode == 0, result.describe()
    pids = result.pids()
    assert len(pids) == 4, result.describe()
    workers = {pids["test_%s.py::test_capsule_%s" % (n, n)] for n in XDIST_CALLS}
    assert len(workers) == 2, "one worker ran both files:\n" + result.describe()
    processes = [p["pid"] for p in result.report["processes"]]
    assert len(processes) == len(set(processes)) and workers <= set(processes), result.describe()

    capsules = result.findings(KIND)
    assert sorted(f["api"] for f in capsules) == sorted(api for _, api in XDIST_CALLS.values()), \
        describe(capsules)
    for name, (_, api) in XDIST_CALLS.items():
        test = "test_%s.py::test_capsule_%s" % (name, name)
        finding = one([f for f in capsules if f["api"] == api], describe(capsules))
        assert (finding["pid"], finding["test"], finding["count"]) == (pids[test], test, 1), \
            describe(capsules)
    leaks = result.findings(LEAK)
    assert len(leaks) == 2, describe(leaks)
    for name in XDIST_CALLS:
        test = "test_%s.py::test_leak_%s" % (name, name)
        finding = one([f for f in leaks if f["pid"] == pids[test]], describe(leaks))
        assert (finding["test"], finding["count"]) == (test, 1), describe(leaks)
    hidden = result.findings("hidden-reference")
    assert sorted(f["pid"] for f in hidden) == sorted(workers), describe(hidden)
