#!/usr/bin/env python3
"""The multiprocessing workload of scripts/check-real-world (suite `multiprocessing`).

    PYTHONPATH=<dir holding capsule_defects> python real_world_mp_workload.py PIDFILE

Runs Pools of 2 workers with each start method (fork, forkserver, spawn), each Pool ended both
ways: close() + join(), and terminate() (what `with Pool() as p:` does on exit; the workers die
of SIGTERM); and, 10 times per start method, a Pool terminated at once, before any task, whose
workers get SIGTERM while they still start up. Every worker task calls a planted defect of the test fixture capsule_defects
(tests/fixtures/capsule_defects.c): get_pointer_without_gil(), PyCapsule_GetPointer inside
Py_BEGIN_ALLOW_THREADS, so that each worker process that ran a task must have a
`capsule-without-gil` finding (api PyCapsule_GetPointer) of its own in extsan's merged report.
That defect, unlike new_without_gil() (PyCapsule_New, which allocates), does not crash without
extsan on 3.12+, so the workload runs the same bare and under extsan. The main process makes
the same call once, and so does the forkserver process (through a module it preloads), which
outlives the main process.

Every process that made the call appends one line `PID ROLE METHOD ENDING called` to PIDFILE
after the call; the main process also records the resource tracker (`PID resource_tracker - -
nocall`), which makes no call but should have a report. check-real-world reads PIDFILE to know
which pids must appear in the report, and with which finding.

Prints one line per Pool and closes with `N passed, M failed` (a Pool passes when every task
returned its worker's pid). Exit status 0 when all passed, 1 otherwise. Standard library only.
"""

import multiprocessing
import os
import sys
import time

METHODS = ("fork", "forkserver", "spawn")
ENDINGS = ("close-join", "terminate", "terminate-at-start")
QUICK_POOLS = 10  # pools of the terminate-at-start ending, per start method
WORKERS = 2
TASKS = 8
PRELOAD_MODULE = "rw_forkserver_preload"

# The forkserver imports this module (set_forkserver_preload) and so makes the call itself.
PRELOAD_SOURCE = '''\
from real_world_mp_workload import call_defect, record_call
call_defect()
record_call("forkserver", "forkserver", "-")
'''


def pid_file():
    return os.environ["EXTSAN_RW_PIDFILE"]


def record(line):
    # One write with O_APPEND: lines from concurrent processes do not interleave.
    fd = os.open(pid_file(), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def record_call(role, method, ending):
    record("%d %s %s %s called" % (os.getpid(), role, method, ending))


def call_defect():
    """The planted defect: PyCapsule_GetPointer without the GIL (reads only: safe bare too)."""
    import capsule_defects

    value = capsule_defects.get_pointer_without_gil(capsule_defects.new_with_gil())
    if value != 42:
        raise AssertionError("capsule_defects.get_pointer_without_gil returned %r, not 42" % (value,))


_recorded = False


def task(args):
    """One worker task: the planted defect, then a pause so that both workers get tasks."""
    global _recorded
    method, ending, _ = args
    call_defect()
    if not _recorded:  # one line per worker process
        record_call("worker", method, ending)
        _recorded = True
    time.sleep(0.05)
    return os.getpid()


def run_pool(ctx, method, ending):
    items = [(method, ending, i) for i in range(TASKS)]
    if ending == "terminate-at-start":
        # No task: terminate() at once, so the workers get SIGTERM while they still start up.
        for _ in range(QUICK_POOLS):
            with ctx.Pool(WORKERS):
                pass
        return None
    if ending == "close-join":
        pool = ctx.Pool(WORKERS)
        pids = pool.map(task, items, chunksize=1)
        pool.close()
        pool.join()
    else:
        with ctx.Pool(WORKERS) as pool:  # __exit__ calls terminate()
            pids = pool.map(task, items, chunksize=1)
    return pids


def main():
    if len(sys.argv) != 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    os.environ["EXTSAN_RW_PIDFILE"] = os.path.abspath(sys.argv[1])
    # The preload module is written beside the pid file. The forkserver finds it, and this
    # script, through PYTHONPATH (forkserver.main ignores the sys_path it is given, 3.9-3.13).
    work = os.path.dirname(os.environ["EXTSAN_RW_PIDFILE"])
    with open(os.path.join(work, PRELOAD_MODULE + ".py"), "w") as f:
        f.write(PRELOAD_SOURCE)
    here = os.path.dirname(os.path.abspath(__file__))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [work, here] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    sys.path[:0] = [work, here]

    call_defect()
    record_call("main", "-", "-")

    passed = failed = 0
    for method in METHODS:
        ctx = multiprocessing.get_context(method)
        if method == "forkserver":
            ctx.set_forkserver_preload([PRELOAD_MODULE])
        for ending in ENDINGS:
            started = time.monotonic()
            try:
                pids = run_pool(ctx, method, ending)
                if pids is None:
                    ok, detail = True, "%d pools of %d workers, no task" % (QUICK_POOLS, WORKERS)
                else:
                    ok = len(pids) == TASKS and all(isinstance(p, int) and p != os.getpid() for p in pids)
                    detail = "workers %s" % " ".join(str(p) for p in sorted(set(pids)))
            except Exception as e:  # a Pool that breaks is this workload's failure
                ok, detail = False, "%s: %s" % (type(e).__name__, e)
            passed += ok
            failed += not ok
            print("pool %-10s %-10s %s in %.2f s: %s" % (method, ending, "PASSED" if ok else "FAILED",
                                                       time.monotonic() - started, detail), flush=True)

    from multiprocessing import resource_tracker

    tracker_pid = getattr(resource_tracker._resource_tracker, "_pid", None)
    if tracker_pid:
        record("%d resource_tracker - - nocall" % tracker_pid)
    print("%d passed, %d failed" % (passed, failed), flush=True)
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
