"""Collecting a run's reports from its log directory once CMD has exited.

Processes of the run may outlive CMD (the multiprocessing forkserver and resource tracker exit
shortly after their parent; a test may leave a detached child behind). Each checked process
writes its report when it starts ("complete": false), rewrites it at each finding and at its end
("complete": true; "signal" when a signal ended it). So a report that is not complete, of a
process still alive, is one still being written: wait for it, up to a bound. Then say what
could not be waited for, and which processes ran unchecked (their report has "checked": false).
"""

import json
import os
import shlex
import sys
import time
from collections import namedtuple

from .common import Failure, plural
from .merge import REPORT_NAME, report_files

POLL_FIRST = 0.02  # seconds between two looks at the log directory, doubling up to POLL_MOST
POLL_MOST = 0.5
# A process whose start lies this long after its report's last write is not the one that wrote
# it: the kernel gave its pid to a newer process (btime is whole seconds, starttime in ticks).
PID_REUSE_SLACK = 2.0
ARGV_SHOWN = 120  # characters of a process's command line in a message


# A namedtuple, not a typing.NamedTuple: every `extsan run` collects, and typing alone is a good
# part of a run's imports (scripts/bench-startup).
#   paths: the reports written during the run, in name order
#   still_running: [(pid, report or None)]: their process is alive at the bound
#   unfinished: [(pid, report)]: not complete, no "signal", and their process is gone
Collected = namedtuple("Collected", "paths still_running unfinished")


def describe_process(pid, report):
    """'pid 4242 (python3 -m pytest tests)', the command line cut to ARGV_SHOWN characters."""
    argv = report.get("argv") if isinstance(report, dict) else None
    if not isinstance(argv, list) or not argv:
        return "pid %s" % pid
    # An argument of bytes that were not UTF-8 holds their escapes (\udcff): printed as such.
    command = " ".join(shlex.quote(str(arg).encode("utf-8", "backslashreplace").decode("utf-8"))
                       for arg in argv)
    if len(command) > ARGV_SHOWN:
        command = command[: ARGV_SHOWN - 3] + "..."
    return "pid %s (%s)" % (pid, command)


def read_report(path):
    """The report at path as a dict, or None when it cannot be read now (the merge says why)."""
    try:
        with open(path, encoding="utf-8") as f:
            report = json.load(f)
    except (OSError, ValueError):
        return None
    return report if isinstance(report, dict) else None


def is_pending(report):
    """A report its process has yet to complete: written at start or at a finding."""
    return isinstance(report, dict) and report.get("complete") is False and not report.get("signal")


def boot_time():
    try:
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith("btime "):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def process_alive(pid, written_ns, booted=None):
    """Whether the process that wrote a report at written_ns (its mtime) still runs.

    kill(pid, 0) answers for a process of another user too (EPERM: it exists). A zombie has
    ended; a process that started after the report was written took a recycled pid.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
        state, start_ticks = fields[0], int(fields[19])
    except (OSError, ValueError, IndexError):
        return True
    if state in ("Z", "X"):
        return False
    booted = boot_time() if booted is None else booted
    if booted is None:
        return True
    started = booted + start_ticks / os.sysconf("SC_CLK_TCK")
    return started <= written_ns / 1e9 + PID_REUSE_SLACK


def collect_reports(log_dir, before, wait_seconds, clock=time.monotonic, sleep=time.sleep):
    """The reports written into log_dir since `before` ({path: identity} of report_files),
    once no process is still writing one, or wait_seconds have passed."""
    deadline = clock() + wait_seconds
    booted = boot_time()
    known = {}  # path: (identity, report), each file read again only when it changed
    delay = POLL_FIRST
    while True:
        fresh = {path: identity for path, identity in report_files(log_dir).items()
                 if before.get(path) != identity}
        for path, identity in fresh.items():
            if known.get(path, (None,))[0] != identity:
                known[path] = (identity, read_report(path))
        pending = []
        for path in sorted(fresh):
            identity, report = known[path]
            if is_pending(report):
                pid = int(REPORT_NAME.match(os.path.basename(path)).group(1))
                pending.append((pid, report, process_alive(pid, identity[1], booted)))
        running = [(pid, report) for pid, report, alive in pending if alive]
        now = clock()
        if not running or now >= deadline:
            unfinished = [(pid, report) for pid, report, alive in pending if not alive]
            return Collected(sorted(fresh), running, unfinished)
        sleep(min(delay, deadline - now))
        delay = min(delay * 2, POLL_MOST)


def warn_incomplete(collected, wait_seconds, log_dir, private):
    """One warning line for the processes still running at the bound, one for each process
    that ended without completing its report."""
    if collected.still_running:
        names = ", ".join(describe_process(pid, report) for pid, report in collected.still_running)
        where = ("the log directory %s is left in place for them" % log_dir if private
                 else "they may still write into %s" % log_dir)
        print("extsan: warning: %s still running after the command ended and %g s of --wait: "
              "%s; their reports are merged as they were (\"complete\": false); %s"
              % (plural(len(collected.still_running), "process", "processes"), wait_seconds,
                 names, where), file=sys.stderr)
    for pid, report in collected.unfinished:
        print("extsan: warning: %s ended without completing its report (killed by SIGKILL, or it "
              "crashed before extsan could write the end of it); what it had reported is merged"
              % describe_process(pid, report), file=sys.stderr)


def unchecked_failure(document, allow):
    """The Failure of a run in which a process ran unchecked ("checked": false; a report
    without "checked" is of a checked process), or None. With allow, a warning line each."""
    lines = ["%s ran unchecked: %s" % (describe_process(p.get("pid"), p), p.get("why") or "no reason given")
             for p in document["processes"] if p.get("checked", True) is False]
    if not lines:
        return None
    if allow:
        for line in lines:
            print("extsan: warning: %s (accepted by --allow-unchecked)" % line, file=sys.stderr)
        return None
    accept = "; extsan checked nothing there (--allow-unchecked accepts it)"
    if len(lines) == 1:
        return Failure(lines[0] + accept)
    for line in lines:
        print("extsan: %s" % line, file=sys.stderr)
    return Failure("%d processes ran unchecked%s" % (len(lines), accept))
