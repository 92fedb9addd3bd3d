"""The text rendering of a report for a person (`extsan report FILE.json`), in the shape of the
runtime's own text report: one block per finding with its stacks, then a summary line."""

import os

from .common import plural
from .findings import KINDS, finding_chain, finding_headline, finding_stacks


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


def finding_details(finding):
    """The lines under a finding's headline: where it was seen, what it holds, its chain."""
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
    if finding.get("referents"):
        lines.append("referents: " + ", ".join(referent_text(r) for r in finding["referents"]))
    if isinstance(finding.get("types"), dict) and finding["types"]:
        lines.append("leaked: " + ", ".join("%s %s" % (n, t) for t, n in finding["types"].items()))
    chain = finding_chain(finding)
    if chain:
        lines.append("cycle: %s" % chain)
    return lines


def finding_hint(finding):
    """The fix the runtime gave, else the kind's help text."""
    if finding.get("fix"):
        return finding["fix"]
    known = KINDS.get(finding.get("kind"))
    return known.help if known else None


def finding_block(finding):
    """The text block of one finding, ending with a blank line."""
    out = ["extsan: %s: %s" % (finding.get("kind"), finding_headline(finding))]
    out += ["extsan:   " + line for line in finding_details(finding)]
    for stack in finding_stacks(finding):
        out.append("  %s:" % stack.title)
        for index, frame in enumerate(stack.frames):
            out.append("    " + (python_frame_line(frame) if stack.is_python else native_frame_line(index, frame)))
    hint = finding_hint(finding)
    if hint:
        out.append("  HINT: " + hint)
    return "\n".join(out) + "\n\n"


def render_text(document):
    findings = document.get("findings", [])
    processes = document.get("processes", [])
    summary = "extsan: SUMMARY: %s in %s\n" % (plural(len(findings), "finding"), plural(len(processes), "process", "processes"))
    return "".join(finding_block(f) for f in findings) + summary
