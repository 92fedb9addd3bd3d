"""What a finding is about, told once for every output: its kind's rule, its subject, its
one-line headline, its stacks, which of its frames are the extension's own, and where a frame's
source file is on this machine."""

import os
import re
from typing import NamedTuple


class Kind(NamedTuple):
    rule_id: str  # stable SARIF rule id: never reused, never renumbered
    name: str
    short: str
    full: str
    help: str


KINDS = {kind.name: kind for kind in (
    Kind("EXT001", "capsule-without-gil",
         "PyCapsule call without the GIL",
         "A PyCapsule_* function was called, or a capsule destroyed, by a thread that does not hold "
         "the GIL (inside Py_BEGIN_ALLOW_THREADS, nb::gil_scoped_release, py::gil_scoped_release, "
         "or on a thread with no Python thread state). A silent race up to Python 3.11, a crash "
         "on 3.12 and 3.13.",
         "Hold the GIL around capsule calls: end the Py_BEGIN_ALLOW_THREADS / gil_scoped_release "
         "scope first, or take it with PyGILState_Ensure in a foreign thread."),
    Kind("EXT007", "call-without-gil",
         "C-API call without the GIL",
         "An extension called a function of the Python C API (or freed an object, through "
         "_Py_Dealloc) from a thread without an attached thread state: inside "
         "Py_BEGIN_ALLOW_THREADS, nb::gil_scoped_release, py::gil_scoped_release, or on a thread "
         "that never took the GIL. A race at best; from 3.12 on usually a crash.",
         "Make the call after the GIL-released scope ends, or take the GIL around it "
         "(PyGILState_Ensure, nb::gil_scoped_acquire, py::gil_scoped_acquire). Functions the "
         "C-API documentation allows without the GIL (PyGILState_*, PyMem_Raw*, PyThread_*, ...) "
         "are never reported."),
    Kind("EXT002", "hidden-reference",
         "Extension type hides references from the cyclic GC",
         "Instances of an extension type hold references to objects the cyclic garbage collector "
         "tracks, but the type has no tp_traverse (or inherits one that does not know its "
         "fields): cycles through these instances can never be collected.",
         "Make the type take part in the GC: Py_TPFLAGS_HAVE_GC, a tp_traverse that visits every "
         "reference the instance owns (and Py_TYPE(self) for a heap type), and a tp_clear. The "
         "finding's \"fix\" field gives the recipe for its binding library."),
    Kind("EXT003", "incomplete-traverse",
         "tp_traverse misses references",
         "The type's tp_traverse does not visit every reference its instances hold (or, for a "
         "heap type, the instance's own type): the collector cannot see those edges.",
         "Py_VISIT every PyObject * the instance owns in tp_traverse, and Py_TYPE(self) for a "
         "heap type (required since Python 3.9)."),
    Kind("EXT004", "leaked-cycle",
         "Garbage cycle kept alive by a hidden reference",
         "Objects that no code can reach any more form a cycle whose only link the collector "
         "cannot see (a reference hidden by an extension type): the cycle is never freed.",
         "Fix the hidden reference of the extension type named in the finding (see its "
         "hidden-reference or incomplete-traverse finding); the leaked cycle then gets collected."),
    Kind("EXT005", "traverse-missing-gc",
         "Py_TPFLAGS_HAVE_GC without tp_traverse",
         "A type has Py_TPFLAGS_HAVE_GC but no tp_traverse: Python 3.11+ refuses it in "
         "PyType_Ready; on 3.9 and 3.10 the next collection that meets an instance crashes.",
         "Give the type a tp_traverse, or drop Py_TPFLAGS_HAVE_GC."),
    Kind("EXT008", "reference-leak",
         "Objects leaked by a missing Py_DECREF",
         "A piece of work repeated (a test under --extsan-leaks, a callable under "
         "extsan.check_leaks) left objects alive in every repetition, kept by references that "
         "no visible or hidden referrer explains and that nothing older refers to: a new "
         "reference an extension never released (a Py_INCREF too many, an error path that "
         "returns without its Py_DECREF, nb::handle::inc_ref, a py::handle made from a new "
         "reference).",
         "Release the reference on every path of the extension function in the allocation "
         "stack (Py_DECREF, Py_XDECREF on error paths), or hold it in nb::object / py::object "
         "(py::reinterpret_steal for a new reference), which release it."),
    Kind("EXT006", "deadly-signal",
         "The process crashed",
         "The process was killed by a crash signal (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT). "
         "The stack is the crashing thread's; the findings the process made before are reported "
         "with it.",
         "Read the stack from its innermost frame inside the extension; a finding of this process "
         "(a capsule used without the GIL on 3.12+, say) may be the cause."),
)}


def kind_rule_id(kind):
    """The stable rule id of a kind; a kind this version does not know keeps its own name."""
    known = KINDS.get(kind)
    return known.rule_id if known else "extsan/" + str(kind)


# ---- subject and headline ------------------------------------------------------------------------


def finding_subject(finding):
    """What the finding is about: the type's name, or the capsule API and the capsule's name."""
    if finding.get("type"):
        return finding["type"]
    if finding.get("kind") == "call-without-gil":
        return finding.get("api") or ""
    if finding.get("api"):
        return "%s %s" % (finding["api"], finding.get("capsule") or "(unnamed capsule)")
    if finding.get("kind") == "deadly-signal":
        return finding.get("signal") or ""
    return ""


def finding_headline(finding):
    """One line saying what is wrong, as the runtime's text report says it."""
    kind = finding.get("kind")
    type_name = finding.get("type") or "?"
    binding = " (%s)" % finding["binding"] if finding.get("binding") else ""
    if kind in ("capsule-without-gil", "call-without-gil"):
        api = finding.get("api") or "?"
        what = "happened" if " " in api else "was called"
        capsule = ' (capsule "%s")' % finding["capsule"] if finding.get("capsule") else ""
        return "%s %s without the GIL%s" % (api, what, capsule)
    if kind == "hidden-reference":
        why = ("its tp_traverse is inherited and does not know its fields"
               if finding.get("inherited_traverse") else "it has no tp_traverse")
        return "%s%s holds references the cyclic GC cannot see: %s" % (type_name, binding, why)
    if kind == "incomplete-traverse":
        what = "references its instances hold" if finding.get("referents") else "the instance's own type"
        return "the tp_traverse of %s%s misses %s" % (type_name, binding, what)
    if kind == "leaked-cycle":
        cycles = "; %d such cycles" % finding["count"] if finding.get("count", 1) > 1 else ""
        return "%s objects kept alive only by a hidden reference of %s%s%s" % (
            finding.get("objects", "?"), type_name, binding, cycles)
    if kind == "traverse-missing-gc":
        return "%s has Py_TPFLAGS_HAVE_GC but no tp_traverse" % type_name
    if kind == "deadly-signal":
        return "the process was killed by %s" % (finding.get("signal") or "a signal")
    if kind == "reference-leak":
        count = finding.get("per_repetition", "?")
        return "%s %s object%s leaked per repetition, kept by references nothing explains" % (
            count, type_name, "" if count == 1 else "s")
    return "%s %s" % (kind, finding_subject(finding))


def finding_chain(finding):
    """The reference chain of the finding ("A --label--> B ..."), or None."""
    if finding.get("chain"):
        return finding["chain"]
    cycle = finding.get("cycle")
    if isinstance(cycle, dict) and cycle.get("chain"):
        return cycle["chain"]
    return None


def group_findings(findings):
    """[[finding, ...]] with one group per (fingerprint, status), in first-seen order."""
    groups = {}
    for finding in findings:
        groups.setdefault((finding.get("fingerprint"), finding.get("status")), []).append(finding)
    return list(groups.values())


# ---- stacks and frames ---------------------------------------------------------------------------


class Stack(NamedTuple):
    key: str  # the finding's field: stack, type_stack or python_stack
    title: str
    frames: list

    @property
    def is_python(self):
        """Python frames have function, file and line only."""
        return self.key == "python_stack"


def finding_stacks(finding):
    """[Stack]: the finding's native and Python stacks that are not empty, innermost frame
    first."""
    kind = finding.get("kind")
    if kind == "capsule-without-gil":
        titles = [("stack", "called at")]
    elif kind == "call-without-gil":
        titles = [("stack", "called at"), ("python_stack", "called from Python code")]
    elif kind == "deadly-signal":
        titles = [("stack", "crashed at"), ("python_stack", "in Python code")]
    elif kind == "traverse-missing-gc":
        titles = [("type_stack", "type created at"), ("stack", "reported at")]
    else:
        titles = [("python_stack", "allocated by Python code"), ("stack", "allocated at"),
                  ("type_stack", "type created at")]
    found, seen = [], []
    for key, title in titles:
        frames = finding.get(key)
        if isinstance(frames, list) and frames and frames not in seen:
            seen.append(frames)
            found.append(Stack(key, title, frames))
    return found


def fingerprint_stack(finding):
    """The stack a fingerprint is made from. A finding about a type is one per type, but its
    "stack" is where one example instance was allocated, which changes with the order tests
    run in (and with which xdist worker got them): where the type was created does not."""
    if finding.get("type") and finding.get("type_stack"):
        return finding["type_stack"]
    return finding.get("stack") or []


# Modules whose frames are never the extension's own: the Python runtime (libpython, or the
# python executable itself for a statically linked build), the C and C++ runtimes, the dynamic
# loader, the unwinding and symbolising libraries, and extsan. The runtime decides the same way
# (loaded_object_is_extension in detector/runtime/loaded_objects.c) and marks each frame of its
# reports "in_extension": this rule serves reports of an extsan that did not, and hand-made ones.
NOT_EXTENSION = re.compile(
    r"^(libpython|python[0-9.]*[a-z]*$|libc\.so|libm\.so|libpthread|libdl\.|librt\.|libutil\.|"
    r"ld-linux|ld\.so|ld64\.so|libstdc\+\+|libgcc_s|libunwind|libdw|libelf|libextsan|"
    r"linux-vdso|\[vdso\])")


def is_extension_frame(frame):
    """True for a native frame of a module that is neither the Python runtime nor a system
    library (nor a frame whose module is unknown): the report's "in_extension" mark."""
    if "in_extension" in frame:
        return bool(frame["in_extension"])
    module = frame.get("module")
    if not module:
        return False
    return not NOT_EXTENSION.match(os.path.basename(module))


def first_extension_frame(frames, with_line=False):
    """The innermost frame of the extension (having file:line, when with_line), or None."""
    for frame in frames:
        if is_extension_frame(frame) and (not with_line or (frame.get("file") and frame.get("line"))):
            return frame
    return None


TYPE_KINDS = ("hidden-reference", "incomplete-traverse", "leaked-cycle", "traverse-missing-gc")


def member_declaration(finding):
    """Where the member holding the finding's first named referent is declared, as a frame
    ({"file", "line", "function": the member's path}), or None when debug info named none."""
    for referent in finding.get("referents") or ():
        member = referent.get("member") if isinstance(referent, dict) else None
        if isinstance(member, dict) and member.get("file") and not referent.get("own_type"):
            # Debug info names the file relative to where the module was compiled: the module
            # that made the type is what resolve_source starts from.
            creator = first_extension_frame(finding.get("type_stack") or finding.get("stack") or [])
            return {"file": member["file"], "line": member.get("line"), "function": member.get("path"),
                    "module": creator.get("module") if creator else None}
    return None


def location_frame(finding):
    """The frame a finding is located at (SARIF's location, the HTML page's source link): for a
    finding about a type, the declaration of the member that hides the reference, else the
    type's creation, never the Python line that allocated an instance; for a call, the
    innermost extension frame with file:line, else the innermost extension frame."""
    if finding.get("kind") in TYPE_KINDS:
        declared = member_declaration(finding)
        if declared is not None:
            return declared
        native = finding.get("type_stack") or finding.get("stack") or []
    else:
        native = finding.get("stack") or finding.get("type_stack") or []
    return first_extension_frame(native, with_line=True) or first_extension_frame(native)


def first_frame_text(finding):
    """The innermost frame inside the extension of the stack the fingerprint is made from (for
    a finding about a type, where the type was created), as 'function file:line', or
    'function module+offset' without debug info; None when no frame is the extension's. The
    one-line listings (the gate's new findings, the pytest plugin's summary) show it."""
    frame = first_extension_frame(fingerprint_stack(finding))
    return function_place(frame) if frame is not None else None


def function_place(frame):
    """'function file:line' (the file's base name), or 'function module+offset' without debug
    info."""
    function = frame.get("function") or "??"
    if frame.get("file"):
        return "%s %s:%s" % (function, os.path.basename(frame["file"]), frame.get("line"))
    return "%s %s+%s" % (function, os.path.basename(frame.get("module") or "?"), frame.get("offset"))


def finding_where(finding):
    """Where in the user's code the finding is, as the runtime's headline ends: 'in MEMBER
    file:line' for a hidden reference whose member debug info names, 'type created at F
    file:line' for another finding about a type, 'at F file:line' for the others; None when the
    stack has no frame of an extension."""
    declared = member_declaration(finding)
    if declared is not None:
        return "in %s %s:%s" % (declared["function"], os.path.basename(declared["file"]), declared["line"])
    frame = first_extension_frame(fingerprint_stack(finding))
    if frame is None:
        return None
    about_type = finding.get("type") and finding.get("type_stack")
    return "%s %s" % ("type created at" if about_type else "at", function_place(frame))


# ---- trimmed stacks ------------------------------------------------------------------------------


class Fold(NamedTuple):
    """Frames shown as one line: '... 27 frames in libpython3.12.so.1.0, libc.so.6'."""
    frames: int
    modules: list  # in order of first appearance

    def text(self):
        return "... %d frame%s in %s" % (self.frames, "" if self.frames == 1 else "s", ", ".join(self.modules))


# Python packages of the test harness: what calls the test function (the runtime's text report
# folds the same: python_harness_package in detector/report/report_text.c).
HARNESS_PACKAGES = {"_pytest": "pytest", "pluggy": "pluggy", "xdist": "xdist", "execnet": "execnet"}


def harness_package(file):
    """The harness package a Python frame's file belongs to ('pytest', 'pluggy', 'runpy', ...),
    or None for the user's code."""
    file = file or ""
    parts = file.split("/")
    for part in parts[:-1]:
        if part in HARNESS_PACKAGES:
            return HARNESS_PACKAGES[part]
    if parts[-1] in ("runpy.py", "<frozen runpy>"):
        return "runpy"
    if file.endswith(("/pytest/__main__.py", "/pytest/__init__.py")):
        return "pytest"
    return None


def _folded(items, shown, module_of):
    """items (index, frame) with each run of frames not shown replaced by a Fold."""
    out = []
    for index, frame in enumerate(items):
        if shown[index]:
            out.append((index, frame))
            continue
        module = module_of(frame)
        if out and isinstance(out[-1], Fold):
            last = out[-1]
            out[-1] = Fold(last.frames + 1, last.modules + ([] if module in last.modules else [module]))
        else:
            out.append(Fold(1, [module]))
    return out


def trimmed_frames(stack, full=False):
    """A stack as shown to a person: [(index, frame) or Fold]. A native stack keeps its innermost
    frame, the extension's frames and each frame next to one (the runtime function called, the
    runtime frame that called in); a Python stack is cut at the first frame of the test harness.
    The runtime's text report trims the same (detector/report/report_text.c); full keeps all."""
    frames = stack.frames
    if stack.is_python:
        harness = [harness_package(f.get("file")) for f in frames]
        first = next((i for i, package in enumerate(harness) if package), len(frames))
        shown = [full or i < first for i in range(len(frames))]
        return _folded(frames, shown, lambda f: harness_package(f.get("file")) or os.path.basename(f.get("file") or "?"))
    inside = [is_extension_frame(f) for f in frames]
    last = len(frames) - 1
    shown = [full or i == 0 or inside[i] or (i > 0 and inside[i - 1]) or (i < last and inside[i + 1])
             for i in range(len(frames))]
    # Folding a single frame would not shorten the stack.
    shown = [shown[i] or ((i == 0 or shown[i - 1]) and (i == last or shown[i + 1])) for i in range(len(frames))]
    return _folded(frames, shown, lambda f: os.path.basename(f.get("module") or "") or "??")


def allocation_note(finding, stack):
    """For an allocation stack without a frame of an extension (the type's tp_new is the
    runtime's): one line saying so, and where the user's code is instead (tp_new, tp_init, the
    type's creation), as the runtime's text report writes it; else None."""
    if stack.key != "stack" or not finding.get("type") or finding.get("kind") not in (
            "hidden-reference", "incomplete-traverse", "leaked-cycle"):
        return None
    if any(is_extension_frame(f) for f in stack.frames):
        return None
    note = "no frame of an extension"
    for slot in ("tp_new", "tp_init"):
        if isinstance(finding.get(slot), dict):
            frame = finding[slot]
            note += "; %s: %s%s" % (slot, function_place(frame), "" if is_extension_frame(frame) else " (the runtime's)")
    created = first_extension_frame(finding.get("type_stack") or [])
    if created:
        note += "; the type was created at " + function_place(created)
    return note


def finding_line(finding, test=False, fingerprint=False):
    """One line for a finding: 'kind: subject', then with test 'in test T' (or 'in no test'),
    with fingerprint 'fingerprint F', then 'at' its first extension frame."""
    parts = ["%s: %s" % (finding.get("kind") or "?", finding_subject(finding) or "-")]
    if test:
        parts.append("in test %s" % finding["test"] if finding.get("test") else "in no test")
    if fingerprint:
        parts.append("fingerprint %s" % finding.get("fingerprint"))
    frame = first_frame_text(finding)
    parts.append("at %s" % frame if frame else "at no frame of an extension")
    return ", ".join(parts)


def resolve_source(frame):
    """The absolute path of the frame's source file when it exists here, else None.

    Debug info names a file relative to the directory it was compiled in, which is not
    recorded in the report: try the module's directory (Meson and most builds compile in the
    directory that receives the extension), then the current directory.
    """
    name = frame.get("file")
    if not name:
        return None
    if os.path.isabs(name):
        candidates = [name]
    else:
        candidates = []
        if frame.get("module"):
            candidates.append(os.path.join(os.path.dirname(frame["module"]), name))
        candidates.append(os.path.abspath(name))
    for candidate in candidates:
        if os.path.isfile(candidate):
            return os.path.normpath(candidate)
    return None
