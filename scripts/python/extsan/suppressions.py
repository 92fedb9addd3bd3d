"""Suppression files: `kind:pattern` lines, in the style of LeakSanitizer's.

    # a comment: a whole line, or from a '#' that follows white space
    capsule-without-gil:legacy_module.*
    hidden-reference:nb_gc.*
    *:libthirdparty.so

kind is a finding kind (capsule-without-gil, hidden-reference, ...) or `*` for any. pattern is a
glob (`*` any text, `?` one character, nothing else special) that must match the whole of one
of: the type's name, the capsule API, the capsule's name, or, in any of the finding's stacks, a
frame's function, module or source file (full path or basename). A finding is suppressed by
the first rule of the file that matches it.

The runtime reads the same files (option `suppressions`, detector/report/suppressions.c): it marks
each finding it suppressed with "suppressed": RULE and lists its rules' use per process. This
module speaks the same format, with the same messages, for the gate: to check a file before
CMD starts, to apply it where the runtime did not (a runtime built before the option existed),
and to count each rule's use over the whole run, so that a rule no process used is reported
once, not once per process.
"""

import os
import re
import sys
from typing import NamedTuple

from .common import Failure, rel
from .findings import KINDS


ANY_KIND = "*"
KIND_LIST = ", ".join(KINDS) + " or *"  # as the runtime lists them
BLANK = " \t\r\n\v\f"
QUOTED_LIMIT = 80  # characters of a bad line quoted in a message, as the runtime does


class Rule(NamedTuple):
    kind: str
    pattern: str
    file: str
    line: int
    regex: "re.Pattern"

    @property
    def text(self):
        return "%s:%s" % (self.kind, self.pattern)

    def fits(self, kind):
        return self.kind == ANY_KIND or self.kind == kind


def glob_regex(pattern):
    """The compiled full-match regex of a glob where only * and ? are special (a C++ name's
    [abi:cxx11] must match itself, not a character class)."""
    parts = [".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern]
    return re.compile("".join(parts), re.DOTALL)


def strip_comment(line):
    """line without its comment: from a '#' that starts it or follows white space (a '#'
    inside a name, as in C++'s {lambda()#1}, is part of the pattern)."""
    for i, ch in enumerate(line):
        if ch == "#" and (i == 0 or line[i - 1] in BLANK):
            return line[:i]
    return line


def parse_rule(path, number, raw):
    """The Rule of one line, None for a blank or comment line; a Failure for a malformed one."""
    line = strip_comment(raw).strip(BLANK)
    if not line:
        return None
    where = "%s:%d" % (path, number)
    kind, colon, pattern = line.partition(":")
    kind, pattern = kind.strip(BLANK), pattern.strip(BLANK)
    if not colon:
        raise Failure("%s: '%s' is not kind:pattern (no ':')" % (where, line[:QUOTED_LIMIT]))
    if not kind:
        raise Failure("%s: no kind before ':' (%s)" % (where, KIND_LIST))
    if kind != ANY_KIND and kind not in KINDS:
        raise Failure("%s: unknown kind '%s' (%s)" % (where, kind[:QUOTED_LIMIT], KIND_LIST))
    if not pattern:
        raise Failure("%s: empty pattern after '%s:'" % (where, kind))
    return Rule(kind, pattern, os.path.abspath(path), number, glob_regex(pattern))


def parse_suppressions(path):
    """The rules of a suppression file, in file order; an unreadable file or a malformed line
    is a Failure naming the file (and the line)."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            lines = f.read().split("\n")  # only '\n' ends a line, as for the runtime
    except OSError as e:
        raise Failure("%s: cannot read it: %s" % (path, e.strerror or e))
    rules = [parse_rule(path, number, raw) for number, raw in enumerate(lines, 1)]
    return [rule for rule in rules if rule is not None]


def match_candidates(finding):
    """The names a pattern is tried against, for one finding."""
    names = [finding.get("type"), finding.get("api"), finding.get("capsule")]
    for key in ("stack", "type_stack", "python_stack"):
        for frame in finding.get(key) or ():
            names.append(frame.get("function"))
            for path in (frame.get("module"), frame.get("file")):
                if path:
                    names += [path, os.path.basename(path)]
    return [name for name in names if isinstance(name, str) and name]


def matching_rule(rules, finding):
    """The first rule that suppresses the finding, or None."""
    candidates = None
    for rule in rules:
        if not rule.fits(finding.get("kind")):
            continue
        if candidates is None:
            candidates = match_candidates(finding)
        if any(rule.regex.fullmatch(name) for name in candidates):
            return rule
    return None


def suppression_usage(rules, used_here, processes):
    """Each rule's use over the whole run: [{"rule", "file", "line", "used"}].

    used_here: {rule text: count} of the findings matched in Python; the processes' own
    "suppressions" lists (when the runtime applied the file) are added to it, and a rule only
    the runtime listed is kept too.
    """
    usage = {}
    for rule in rules:
        usage[(rule.text, rule.line)] = {"rule": rule.text, "file": rule.file, "line": rule.line,
                                         "used": used_here.get(rule.text, 0)}
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
