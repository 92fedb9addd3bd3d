"""The text rendering of a report for a person (`extsan report FILE.json`), in the shape of the
runtime's own text report: one block per finding with its stacks, then a summary line."""

import os

from .common import plural
from .findings import (
    KINDS,
    Fold,
    allocation_note,
    finding_chain,
    finding_headline,
    finding_stacks,
    finding_subject,
    finding_where,
    trimmed_frames,
)


def native_frame_line(index, frame):
    """'#0 0x7f.. in function file:line (module+0x..)', as the runtime writes a frame."""
    line = "#%d %s in %s" % (index, frame.get("pc", "?"), frame.get("function") or "??")
    if frame.get("file"):
        line += " %s:%s" % (frame["file"], frame.get("line", "?"))
    if frame.get("module"):
        line += " (%s+%s)" % (os.path.basename(frame["module"]), frame.get("offset", "?"))
    return line


def python_frame_line(frame):
    return 'File "%s", line %s, in %s' % (frame.get("file"), frame.get("line"), frame.get("function"))


def referent_text(referent):
    """'list at +24->+8 (1, in a malloc chunk of 48 bytes)', as the core's text report writes it."""
    text = "%s at %s (%s" % (referent.get("type"), referent.get("path"), referent.get("count"))
    evidence = referent.get("evidence")
    if evidence:
        text += ", in %s %s of %s bytes" % ("the" if evidence == "instance" else "a", evidence,
                                             referent.get("evidence_bytes"))
    return text + ")"


def finding_identity(finding):
    """The lines under a finding's headline that say which it is: where it was seen, its test,
    fingerprint and suppression."""
    lines = []
    seen = "pid %s, %s" % (finding.get("pid", "?"), plural(finding.get("count", 1), "time"))
    if finding.get("thread"):
        thread = finding["thread"]
        seen += ', thread %s "%s"%s' % (thread.get("tid"), thread.get("name"),
                                        "" if thread.get("python_thread_state", True)
                                        else " (no Python thread state)")
    lines.append(seen)
    if finding.get("test"):
        lines.append("test: %s" % finding["test"])
    if finding.get("fingerprint"):
        status = " (%s)" % finding["status"] if finding.get("status") else ""
        lines.append("fingerprint: %s%s" % (finding["fingerprint"], status))
    if finding.get("suppressed"):
        lines.append("suppressed by: %s" % finding["suppressed"])
    return lines


def finding_evidence(finding):
    """The lines that show what the finding rests on: what it holds, what leaked, its chain."""
    lines = []
    if finding.get("referents"):
        lines.append("referents: " + ", ".join(referent_text(r) for r in finding["referents"]))
    if isinstance(finding.get("types"), dict) and finding["types"]:
        lines.append("leaked: " + ", ".join("%s %s" % (n, t) for t, n in finding["types"].items()))
    chain = finding_chain(finding)
    if chain:
        lines.append("cycle: %s" % chain)
    return lines


def finding_title(finding):
    """The headline: what is wrong, and where in the user's code."""
    where = finding_where(finding)
    return finding_headline(finding) + ("; " + where if where else "")


def finding_hint(finding):
    """The fix the runtime gave, else the kind's help text."""
    if finding.get("fix"):
        return finding["fix"]
    known = KINDS.get(finding.get("kind"))
    return known.help if known else None


def member_visits(finding):
    """'in tp_traverse: Py_VISIT(self->callback);' for the members debug info named, as the
    runtime's second HINT; None when it named none."""
    visits = [r["member"]["visit"] for r in finding.get("referents") or ()
              if isinstance(r, dict) and isinstance(r.get("member"), dict) and r["member"].get("visit")]
    return "in tp_traverse: " + " ".join(v + ";" for v in visits) if visits else None


def stack_lines(finding, stack, full=False):
    """A stack's title line and its frames, trimmed unless full, each line indented."""
    note = allocation_note(finding, stack)
    out = ["  %s:%s" % (stack.title, " " + note if note else "")]
    for item in trimmed_frames(stack, full):
        if isinstance(item, Fold):
            out.append("    " + item.text())
        else:
            index, frame = item
            out.append("    " + (python_frame_line(frame) if stack.is_python else native_frame_line(index, frame)))
    return out


def finding_block(finding, number=None, full=False):
    """The text block of one finding, ending with a blank line: the headline, the fix, then the
    evidence and the stacks."""
    out = ["extsan: %s: %s" % (finding.get("kind"), finding_title(finding))]
    identity = finding_identity(finding)
    if number is not None:
        identity[0] = "finding %d; %s" % (number, identity[0])
    out += ["extsan:   " + line for line in identity]
    for hint in (finding_hint(finding), member_visits(finding)):
        if hint:
            out.append("  HINT: " + hint)
    out += ["extsan:   " + line for line in finding_evidence(finding)]
    for stack in finding_stacks(finding):
        out += stack_lines(finding, stack, full)
    return "\n".join(out) + "\n\n"


SUMMARY_COLUMNS = ("#", "kind", "subject", "count", "test", "fingerprint")


def summary_rows(findings):
    """One row per finding for the summary table: SUMMARY_COLUMNS' values as text."""
    return [(str(number), finding.get("kind") or "?", finding_subject(finding) or "-",
             str(finding.get("count", 1)), finding.get("test") or "-", finding.get("fingerprint") or "-")
            for number, finding in enumerate(findings, 1)]


def summary_table(findings):
    """The findings summary table, aligned columns, one line each (none without findings)."""
    if not findings:
        return []
    rows = [SUMMARY_COLUMNS] + summary_rows(findings)
    widths = [max(len(row[i]) for row in rows) for i in range(len(SUMMARY_COLUMNS))]
    return ["extsan:   " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
            for row in rows]


def render_text(document, full=False):
    findings = document.get("findings", [])
    processes = document.get("processes", [])
    summary = "extsan: SUMMARY: %s in %s\n" % (plural(len(findings), "finding"), plural(len(processes), "process", "processes"))
    table = "".join(line + "\n" for line in summary_table(findings))
    return "".join(finding_block(f, i, full) for i, f in enumerate(findings, 1)) + table + summary
