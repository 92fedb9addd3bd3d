"""Merging the per-process reports (log_dir/extsan.<pid>.json) of a run into one document."""

import json
import os
import re
import stat
import sys

from . import __version__
from .atomic import write_json_atomically
from .common import Failure, rel

REPORT_VERSION = 1
REPORT_NAME = re.compile(r"^extsan\.(\d+)\.json$")  # <log_dir>/extsan.<pid>.json


def report_files(directory):
    """{path: (inode, mtime)} of the extsan.<pid>.json files in directory: regular files only,
    as extsan writes them (a link planted in a shared directory is not followed)."""
    found = {}
    try:
        names = os.listdir(directory)
    except OSError:
        return found
    for name in names:
        if REPORT_NAME.match(name):
            path = os.path.join(directory, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            found[path] = (st.st_ino, st.st_mtime_ns)
    return found


def is_pid(value):
    return isinstance(value, int) and not isinstance(value, bool)


def load_report(path):
    """The processes of one report file as [(process, findings)], each finding carrying "pid".

    A per-process report (extsan.<pid>.json) gives one process; a report merged before (by
    run --json or merge) gives all of its own, so merged files can be merged again.
    """
    try:
        with open(path, encoding="utf-8") as f:
            report = json.load(f)
    except OSError as e:
        raise Failure("%s: cannot read it: %s" % (path, e.strerror or e))
    except ValueError as e:
        raise Failure("%s: not valid JSON: %s" % (path, e))
    if not isinstance(report, dict):
        raise Failure("%s: not an extsan report (a JSON object was expected)" % path)
    if report.get("extsan") != REPORT_VERSION:
        raise Failure("%s: not an extsan report of version %d (\"extsan\": %s)"
                      % (path, REPORT_VERSION, json.dumps(report.get("extsan"))))
    findings = report.get("findings", [])
    if not isinstance(findings, list) or not all(isinstance(f, dict) for f in findings):
        raise Failure("%s: \"findings\" is not a list of objects" % path)
    if "processes" in report and "pid" not in report:  # a merged report
        processes = report["processes"]
        if not isinstance(processes, list) or not all(isinstance(p, dict) and is_pid(p.get("pid"))
                                                      for p in processes):
            raise Failure("%s: \"processes\" is not a list of objects with an integer \"pid\"" % path)
        if not all(is_pid(f.get("pid")) for f in findings):
            raise Failure("%s: a finding of this merged report has no integer \"pid\"" % path)
        by_pid = {}
        for finding in findings:
            by_pid.setdefault(finding["pid"], []).append(finding)
        return [(process, by_pid.pop(process["pid"], [])) for process in processes] + \
               [({"pid": pid}, orphans) for pid, orphans in by_pid.items()]
    if not is_pid(report.get("pid")):
        raise Failure("%s: has no integer \"pid\"" % path)
    pid = report["pid"]
    process = {key: report.get(key) for key in ("pid", "ppid", "argv", "python")}
    # "extsan_version": the merged document names the version once, the merging extsan's.
    process.update((k, v) for k, v in report.items()
                   if k not in process and k not in ("extsan", "extsan_version", "findings"))
    tagged = []
    for finding in findings:
        merged = {"pid": pid}
        merged.update((k, v) for k, v in finding.items() if k != "pid")
        tagged.append(merged)
    return [(process, tagged)]


def merge_documents(paths):
    """The merged document of the reports at paths, and the problems of those that could not be
    read (the document holds every report that could). Processes are listed by pid; each
    finding carries the pid of the process that reported it."""
    entries, problems = [], []
    for path in paths:
        try:
            entries += load_report(path)
        except Failure as e:
            problems.append(str(e))
    entries.sort(key=lambda entry: entry[0]["pid"])  # stable: equal pids keep their file order
    document = {
        "extsan": REPORT_VERSION,
        "extsan_version": __version__,
        "processes": [process for process, _ in entries],
        "findings": [finding for _, findings in entries for finding in findings],
    }
    return document, problems


def merge_reports(paths, out_path):
    """Merges the reports at paths into out_path (atomically); returns the problems.

    The merged file holds every report that could be read, even when some could not: the
    caller reports those and exits 125.
    """
    document, problems = merge_documents(paths)
    write_json_atomically(out_path, document)
    return problems


def read_merged(path):
    """One report file (merged or per-process) as a merged document; any problem is a Failure."""
    document, problems = merge_documents([path])
    if problems:
        raise Failure(problems[0])
    return document


def merge_failure(problems, total, out_path, note):
    """The Failure for reports that could not be merged: one line for one problem, else one
    line per problem and a summary. out_path is None when the merge was kept in memory (gate)."""
    merged = total - len(problems)
    into = " into " + rel(out_path) if out_path else ""
    if len(problems) == 1:
        return Failure("%s (%d other report%s merged%s)%s"
                       % (problems[0], merged, "" if merged == 1 else "s", into, note))
    for problem in problems:
        print("extsan: %s" % problem, file=sys.stderr)
    return Failure("%d of %d reports could not be merged%s%s" % (len(problems), total, into, note))
