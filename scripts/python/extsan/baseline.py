"""Baseline files: the findings a project has accepted, by fingerprint, so that the gate fails
only on what is new.

    {"extsan_baseline": 1,
     "fingerprints": [{"fingerprint": "3f2a...", "kind": "capsule-without-gil",
                       "subject": "PyCapsule_New mymod.handle", "first_frame": "make_handle@mymod.c"}]}

Only "fingerprint" decides; kind, subject and first_frame say what an entry stands for, for the
person reviewing a change to the file.
"""

import json
import re

from .atomic import write_json_atomically
from .common import Failure, rel
from .findings import finding_subject
from .fingerprint import FINGERPRINT_DIGITS, first_frame_identity

BASELINE_VERSION = 1
ENTRY_KEYS = ("fingerprint", "kind", "subject", "first_frame")
FINGERPRINT = re.compile(r"^[0-9a-f]{%d}$" % FINGERPRINT_DIGITS)


def load_baseline(path):
    """{fingerprint: entry} of a baseline file; anything malformed is a Failure naming the file
    and what is wrong with it."""
    def bad(what):
        return Failure("--baseline %s: %s" % (rel(path), what))

    try:
        with open(path, encoding="utf-8") as f:
            document = json.load(f)
    except OSError as e:
        raise bad("cannot read it: %s" % (e.strerror or e))
    except ValueError as e:
        raise bad("not valid JSON: %s" % e)
    if not isinstance(document, dict):
        raise bad("not a baseline (a JSON object with \"extsan_baseline\": %d was expected)" % BASELINE_VERSION)
    if document.get("extsan_baseline") != BASELINE_VERSION:
        raise bad("not a baseline of version %d (\"extsan_baseline\": %s)"
                  % (BASELINE_VERSION, json.dumps(document.get("extsan_baseline"))))
    entries = document.get("fingerprints")
    if not isinstance(entries, list):
        raise bad("\"fingerprints\" is missing or not a list")
    accepted = {}
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise bad("\"fingerprints\"[%d] is not an object" % index)
        missing = [key for key in ENTRY_KEYS if key not in entry]
        if missing:
            raise bad("\"fingerprints\"[%d] has no %s" % (index, ", ".join('"%s"' % k for k in missing)))
        if not isinstance(entry["fingerprint"], str) or not FINGERPRINT.match(entry["fingerprint"]):
            raise bad("\"fingerprints\"[%d]: \"fingerprint\" is not %d lowercase hex digits: %s"
                      % (index, FINGERPRINT_DIGITS, json.dumps(entry["fingerprint"])))
        accepted[entry["fingerprint"]] = entry
    return accepted


def baseline_entries(findings):
    """The baseline entries of findings (which carry "fingerprint"), one per fingerprint,
    sorted so that a baseline rewritten by a later run changes only where the findings did."""
    entries = {}
    for finding in findings:
        entries.setdefault(finding["fingerprint"], {
            "fingerprint": finding["fingerprint"],
            "kind": finding.get("kind"),
            "subject": finding_subject(finding),
            "first_frame": first_frame_identity(finding),
        })
    return [entries[key] for key in sorted(entries)]


def write_baseline(path, findings):
    write_json_atomically(path, {"extsan_baseline": BASELINE_VERSION, "fingerprints": baseline_entries(findings)})
