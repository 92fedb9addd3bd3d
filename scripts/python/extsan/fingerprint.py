"""Fingerprints: one finding's identity across runs, rebuilds and unrelated code moves.

A fingerprint is the first 16 hex digits of the sha256 of
  kind, the subject (the type's name; or the capsule API and the capsule's name), and
  the top FINGERPRINT_FRAMES frames inside the extension (not the Python runtime, libc, ld.so,
  libstdc++ or extsan), each as function name + source file basename.
No line numbers (an unrelated edit above the call moves them), no addresses or offsets (a
rebuild moves them), no directories (a checkout or build elsewhere moves them).
"""

import hashlib
import os
import re

from .findings import fingerprint_stack, finding_subject, is_extension_frame

FINGERPRINT_FRAMES = 3
FINGERPRINT_DIGITS = 16

# GCC's clones of a function (foo.constprop.0, foo.isra.0, foo.part.1, foo.cold) are named by
# what the optimiser did to it, which changes with flags and unrelated edits.
CLONE_SUFFIX = re.compile(r"(\.(constprop|isra|part|cold|lto_priv|localalias)(\.\d+)?)+$")


def frame_identity(frame):
    """'function@file' of a frame: the file's basename, or without debug info the module's name
    without its ABI tag (capsule_defects, not capsule_defects.cpython-312-x86_64-linux-gnu.so)."""
    function = CLONE_SUFFIX.sub("", frame.get("function") or "??")
    if frame.get("file"):
        where = os.path.basename(frame["file"])
    else:
        where = os.path.basename(frame.get("module") or "?").split(".", 1)[0]
    return "%s@%s" % (function, where)


def extension_frame_identities(finding):
    """The identities of the finding's top FINGERPRINT_FRAMES frames inside the extension."""
    frames = [f for f in fingerprint_stack(finding) if is_extension_frame(f)]
    return [frame_identity(f) for f in frames[:FINGERPRINT_FRAMES]]


def fingerprint(finding):
    parts = [finding.get("kind") or "", finding_subject(finding)] + extension_frame_identities(finding)
    digest = hashlib.sha256("\n".join(parts).encode("utf-8", "surrogatepass")).hexdigest()
    return digest[:FINGERPRINT_DIGITS]


def first_frame_identity(finding):
    """The innermost frame inside the extension, 'function@file', or None (baseline files
    show it so that a person can tell what an entry stands for)."""
    identities = extension_frame_identities(finding)
    return identities[0] if identities else None


def add_fingerprints(document):
    """Adds "fingerprint" to every finding of a merged document."""
    for finding in document.get("findings", []):
        finding["fingerprint"] = fingerprint(finding)
    return document
