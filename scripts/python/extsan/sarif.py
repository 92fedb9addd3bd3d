"""SARIF 2.1.0 for code-scanning services (GitHub code scanning, GitLab, Azure DevOps, ...).

One run, tool.driver "extsan" with one rule per finding kind (KINDS: stable ids EXT001, ...).
One result per distinct finding (fingerprint and status; a defect met by several processes is
one result with their pids): located at the innermost frame inside the extension that has
file:line, every stack attached as a SARIF stack, our fingerprint as a partial fingerprint,
baselineState when the gate had a baseline, and a suppression when a rule matched.
"""

import os
from urllib.parse import quote

from . import __version__
from .findings import (
    KINDS,
    finding_headline,
    finding_stacks,
    group_findings,
    kind_rule_id,
    location_frame,
    resolve_source,
)
from .fingerprint import FINGERPRINT_DIGITS

SARIF_VERSION = "2.1.0"
SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
SOURCE_ROOT = "SRCROOT"  # the current directory: a CI job runs the gate from the checkout
FINGERPRINT_KEY = "extsanFingerprint/v1"
BASELINE_STATE = {"new": "new", "baselined": "unchanged", "suppressed": "unchanged"}


def sarif_rule(kind):
    known = KINDS.get(kind)
    rule = {"id": kind_rule_id(kind), "name": kind, "defaultConfiguration": {"level": "error"}}
    if known:
        rule.update(shortDescription={"text": known.short}, fullDescription={"text": known.full},
                    help={"text": known.help})
    else:
        rule["shortDescription"] = {"text": "extsan finding of kind %s" % kind}
    return rule


def artifact_location(frame):
    """Where the frame's source (or, without debug info, its module) is: relative to the
    current directory when it lies below it, else an absolute file URI; as the report gave
    it when it does not exist here."""
    given = frame.get("file") or frame.get("module")
    path = resolve_source(frame) if frame.get("file") else given
    if path and os.path.isabs(path):
        inside = os.path.relpath(path)
        if not inside.startswith(os.pardir + os.sep) and inside != os.pardir:
            return {"uri": quote(inside.replace(os.sep, "/")), "uriBaseId": SOURCE_ROOT}
        return {"uri": "file://" + quote(path)}
    return {"uri": quote(given)}


def frame_location(frame):
    location = {}
    if frame.get("file") or frame.get("module"):
        physical = {"artifactLocation": artifact_location(frame)}
        if frame.get("file") and isinstance(frame.get("line"), int) and frame["line"] > 0:
            physical["region"] = {"startLine": frame["line"]}
        location["physicalLocation"] = physical
    if frame.get("function"):
        location["logicalLocations"] = [{"fullyQualifiedName": frame["function"], "kind": "function"}]
    return location


def sarif_stack(title, frames):
    stack_frames = []
    for frame in frames:
        stack_frame = {"location": frame_location(frame)}
        if frame.get("module"):
            stack_frame["module"] = os.path.basename(frame["module"])
        stack_frames.append(stack_frame)
    return {"message": {"text": title}, "frames": stack_frames}


def result_location(finding):
    """The location of a result: findings.location_frame's, else the innermost frame of any
    stack."""
    stacks = [stack.frames for stack in finding_stacks(finding)]
    frame = location_frame(finding) or next((frames[0] for frames in stacks if frames), None)
    return frame_location(frame) if frame else None


def sarif_result(group, rule_index, baseline_given):
    finding = group[0]
    pids = sorted({f.get("pid") for f in group if f.get("pid") is not None})
    occurrences = sum(f.get("count", 1) for f in group)
    where = "pid %s" % pids[0] if len(pids) == 1 else "%d processes" % len(pids)
    result = {
        "ruleId": kind_rule_id(finding.get("kind")),
        "ruleIndex": rule_index,
        "level": "error",
        "message": {"text": "%s (seen %d time%s in %s)" % (finding_headline(finding), occurrences,
                                                          "" if occurrences == 1 else "s", where)},
        "occurrenceCount": max(occurrences, 1),
        "stacks": [sarif_stack(stack.title, stack.frames) for stack in finding_stacks(finding)],
        "properties": {"kind": finding.get("kind"), "pids": pids},
    }
    location = result_location(finding)
    if location and location.get("physicalLocation"):
        result["locations"] = [location]
    if finding.get("fingerprint") and len(finding["fingerprint"]) == FINGERPRINT_DIGITS:
        result["partialFingerprints"] = {FINGERPRINT_KEY: finding["fingerprint"]}
    if baseline_given and finding.get("status") in BASELINE_STATE:
        result["baselineState"] = BASELINE_STATE[finding["status"]]
    if finding.get("suppressed"):
        result["suppressions"] = [{"kind": "external", "status": "accepted",
                                   "justification": "extsan suppression %s" % finding["suppressed"]}]
    tests = sorted({f["test"] for f in group if isinstance(f.get("test"), str)})
    if tests:
        result["properties"]["tests"] = tests
    return result


def sarif_log(document, baseline_given=False):
    """The SARIF log (a dict, for json.dump) of a classified merged document."""
    findings = document.get("findings", [])
    kinds = list(KINDS) + sorted({str(f.get("kind")) for f in findings} - set(KINDS))
    rule_index = {kind: i for i, kind in enumerate(kinds)}
    results = [sarif_result(group, rule_index[str(group[0].get("kind"))], baseline_given)
               for group in group_findings(findings)]
    root = os.getcwd().replace(os.sep, "/").rstrip("/") + "/"
    run = {
        # The version of the extsan that merged the reports (the one that ran the command).
        "tool": {"driver": {"name": "extsan", "version": str(document.get("extsan_version") or __version__),
                            "rules": [sarif_rule(kind) for kind in kinds]}},
        "originalUriBaseIds": {SOURCE_ROOT: {"uri": "file://" + quote(root)}},
        "results": results,
    }
    return {"$schema": SARIF_SCHEMA, "version": SARIF_VERSION, "runs": [run]}
