"""extsan gate: a run's findings against the project's suppressions and baseline, as a CI step.

Each finding of the merged report gets "fingerprint" and "status": "suppressed" (a rule of the
suppression file matches it), "baselined" (its fingerprint is in the baseline) or "new". The
gate's exit status: CMD's own when CMD failed (never hidden), else EXIT_NEW_FINDINGS when a
finding is new, else 0; 125 when extsan itself fails. Its output ends with the summary line and
one line per new finding.
"""

import sys

from . import junit, sarif
from .atomic import check_writable, write_atomically, write_json_atomically
from .baseline import load_baseline, write_baseline
from .common import EXIT_FAILURE, Failure, plural
from .findings import finding_line
from .fingerprint import add_fingerprints
from .suppressions import suppression_usage, warn_unused

EXIT_NEW_FINDINGS = 3
STATUSES = ("new", "suppressed", "baselined")

# The files the gate writes, by flag: (argparse dest, flag).
OUTPUT_FLAGS = (("json", "--json"), ("sarif", "--sarif"), ("junit", "--junit"),
                ("update_baseline", "--update-baseline"))


def read_baseline_checking_outputs(args):
    """{fingerprint: baseline entry} of --baseline, once every output the gate will write is
    known writable: a bad file or an unwritable output is a Failure before CMD starts, not
    after a long test run. (The suppressions file is the runtime's, checked by its own parser:
    cli.check_suppression_file.)"""
    accepted = load_baseline(args.baseline) if args.baseline else {}
    for dest, flag in OUTPUT_FLAGS:
        if getattr(args, dest, None):
            check_writable(flag, getattr(args, dest))
    return accepted


def classify(document, accepted, update_baseline=None):
    """Adds "fingerprint" and "status" to every finding: "suppressed" when the runtime marked
    it so, else "baselined" or "new"; with update_baseline, first records the findings no rule
    suppressed there, so they count as baselined."""
    add_fingerprints(document)
    accepted = set(accepted)
    if update_baseline:
        kept = [f for f in document["findings"] if not f.get("suppressed")]
        write_baseline(update_baseline, kept)
        accepted.update(f["fingerprint"] for f in kept)
    for finding in document["findings"]:
        if finding.get("suppressed"):
            finding["status"] = "suppressed"
        elif finding["fingerprint"] in accepted:
            finding["status"] = "baselined"
        else:
            finding["status"] = "new"


def count_by_status(findings):
    """{status: number of distinct fingerprints}: a defect met by several processes (xdist
    workers, multiprocessing children) is one finding to fix."""
    return {status: len({f["fingerprint"] for f in findings if f["status"] == status}) for status in STATUSES}


def summary_line(counts, command_status):
    line = "extsan: %s, %d suppressed, %d baselined" % (
        plural(counts["new"], "new finding"), counts["suppressed"], counts["baselined"])
    if command_status:
        line += " (the command failed with status %d)" % command_status
    return line


def new_finding_lines(findings):
    """The output's last lines: one per new finding (per fingerprint, as counted), so that a
    failing CI job says what is new without its files being opened."""
    lines, seen = [], set()
    for finding in findings:
        if finding["status"] == "new" and finding["fingerprint"] not in seen:
            seen.add(finding["fingerprint"])
            lines.append("extsan: new: " + finding_line(finding, fingerprint=True))
    return lines


def write_outputs(args, document):
    if args.json:
        write_json_atomically(args.json, document)
    if args.sarif:
        write_json_atomically(args.sarif, sarif.sarif_log(document, bool(args.baseline or args.update_baseline)))
    if args.junit:
        write_atomically(args.junit, junit.junit_xml(document))


def run_gate(args, accepted, run):
    """The gate once its inputs passed their checks (read_baseline_checking_outputs). run() runs CMD and
    returns (status, merged document or None, Failure or None)."""
    status, document, failure = run()
    if failure is not None or document is None:
        # CMD's failure is never hidden behind extsan's: report ours, exit with CMD's.
        print("extsan: %s" % (failure or "no merged report"), file=sys.stderr)
        return status or EXIT_FAILURE
    try:
        classify(document, accepted, args.update_baseline)
        if any(p.get("suppressions") for p in document["processes"]):
            document["suppressions"] = suppression_usage(document["processes"])
        write_outputs(args, document)
    except Failure as e:
        print("extsan: %s" % e, file=sys.stderr)
        return status or EXIT_FAILURE
    warn_unused(document.get("suppressions", ()))
    counts = count_by_status(document["findings"])
    print(summary_line(counts, status), file=sys.stderr)
    for line in new_finding_lines(document["findings"]):
        print(line, file=sys.stderr)
    if status:
        return status
    return EXIT_NEW_FINDINGS if counts["new"] else 0
