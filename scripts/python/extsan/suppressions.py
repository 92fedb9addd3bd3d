"""A suppressions file's use over a whole run, for the gate.

The runtime reads the file (option `suppressions`, detector/report/suppressions.c, where the
format and the matching are defined), marks each finding it suppressed with "suppressed": RULE
and lists each rule's use in its process's report. A run has many processes; this module adds
their lists up, so that a rule no process used is reported once, not once per process.
"""

import sys

from .common import rel


def suppression_usage(processes):
    """Each rule's use over the whole run, from the processes' "suppressions" lists:
    [{"rule", "file", "line", "used"}] in the order the rules first appear."""
    usage = {}
    for process in processes:
        for entry in process.get("suppressions") or ():
            if not isinstance(entry, dict) or not isinstance(entry.get("rule"), str):
                continue
            key = (entry["rule"], entry.get("line"))
            total = usage.setdefault(key, {"rule": entry["rule"], "file": entry.get("file"),
                                           "line": entry.get("line"), "used": 0})
            used = entry.get("used")
            total["used"] += used if isinstance(used, int) and not isinstance(used, bool) else 0
    return list(usage.values())


def warn_unused(usage):
    """One warning per rule that no finding of the whole run used."""
    for entry in usage:
        if entry["used"] == 0:
            where = "%s:%s" % (rel(entry["file"]), entry["line"]) if entry.get("file") else "?"
            print("extsan: warning: suppression %s (%s) was not used in this run" % (entry["rule"], where),
                  file=sys.stderr)
