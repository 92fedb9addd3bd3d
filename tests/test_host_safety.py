"""extsan never harms the process it runs in and never loses a finding it made.

Each test plants what real code does (tests/fixtures/host_stress.c: instances that die out of
extsan's sight, deaths by signal, capsule threads racing a fork, ...) and checks that the program
ends exactly as it would without extsan and that every finding reaches the merged report.
"""

import re
import signal

import pytest

from conftest import KIND, program_pid

PRELUDE = "import os, sys, host_stress\n"


# ---- registry records that outlive their objects ----------------------------------------------

UNSEEN = PRELUDE + """
print("pid", os.getpid())
for cls in (host_stress.UnseenChild, host_stress.UnseenGcChild):
    objs = [cls() for i in range(500)]
    del objs
# The freed blocks are reused by objects of the same size class, and by raw data.
junk = [bytes(80) for i in range(5000)] + [b"\\xff" * 90 for i in range(5000)]
junk += [bytearray(150) for i in range(4000)]
print("done")
"""


def test_instances_freed_unseen_do_not_crash_the_analysis(run):
    """Instances freed without passing through a wrapped slot leave stale registry records; the
    exit analysis proves each record alive before reading its object, and drops the stale."""
    result = run(UNSEEN, extsan_args=["--verbosity", "1"])
    assert result.returncode == 0, result.describe()
    assert result.stdout.endswith("done\n"), result.describe()
    dropped = re.findall(r"dropped (\d+) stale registry records", result.stderr)
    assert dropped and int(dropped[0]) > 0, result.describe()
    result.check_silent(program_pid(result))


CTYPES = """
import ctypes, os
print("pid", os.getpid())
for i in range(50):
    ctypes.CDLL("libz.so.1").zlibVersion
callbacks = [ctypes.CFUNCTYPE(ctypes.c_int)(lambda: 0) for i in range(2000)]
del callbacks
junk = [bytearray(150) for i in range(4000)]
print("done")
"""


def test_ctypes_program_ends_as_without_extsan(run):
    """The ctypes program of issue 8 (exit 139 under extsan before): status 0, complete report."""
    result = run(CTYPES)
    assert result.returncode == 0, result.describe()
    assert result.stdout.endswith("done\n"), result.describe()
    result.check_silent(program_pid(result))


# ---- fork and vfork ----------------------------------------------------------------------------

FORK_WHILE_BORROWING = PRELUDE + """
import time
print("pid", os.getpid())
host_stress.start_capsule_threads(8)
hung = 0
for i in range(200):
    child = os.fork()
    if child == 0:
        os._exit(0)
    deadline = time.monotonic() + 10
    while not os.waitpid(child, os.WNOHANG)[0]:
        if time.monotonic() > deadline:
            hung += 1
            os.kill(child, 9)
            os.waitpid(child, 0)
            break
        time.sleep(0.001)
host_stress.stop_capsule_threads()
print("hung", hung)
"""


def test_fork_while_threads_borrow_the_gil_never_hangs(run):
    """Raw threads make capsules without the GIL (extsan borrows it for them, making thread
    states) while the main thread forks: no child may hang in PyOS_AfterFork_Child (3.9-3.11
    delete the other threads' states under a lock they re-initialise only later)."""
    result = run(FORK_WHILE_BORROWING, timeout=600)
    assert result.returncode == 0, result.describe()
    assert "hung 0\n" in result.stdout, result.describe()
    findings = result.findings(KIND)
    assert findings and {f["api"] for f in findings} <= {"PyCapsule_New", "capsule destruction"}, \
        result.describe()


VFORK_EXEC_FAILS = """
import os, subprocess, capsule_defects
print("pid", os.getpid())
capsule_defects.new_without_gil()
for i in range(20):
    try:
        subprocess.run(["/nonexistent/extsan-test-binary"])
    except FileNotFoundError:
        pass
print("done")
"""


def test_vfork_child_that_fails_to_exec_writes_no_report(run):
    """subprocess's vfork child calls _exit when exec fails; it shares the parent's memory and
    is no Python process of its own: it must not write a report (with the parent's findings)."""
    result = run(VFORK_EXEC_FAILS)
    assert result.returncode == 0, result.describe()
    pid = program_pid(result)
    result.check_process_checked(pid)
    assert [p["pid"] for p in result.report["processes"]] == [pid], result.describe()
    assert {f["pid"] for f in result.report["findings"]} == {pid}, result.describe()
    assert len(result.findings(KIND)) == 1, result.describe()
