"""Runs that must not pass for checked when they were not, runs whose processes outlive the
command, and reports that stay valid JSON whatever the bytes (scripts/extsan run and gate,
shim/loader.c, scripts/python/extsan/collect.py, detector/report/json_write.c).

- A Python process that no core loads for says so on stderr and writes a report with
  "checked": false; `run` (with or without --json) and `gate` then fail with 125 and a line
  naming it, unless --allow-unchecked. Here the process preloads a copy of build/libextsan.so
  alone in a directory: the loader finds no core beside it, as for a Python no core was built
  for.
- Processes that outlive the command (the multiprocessing forkserver and resource tracker, a
  detached child): `run` waits, up to --wait seconds, for every process whose report is not
  complete and that still runs; one still running then is named in a warning and its
  directory is left in place.
- Non-UTF-8 bytes in argv and paths reach the report as the escapes Python's surrogateescape
  gives them, and every tool reading the report copes.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from xml.etree import ElementTree

import pytest

from conftest import (
    BUILD,
    DEBIAN_ID,
    EXTSAN,
    EXTSAN_VERSION,
    EXTSAN_FAILURE_STATUS,
    KIND,
    ROOT,
    base_env,
    check_process_checked,
    run_captured,
    run_extsan,
)

sys.path.insert(0, str(ROOT / "scripts" / "python"))
from extsan import collect  # noqa: E402
from extsan.common import Failure  # noqa: E402

UNCHECKED_MARK = "unchecked-child"


def lone_loader(tmp_path):
    """A copy of build/libextsan.so alone in a directory: it finds no core beside it."""
    directory = tmp_path / "lone"
    directory.mkdir()
    shutil.copy2(str(BUILD / "libextsan.so"), str(directory / "libextsan.so"))
    return directory / "libextsan.so"


def version_text(python):
    return "%d.%d.%d" % python.version


def no_core_why(python, loader):
    """The start of the why of a process the lone loader finds no core for."""
    return "no core for Python %d.%d (%s/libextsan-py%d.%d.so: " % (
        python.version[:2] + (loader.parent,) + python.version[:2])


def describe(out):
    return "status %d\n--- stdout ---\n%s\n--- stderr ---\n%s" % (out.returncode, out.stdout, out.stderr)


def printed_pid(out, label):
    """The pid a program printed as `LABEL N`."""
    found = re.findall(r"^%s (\d+)\b" % label, out.stdout, re.M)
    assert len(found) == 1, "the program did not print its %s pid:\n%s" % (label, describe(out))
    return int(found[0])


# ---- a process that runs unchecked ----------------------------------------------------------

FORKING = """\
import os
print("pid", os.getpid(), flush=True)
child = os.fork()
if child == 0:
    print("child", os.getpid(), flush=True)
    os._exit(0)
os.waitpid(child, 0)
"""


def test_loader_without_core_reports_the_process_unchecked(python, shim_libraries, tmp_path):
    """Preloaded alone, the loader says on stderr that the process runs unchecked (without
    verbosity), and writes its report, and one for a child it forks, each with "checked": false
    and why."""
    loader = lone_loader(tmp_path)
    logs = tmp_path / "logs"
    logs.mkdir()
    command = [str(python.path), "-c", FORKING, "\udcff-unchecked"]
    env = base_env(extra={"LD_PRELOAD": str(loader), "EXTSAN_OPTIONS": "log_dir=%s" % logs})
    out = run_captured(command, env, tmp_path)
    assert out.returncode == 0, describe(out)
    pid, child = printed_pid(out, "pid"), printed_pid(out, "child")

    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, describe(out)
    assert re.match(r"extsan: python\S* \(pid %d\) runs unchecked: %s.*HINT: extsan build --python"
                    % (pid, re.escape(no_core_why(python, loader))), lines[0]), describe(out)

    assert sorted(p.name for p in logs.iterdir()) == sorted("extsan.%d.json" % p for p in (pid, child)), \
        describe(out)
    for who, parent in ((pid, os.getpid()), (child, pid)):
        report = json.loads((logs / ("extsan.%d.json" % who)).read_text())
        why = report.pop("why", "")
        assert why.startswith(no_core_why(python, loader)), report
        assert report == {"extsan": 1, "extsan_version": EXTSAN_VERSION, "pid": who, "ppid": parent, "argv": command,
                          "python": version_text(python), "checked": False, "complete": True,
                          "findings": []}


# The command: a checked Python process that runs a child preloading the lone loader, then
# exits with the status it is given.
UNCHECKED_PARENT = """\
import os, subprocess, sys
print("pid", os.getpid(), flush=True)
env = dict(os.environ, LD_PRELOAD=sys.argv[1])
code = "import os; print('child', os.getpid())"
child = subprocess.run([sys.executable, "-c", code, %r], env=env, stdout=subprocess.PIPE,
                       universal_newlines=True, check=True)
print(child.stdout.strip(), flush=True)
sys.exit(int(sys.argv[2]))
""" % UNCHECKED_MARK


def run_command(tmp_path, subcommand, extsan_args, command):
    out = run_captured([str(EXTSAN), subcommand] + list(extsan_args) + ["--"] + command,
                       base_env(), tmp_path)
    return out


def test_unchecked_process_fails_run_and_gate(python, shim_libraries, tmp_path):
    """`run --json`, `run` and `gate` over a command one of whose Python processes ran unchecked
    exit with 125 and one line naming it (pid, argv, why); with --allow-unchecked they exit with
    the command's status, and a warning names it."""
    loader = lone_loader(tmp_path)

    def command(status):
        return [str(python.path), "-c", UNCHECKED_PARENT, str(loader), str(status)]

    report_path = tmp_path / "report.json"
    for subcommand, extsan_args in (("run", ["--json", str(report_path)]), ("run", []), ("gate", [])):
        out = run_command(tmp_path, subcommand, extsan_args, command(0))
        what = "extsan %s %s\n%s" % (subcommand, " ".join(extsan_args), describe(out))
        assert out.returncode == EXTSAN_FAILURE_STATUS, what
        child = printed_pid(out, "child")
        named = [line for line in out.stderr.splitlines() if line.startswith("extsan: pid %d " % child)]
        assert len(named) == 1, what
        assert named == out.stderr.splitlines()[-1:], "the failure is not the last line:\n" + what
        assert UNCHECKED_MARK in named[0] and str(python.path) in named[0], what
        assert "ran unchecked: " + no_core_why(python, loader) in named[0], what
        assert "--allow-unchecked" in named[0], what
    # The report holds both: the command's own process checked to the end, the child not.
    report = json.loads(report_path.read_text())
    check_process_checked(report, json.dumps(report, indent=1), argv=command(0))
    children = [p for p in report["processes"] if p.get("argv", [])[-1:] == [UNCHECKED_MARK]]
    assert len(children) == 1 and children[0]["checked"] is False, report

    for subcommand in ("run", "gate"):
        out = run_command(tmp_path, subcommand, ["--allow-unchecked"], command(5))
        what = "extsan %s --allow-unchecked\n%s" % (subcommand, describe(out))
        assert out.returncode == 5, what
        child = printed_pid(out, "child")
        warned = [line for line in out.stderr.splitlines()
                  if line.startswith("extsan: warning: pid %d " % child)]
        assert len(warned) == 1 and "ran unchecked: " in warned[0], what


# ---- processes that outlive the command -----------------------------------------------------

POOL_PROGRAM = """\
import json
import multiprocessing
import os
import sys

import capsule_defects as m


def work(i):
    m.new_without_gil()
    return os.getpid(), os.getppid()


if __name__ == "__main__":
    print("pid", os.getpid(), flush=True)
    method = sys.argv[1]
    pool = multiprocessing.get_context(method).Pool(2)
    seen = pool.map(work, range(8), chunksize=1)
    pool.close()
    pool.join()
    from multiprocessing import resource_tracker
    helpers = {"resource tracker": resource_tracker._resource_tracker._pid}
    if method == "forkserver":
        from multiprocessing import forkserver
        helpers["forkserver"] = forkserver._forkserver._forkserver_pid
    print(json.dumps({"workers": sorted({pid for pid, _ in seen}),
                      "parents": sorted({ppid for _, ppid in seen}), "helpers": helpers}), flush=True)
"""


@pytest.mark.parametrize("method", ["forkserver", "spawn"])
def test_pool_helpers_outliving_the_command_are_merged(python, fixtures, tmp_path, method):
    """A multiprocessing pool whose workers make a GIL-less capsule call: the forkserver and the
    resource tracker exit after the command; `run` waits for them, so none fails to write its
    report, and the merge has every process, complete, and every worker's finding."""
    script = tmp_path / "pool.py"
    script.write_text(POOL_PROGRAM)
    result = run_extsan(python, fixtures, tmp_path, script=script, args=[method])
    assert result.returncode == 0, result.describe()
    assert "cannot write" not in result.stderr, result.describe()
    result.check_process_checked()
    seen = json.loads(result.stdout.splitlines()[-1])
    helpers = seen["helpers"]
    assert all(isinstance(pid, int) for pid in helpers.values()), result.describe()
    if method == "forkserver":
        assert seen["parents"] == [helpers["forkserver"]], result.describe()
    processes = {p["pid"]: p for p in result.report["processes"]}
    for name, pid in sorted(helpers.items()) + [("worker", pid) for pid in seen["workers"]]:
        assert pid in processes, "no report from the %s, pid %d:\n%s" % (name, pid, result.describe())
        assert processes[pid].get("complete") is True, "the %s's report is not complete:\n%s" % (
            name, result.describe())
    # Each worker's own finding (several, when the interpreter's specialised calls change the
    # native stack from one call to the next).
    news = [f for f in result.findings(KIND) if f["api"] == "PyCapsule_New"]
    assert sorted({f["pid"] for f in news}) == seen["workers"], result.describe()


DETACHED_CHILD = """\
import os
import sys
import time

import capsule_defects as m

ready, seconds = sys.argv[1], float(sys.argv[2])
# protect=0: the finding's report is written before the call, complete: false.
m.get_name_without_gil(m.new_with_gil())
with open(ready + ".tmp", "w") as f:
    f.write(str(os.getpid()))
os.rename(ready + ".tmp", ready)
time.sleep(seconds)
"""

DETACHED_PARENT = """\
import os
import subprocess
import sys
import time

child, ready, seconds = sys.argv[1:4]
print("pid", os.getpid(), flush=True)
env = dict(os.environ)
env["EXTSAN_OPTIONS"] = env["EXTSAN_OPTIONS"] + ":protect=0"
subprocess.Popen([sys.executable, child, ready, seconds], env=env, start_new_session=True,
                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
while not os.path.exists(ready):
    time.sleep(0.02)
with open(ready) as f:
    print("child", f.read(), flush=True)
"""


def wait_gone(pid, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def run_detached(python, fixtures, tmp_path, name, sleep, extsan_args=()):
    """The command starts a detached child that sleeps `sleep` s after a finding, and exits."""
    work = tmp_path / name
    work.mkdir()
    (work / "child.py").write_text(DETACHED_CHILD)
    (work / "parent.py").write_text(DETACHED_PARENT)
    started = time.monotonic()
    result = run_extsan(python, fixtures, work, script=work / "parent.py",
                        args=[work / "child.py", work / "ready", sleep], extsan_args=extsan_args,
                        env={"TMPDIR": str(work)})
    return result, time.monotonic() - started


@pytest.mark.pythons("3.12", DEBIAN_ID)
def test_detached_child_is_waited_for(python, fixtures, tmp_path):
    """A detached child that outlives the command by 2 s: `run` waits for it (default --wait),
    and the merge has its complete report and finding, without a warning."""
    result, took = run_detached(python, fixtures, tmp_path, "short", 2)
    assert result.returncode == 0, result.describe()
    child = printed_pid(result, "child")
    assert "warning" not in result.stderr, result.describe()
    processes = {p["pid"]: p for p in result.report["processes"]}
    assert processes.get(child, {}).get("complete") is True, result.describe()
    assert [f["api"] for f in result.findings(KIND) if f["pid"] == child] == ["PyCapsule_GetName"], \
        result.describe()
    assert took >= 2, "run did not wait for the child (%.1f s):\n%s" % (took, result.describe())
    result.check_process_checked()


@pytest.mark.pythons("3.12", DEBIAN_ID)
def test_child_outliving_the_wait_is_named(python, fixtures, tmp_path):
    """A detached child that outlives the command by 8 s, with --wait 1: one warning names it,
    its report is merged as it was (complete: false, its finding in), and the private log
    directory is left in place, where the child completes its report later."""
    result, took = run_detached(python, fixtures, tmp_path, "long", 8, extsan_args=["--wait", "1"])
    child = printed_pid(result, "child")
    try:
        assert result.returncode == 0, result.describe()
        assert took < 7, "run waited for the child past --wait (%.1f s):\n%s" % (took, result.describe())
        warnings = [line for line in result.stderr.splitlines() if line.startswith("extsan: warning: ")]
        assert len(warnings) == 1, result.describe()
        assert "still running" in warnings[0] and "pid %d (" % child in warnings[0], result.describe()
        kept = re.search(r"the log directory (\S+) is left in place", warnings[0])
        assert kept and os.path.isdir(kept.group(1)), result.describe()
        assert kept.group(1).startswith(str(tmp_path)), result.describe()
        processes = {p["pid"]: p for p in result.report["processes"]}
        assert processes.get(child, {}).get("complete") is False, result.describe()
        assert [f["api"] for f in result.findings(KIND) if f["pid"] == child] == ["PyCapsule_GetName"], \
            result.describe()
    finally:
        gone = wait_gone(child, 30)
    assert gone, "the child %d did not end" % child
    with open(os.path.join(kept.group(1), "extsan.%d.json" % child)) as f:
        assert json.load(f)["complete"] is True, "the child did not complete its report in %s" % kept.group(1)


OTHER_USER_PARENT = """\
import os, subprocess, sys
print("pid", os.getpid(), flush=True)
code = "import os; print('child', os.getpid(), os.getuid())"
child = subprocess.run([sys.executable, "-c", code], user=65534, group=65534, extra_groups=[],
                       cwd="/", stdout=subprocess.PIPE, universal_newlines=True, check=True)
print(child.stdout.strip(), flush=True)
"""


# The pyenv interpreters live under /root, which another user cannot enter; Debian's can run.
@pytest.mark.pythons(DEBIAN_ID)
def test_child_running_as_another_user_writes_into_the_private_directory(python, shim_libraries,
                                                                         tmp_path):
    """A child that runs as nobody (subprocess's user=/group=) creates its report in the run's
    private log directory (mode 1733), and the merge has it, complete."""
    if os.geteuid() != 0:
        pytest.skip("changing to another user takes root")
    result = run_extsan(python, None, tmp_path, code=OTHER_USER_PARENT)
    assert result.returncode == 0, result.describe()
    child = printed_pid(result, "child")
    assert re.search(r"^child %d 65534$" % child, result.stdout, re.M), result.describe()
    assert "cannot write" not in result.stderr, result.describe()
    result.check_process_checked()
    processes = {p["pid"]: p for p in result.report["processes"]}
    assert processes.get(child, {}).get("complete") is True, result.describe()
    assert processes[child].get("checked", True) is True, result.describe()


# ---- collecting the reports: the rules, on reports written by hand --------------------------


def write_report(directory, pid, **fields):
    report = {"extsan": 1, "pid": pid, "ppid": 1, "argv": ["prog", str(pid)], "python": "3.12.1",
              "complete": False, "findings": []}
    report.update(fields)
    path = directory / ("extsan.%d.json" % pid)
    path.write_text(json.dumps(report))
    return path, report


def dead_pid():
    """The pid of a process that has ended and been reaped."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_collect_reports_tells_running_from_ended(tmp_path):
    """Pending reports (complete: false, no signal) of live processes are waited for up to the
    bound, then named as still running; one of a process that is gone (reaped, a zombie, or a
    pid given since to a newer process) is unfinished; a report that names the signal that ended
    its process, or is complete, is neither."""
    sleeper = subprocess.Popen(["sleep", "60"])
    newcomer = subprocess.Popen(["sleep", "60"])
    zombie = subprocess.Popen(["true"])
    try:
        deadline = time.monotonic() + 10
        while open("/proc/%d/stat" % zombie.pid).read().rsplit(")", 1)[1].split()[0] != "Z":
            assert time.monotonic() < deadline, "the zombie did not appear"
            time.sleep(0.02)
        write_report(tmp_path, sleeper.pid)
        write_report(tmp_path, dead_pid(), signal="SIGTERM")
        killed = dead_pid()
        write_report(tmp_path, killed)
        write_report(tmp_path, zombie.pid)
        write_report(tmp_path, os.getpid(), complete=True)
        # Written an hour ago: the live process now holding that pid started after it.
        reused, _ = write_report(tmp_path, newcomer.pid)
        hour_ago = time.time() - 3600
        os.utime(str(reused), (hour_ago, hour_ago))

        started = time.monotonic()
        collected = collect.collect_reports(str(tmp_path), {}, 0.5)
        took = time.monotonic() - started
        assert 0.5 <= took < 5, took
        assert [pid for pid, _ in collected.still_running] == [sleeper.pid], collected
        assert sorted(pid for pid, _ in collected.unfinished) == sorted([killed, zombie.pid, newcomer.pid]), \
            collected
        assert len(collected.paths) == 6, collected
        assert all(report["pid"] == pid for pid, report in collected.still_running + collected.unfinished)
    finally:
        for process in (sleeper, newcomer):
            process.kill()
            process.wait()
        zombie.wait()


def test_collect_reports_returns_when_the_last_report_completes(tmp_path):
    """The wait ends as soon as no pending report has a live process: a process that completes
    its report 0.5 s in ends a wait of 30 s then. Reports present before the run with the same
    file identity are not the run's."""
    old, _ = write_report(tmp_path, dead_pid(), complete=True)
    before = collect.report_files(str(tmp_path))
    completer = subprocess.Popen([sys.executable, "-c", """\
import json, os, sys, time
path = sys.argv[1] % os.getpid()
report = {"extsan": 1, "pid": os.getpid(), "argv": ["completer"], "complete": False, "findings": []}
json.dump(report, open(path, "w"))
print("written", flush=True)
time.sleep(0.5)
report["complete"] = True
json.dump(report, open(path + ".tmp", "w"))
os.rename(path + ".tmp", path)
time.sleep(30)
""", str(tmp_path / "extsan.%d.json")], stdout=subprocess.PIPE, universal_newlines=True)
    try:
        assert completer.stdout.readline() == "written\n"
        started = time.monotonic()
        collected = collect.collect_reports(str(tmp_path), before, 30)
        took = time.monotonic() - started
        assert 0.2 < took < 10, took
        assert collected == collect.Collected([str(tmp_path / ("extsan.%d.json" % completer.pid))], [], [])
        assert str(old) not in collected.paths
    finally:
        completer.kill()
        completer.wait()


def test_warnings_and_unchecked_failure(tmp_path, capsys):
    """The warning lines name each process by pid and command line; an unchecked process makes
    the run's Failure (one line naming it), a warning with --allow-unchecked; a process without
    "checked" was checked."""
    collected = collect.Collected([], [(41, {"argv": ["python3", "-m", "pytest"]})],
                                  [(42, {"argv": ["python3", "\udcff"]})])
    collect.warn_incomplete(collected, 2.5, "/tmp/extsan-x", True)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2, err
    assert err[0].startswith("extsan: warning: 1 process still running after the command ended and "
                             "2.5 s of --wait: pid 41 (python3 -m pytest);"), err
    assert err[0].endswith("the log directory /tmp/extsan-x is left in place for them"), err
    assert err[1].startswith("extsan: warning: pid 42 (python3 '\\udcff') ended without completing"), err

    document = {"processes": [{"pid": 7, "argv": ["python3.14", "t.py"], "checked": False,
                               "why": "no core for Python 3.14 (x)"}, {"pid": 8}], "findings": []}
    failure = collect.unchecked_failure(document, allow=False)
    assert isinstance(failure, Failure)
    assert str(failure).startswith("pid 7 (python3.14 t.py) ran unchecked: no core for Python 3.14 (x);")
    assert capsys.readouterr().err == ""
    assert collect.unchecked_failure(document, allow=True) is None
    assert capsys.readouterr().err.startswith("extsan: warning: pid 7 (python3.14 t.py) ran unchecked")
    del document["processes"][0]["checked"]
    assert collect.unchecked_failure(document, allow=False) is None


# ---- bytes that are not UTF-8 ---------------------------------------------------------------

NON_UTF8_PROGRAM = """\
import ctypes, os, sys
import capsule_defects as m
print("pid", os.getpid(), flush=True)
ctypes.CDLL(None).prctl(15, b"thread-caf\\xe9", 0, 0, 0)  # PR_SET_NAME: the finding's thread
m.new_without_gil()
"""
NON_UTF8_ARGUMENT = "\udcff\udcfe"  # the bytes ff fe, as Python decodes them
NON_UTF8_THREAD = "thread-caf\udce9"  # "thread-caf" and Latin-1's e acute, byte e9


def test_non_utf8_argv_and_names_keep_the_report_valid(python, fixtures, tmp_path):
    """An argument ff fe, and a thread named with byte e9 (the finding's thread): the report is
    valid JSON holding both as Python's surrogateescape decodes them (os.fsencode gives the bytes
    back), and report (text and HTML), gate, SARIF and JUnit read and write it. (CPython itself
    cannot import an extension from a directory whose name is not UTF-8: a path goes the same
    way as these, through the same writer.)"""
    result = run_extsan(python, fixtures, tmp_path, code=NON_UTF8_PROGRAM, args=[NON_UTF8_ARGUMENT])
    assert result.returncode == 0, result.describe()
    result.check_process_checked()
    mine = [p for p in result.report["processes"] if p["argv"][-1:] == [NON_UTF8_ARGUMENT]]
    assert len(mine) == 1 and os.fsencode(mine[0]["argv"][-1]) == b"\xff\xfe", result.describe()
    finding = [f for f in result.findings(KIND) if f["api"] == "PyCapsule_New"]
    assert len(finding) == 1, result.describe()
    assert os.fsencode(finding[0]["thread"]["name"]) == b"thread-caf\xe9", finding

    report = tmp_path / "report-0.json"
    for args in (["report", report], ["report", report, "--html", tmp_path / "r.html"]):
        out = subprocess.run([str(EXTSAN)] + [str(a) for a in args], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=base_env(extra={"LC_ALL": "C.UTF-8"}),
                             timeout=120)
        assert out.returncode == 0, out.stderr.decode(errors="replace")
        if "--html" not in args:
            assert b'thread-caf\\udce9' in out.stdout, out.stdout[-2000:]
    assert "thread-caf\\udce9" in (tmp_path / "r.html").read_text()

    outputs = {flag: tmp_path / ("gate" + suffix) for flag, suffix in
               (("--json", ".json"), ("--sarif", ".sarif"), ("--junit", ".xml"))}
    command = [str(EXTSAN), "gate"] + [str(a) for kv in outputs.items() for a in kv] + \
        ["--", str(python.path), "-c", NON_UTF8_PROGRAM, NON_UTF8_ARGUMENT]
    out = run_captured(command, base_env(fixtures), tmp_path)
    assert out.returncode == 3, describe(out)  # the finding is new
    gated = json.loads(outputs["--json"].read_text())
    assert any(p["argv"][-1:] == [NON_UTF8_ARGUMENT] for p in gated["processes"]), gated
    json.loads(outputs["--sarif"].read_text())
    junit = outputs["--junit"].read_text()
    ElementTree.fromstring(junit)  # well-formed XML
    assert "thread-caf" in junit, junit


def test_core_of_another_version_reports_the_process_unchecked(python, shim_libraries, tmp_path):
    """A core loaded into a Python it was not built for stays dormant, and says so: the run
    fails with 125 naming the process, as when no core loads at all."""
    minor = "3.%d" % python.minor
    wrong = [lib for lib in shim_libraries if lib.name.startswith("libextsan-py3.")
             and lib.name != "libextsan-py%s.so" % minor]
    assert wrong, "no core for another Python version in %s" % shim_libraries
    command = [str(python.path), "-c", UNCHECKED_PARENT, str(wrong[0]), "0"]
    out = run_command(tmp_path, "run", [], command)
    assert out.returncode == EXTSAN_FAILURE_STATUS, describe(out)
    child = printed_pid(out, "child")
    (named,) = [line for line in out.stderr.splitlines() if line.startswith("extsan: pid %d " % child)]
    assert "ran unchecked: this core was built for another Python version" in named, describe(out)
