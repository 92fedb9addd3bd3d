"""References hidden from the cyclic GC: every planted defect is reported, every fixed twin and
every ordinary program is silent.

Each scenario runs in its own process, `python tests/fixtures/gc_workloads.py SCENARIO VARIANT
defect|fixed` (see that file), under `scripts/extsan run --json` on every Python of the matrix,
with the fixture extensions gc_defects (C API), nb_gc (nanobind, 3.10+) and pb_gc (pybind11).
The report is analysed when the process exits; the findings checked here:

- hidden-reference: an instance of a type without tp_traverse holds a reference to an object
  the collector tracks (gc_defects.Holder, Indirect; nb_gc.Container; pb_gc.Container), or of a
  subtype whose inherited traverse cannot know its own fields (gc_defects.Derived).
- incomplete-traverse: the type's own tp_traverse misses it (gc_defects.Pair; and NoTypeVisit,
  whose only miss is Py_TYPE(self): missed_type_visit).
- leaked-cycle: garbage kept alive by such a reference (the `garbage` variants).
- traverse-missing-gc: Py_TPFLAGS_HAVE_GC without tp_traverse, at PyType_Ready (3.9/3.10; from
  3.11 on PyType_Ready raises SystemError and extsan says nothing).

The `*_without_extsan` tests prove the fixtures are what they claim, with no extsan at all: the
defect's edge is invisible to gc.get_referents and its garbage survives gc.collect() (live
instance counters kept by the types themselves), the fixed twin's is visible and collected.
"""

import importlib.util
import json
import os
import re
import signal
import subprocess
from typing import NamedTuple

import pytest

from conftest import (
    FIXTURES_SRC,
    NANOBIND_IDS,
    RUN_TIMEOUT,
    base_env,
    check_stack,
    extension_path,
    parse_workload_output,
    program_pid,
    run_plain_workload,
    run_extsan,
    stderr_finding_lines,
)

WORKLOADS = FIXTURES_SRC / "gc_workloads.py"
_spec = importlib.util.spec_from_file_location("gc_workloads", WORKLOADS)
workloads = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(workloads)

HIDDEN = "hidden-reference"
INCOMPLETE = "incomplete-traverse"
LEAKED = "leaked-cycle"
MISSING = "traverse-missing-gc"

BINDINGS = {"gc_defects": "C API", "nb_gc": "nanobind", "pb_gc": "pybind11"}
# Words the fix hint must contain, per binding library (and kind, for the C API).
FIX_WORDS = {
    ("C API", HIDDEN): ("Py_TPFLAGS_HAVE_GC", "tp_traverse", "tp_clear"),
    ("C API", INCOMPLETE): ("tp_traverse",),
    ("nanobind", HIDDEN): ("nb::type_slots", "tp_traverse", "nb::inst_ready"),
    ("pybind11", HIDDEN): ("py::custom_type_setup",),
}

# The defect's finding kind per scenario.
DEFECT_KIND = {
    "holder": HIDDEN,
    "indirect": HIDDEN,
    "pair": INCOMPLETE,
    "derived": HIDDEN,
    "type-visit": INCOMPLETE,
    "nanobind": HIDDEN,
    "pybind11": HIDDEN,
}
# Where the hidden pointer sits in the holder: gc_defects.OFFSETS keys, one for an offset in the
# instance, two for a pointer followed to a separate block ("+16->+8"). Not checked for the
# binding libraries (their layout is theirs).
LOCATION = {
    "holder": ("Holder.callback",),
    "indirect": ("Indirect.side", "side.obj"),
    "pair": ("Pair.second",),
    "derived": ("Derived.extra",),
    "type-visit": ("ob_type",),
}
# The referent's type, per variant.
REFERENT = {"global": "function", "acyclic": "functools.partial", "instances": "type"}
# The function of gc_workloads.py that creates the (example) instance, per variant.
CREATOR = {
    "global": "global_cycle",
    "acyclic": "acyclic_holder",
    "instances": "type_visit_instance",
    "garbage": "garbage_cycle",
}
CREATED = {
    "global": 1,
    "acyclic": workloads.ACYCLIC_INSTANCES,
    "instances": workloads.TYPE_VISIT_INSTANCES,
    "garbage": workloads.GARBAGE_CYCLES,
}


class Case(NamedTuple):
    scenario: str
    variant: str

    @property
    def id(self):
        return "%s-%s" % (self.scenario, self.variant)

    @property
    def module(self):
        return workloads.SCENARIOS[self.scenario][0]

    def type_name(self, which="defect"):
        _, defect, fixed, _ = workloads.SCENARIOS[self.scenario]
        return "%s.%s" % (self.module, defect if which == "defect" else fixed)

    @property
    def binding(self):
        return BINDINGS[self.module]

    @property
    def kind(self):
        return DEFECT_KIND[self.scenario]

    @property
    def creator(self):
        if self.scenario == "type-visit" and self.variant == "garbage":
            return "garbage_type_cycle"
        return CREATOR[self.variant]

    @property
    def leaked_types(self):
        """Types a leaked cycle of this case must contain (garbage variants)."""
        if self.scenario == "type-visit":
            return (self.type_name(), "type")
        return (self.type_name(), "function", "cell")


def cases(*scenarios):
    return [Case(s, v) for s in scenarios for v in workloads.SCENARIOS[s][3]]


C_CASES = cases("holder", "indirect", "pair", "derived", "type-visit")
PB_CASES = cases("pybind11")
NB_CASES = cases("nanobind")


# ---- running the workloads ----------------------------------------------------------------------


def run_workload(run, *args):
    """The workload under extsan: (Run, Output)."""
    result = run(script=WORKLOADS, args=list(args))
    assert result.returncode == 0, result.describe()
    return result, parse_workload_output(result.stdout, result.describe())


def run_plain(python, fixtures, tmp_path, *args):
    """The workload without extsan: (CompletedProcess, WorkloadOutput, description)."""
    return run_plain_workload(python, WORKLOADS, args, tmp_path, base_env(fixtures))


# ---- checking findings ----------------------------------------------------------------------------

_CREATES = {}


def creation_line(function):
    """The line of gc_workloads.py, inside `function`, that ends with `# creates`."""
    if not _CREATES:
        current = None
        for number, line in enumerate(WORKLOADS.read_text().splitlines(), 1):
            m = re.match(r"def (\w+)\(", line)
            if m:
                current = m.group(1)
            elif line.rstrip().endswith("# creates"):
                assert current not in _CREATES, "two `# creates` lines in %s" % current
                _CREATES[current] = number
    assert function in _CREATES, "no `# creates` line in gc_workloads.%s" % function
    return _CREATES[function]


def same_type(name, expected):
    """A type name as the report writes it: `function` may also be spelled `builtins.function`."""
    return name == expected or name == "builtins." + expected


def in_module(frame, module):
    return os.path.basename(frame.get("module") or "").startswith(module + ".")


def check_python_stack(finding, function, where):
    stack = finding.get("python_stack")
    assert isinstance(stack, list) and stack, "no python_stack:\n" + where
    top = stack[0]
    assert os.path.basename(top.get("file") or "") == "gc_workloads.py", \
        "the innermost Python frame is not the workload's:\n" + where
    assert top.get("function") == function, \
        "the innermost Python frame is not %s:\n%s" % (function, where)
    assert top.get("line") == creation_line(function), \
        "the innermost Python frame does not name the line that created the instance (%d):\n%s" \
        % (creation_line(function), where)


def check_native_stack(finding, module, where, key="stack", function=None):
    """A non-empty native stack with a frame in the extension `module` (or naming `function`)."""
    stack = finding.get(key)
    assert isinstance(stack, list) and stack, "no %s:\n%s" % (key, where)
    for frame in stack:
        assert {"function", "module", "offset"} <= set(frame), "a frame of %s: %s" % (key, where)
    if function is not None:
        names = (function,) if isinstance(function, str) else function
        assert any(name in (f.get("function") or "") for f in stack for name in names), \
            "no frame of %s names %s:\n%s" % (key, " or ".join(names), where)
    else:
        assert any(in_module(f, module) for f in stack), \
            "no frame of %s is in the extension %s:\n%s" % (key, module, where)


def check_location(referent, case, offsets, where):
    """The pointer's place in the holder: `offset` for a pointer in the instance, a `path` like
    "+16->+8" for one found through another pointer."""
    keys = LOCATION.get(case.scenario)
    if keys is None:
        assert "offset" in referent or "path" in referent, where
        return
    if len(keys) == 1:
        expected = offsets[keys[0]]
        assert referent.get("offset") in (expected, "+%d" % expected), \
            "the referent is not at offset %d:\n%s" % (expected, where)
    else:
        expected = "->".join("+%d" % offsets[k] for k in keys)
        assert referent.get("path", referent.get("offset")) == expected, \
            "the referent's path is not %s:\n%s" % (expected, where)


# The tp_traverse statement the report gives for it, in the variables of the binding's hint
# (None for the instance's own type: the hint to visit Py_TYPE(self) covers it).
VISIT = {
    "holder": "Py_VISIT(self->callback)",
    "indirect": "Py_VISIT(self->side->obj)",
    "pair": "Py_VISIT(self->second)",
    "derived": "Py_VISIT(self->extra)",
    "type-visit": None,
    "nanobind": "Py_VISIT(nb::find(t->callback).ptr())",
    "pybind11": "Py_VISIT(t.callback.ptr())",
}
# The member debug info names for the planted pointer: (path, declared type, the pointer lies
# in a block that member's type leads to). The member is the fixture's own declaration.
MEMBER = {
    "holder": ("HolderObject.callback", "PyObject *", False),
    "indirect": ("IndirectObject.side->obj", "PyObject *", False),
    "pair": ("PairObject.second", "PyObject *", False),
    "derived": ("DerivedObject.extra", "PyObject *", False),
    "type-visit": ("HolderObject.ob_base", "PyObject", False),
    "nanobind": ("Container::callback", "std::function<void()>", True),
    "pybind11": ("Container::callback", "pybind11::object", False),
}
SOURCES = {"gc_defects": "gc_defects.c", "nb_gc": "nb_gc.cpp", "pb_gc": "pb_gc.cpp"}


def check_member(referent, expected, source, where):
    """The referent's member as debug info names it, declared where the fixture declares it."""
    member = referent.get("member")
    assert isinstance(member, dict), "no member named:\n" + where
    assert (member.get("path"), member.get("type"), member.get("beyond")) == expected, where
    assert os.path.basename(member.get("file") or "") == source, where
    # pybind11's type record is out of reach: its class is found by the Python type's name.
    assert member.get("by_name") is (source == "pb_gc.cpp"), where
    line = (FIXTURES_SRC / source).read_text().splitlines()[member["line"] - 1]
    last = re.split(r"->|\.|::", expected[0])[-1]
    assert re.search(r"\b%s\b" % re.escape(last), line), \
        "line %d of %s does not declare %s: %r\n%s" % (member["line"], source, last, line, where)


def check_cycle(finding, type_name, where):
    cycle = finding.get("cycle")
    assert isinstance(cycle, dict), "no cycle reported:\n" + where
    assert cycle.get("never_collectable") is True, where
    chain = cycle.get("chain") or ""
    assert chain.startswith(type_name) and chain.rstrip().endswith(type_name), \
        "the chain does not run from %s back to it:\n%s" % (type_name, where)
    assert "hidden" in chain and "function" in chain, where


def check_holder_finding(finding, case, output):
    """A hidden-reference / incomplete-traverse finding of a non-garbage variant."""
    where = json.dumps(finding, indent=1)
    type_name = case.type_name()
    assert finding["kind"] == case.kind, where
    assert finding["type"] == type_name, where
    assert finding["pid"] == output.pid, where
    assert finding.get("binding") == case.binding, where
    fix = finding.get("fix") or ""
    words = FIX_WORDS[(case.binding, case.kind)]
    if case.scenario == "type-visit":
        words = ("Py_TYPE(self)",)  # the one thing to add
    for word in words:
        assert word in fix, "the fix does not mention %s:\n%s" % (word, where)
    created = CREATED[case.variant]
    assert finding.get("instances") == created, where
    # Each planted holder has exactly one hidden pointer (nothing else: not its ob_type).
    referents = finding.get("referents") or []
    assert len(referents) == 1 and same_type(referents[0].get("type"), REFERENT[case.variant]), \
        "not exactly one referent, of type %s:\n%s" % (REFERENT[case.variant], where)
    (referent,) = referents
    assert referent.get("count") == created, where
    check_location(referent, case, output.info.get("offsets"), where)
    check_member(referent, MEMBER[case.scenario], SOURCES[case.module], where)
    assert referent["member"]["visit"] == VISIT[case.scenario], where
    check_native_stack(finding, case.module, where)
    # The module's initialisation made the type: PyInit_<module> for single-phase init, the
    # exec slot otherwise (nanobind's <module>_exec, pybind11's pybind11_exec_<module>).
    check_native_stack(finding, case.module, where, key="type_stack",
                       function=("PyInit_" + case.module, case.module + "_exec",
                                 "exec_" + case.module))  # substrings
    check_python_stack(finding, case.creator, where)
    if case.variant == "global":
        check_cycle(finding, type_name, where)
    else:
        assert "cycle" in finding and finding["cycle"] is None, "a cycle where there is none:\n" + where
    if case.kind == INCOMPLETE:
        assert finding.get("missed_type_visit") is (case.scenario == "type-visit"), where


def check_leaked_cycles(findings, case, output, describe):
    type_name = case.type_name()
    leaked = [f for f in findings if f["kind"] == LEAKED]
    assert leaked, "no leaked-cycle finding:\n" + describe
    assert sum(f["count"] for f in leaked) == workloads.GARBAGE_CYCLES, describe
    for finding in leaked:
        where = json.dumps(finding, indent=1)
        assert finding["type"] == type_name, where
        assert finding["pid"] == output.pid, where
        types = finding.get("types") or {}
        for expected in case.leaked_types:
            assert any(same_type(name, expected) and count >= 1 for name, count in types.items()), \
                "the cycle's types do not include %s:\n%s" % (expected, where)
        assert finding.get("objects", 0) >= len(case.leaked_types), where
        chain = finding.get("chain") or ""
        assert chain.startswith(type_name) and "hidden" in chain, where
        check_native_stack(finding, case.module, where)
        check_python_stack(finding, case.creator, where)


def check_defect(result, output, case):
    findings = result.all_findings()
    describe = result.describe()
    # Nothing about any other type: no false positive anywhere in the process.
    assert findings, "no finding:\n" + describe
    assert all(f.get("type") == case.type_name() for f in findings), describe
    if case.variant == "garbage":
        # The leaked holders are also the type's holders of hidden references, all of them.
        assert {f["kind"] for f in findings} == {LEAKED, case.kind}, describe
        holders = [f for f in findings if f["kind"] == case.kind]
        assert sum(f.get("instances", 0) for f in holders) == workloads.GARBAGE_CYCLES, describe
        check_leaked_cycles(findings, case, output, describe)
    else:
        assert len(findings) == 1, describe
        check_holder_finding(findings[0], case, output)


# ---- each planted defect and its fixed twin, under extsan -----------------------------------------


@pytest.mark.parametrize("case", C_CASES + PB_CASES, ids=lambda c: c.id)
def test_defect_is_reported(run, fixtures, case):
    extension_path(fixtures, case.module)
    result, output = run_workload(run, case.scenario, case.variant, "defect")
    check_defect(result, output, case)


@pytest.mark.parametrize("case", C_CASES + PB_CASES, ids=lambda c: c.id)
def test_fixed_twin_is_silent(run, fixtures, case):
    extension_path(fixtures, case.module)
    result, output = run_workload(run, case.scenario, case.variant, "fixed")
    result.check_silent(output.pid)


FROZEN_CASES = [c for c in C_CASES if c.id in ("holder-global", "holder-garbage", "pair-acyclic")]


@pytest.mark.parametrize("case", FROZEN_CASES, ids=lambda c: c.id)
def test_defect_is_reported_when_the_program_froze_its_heap(run, fixtures, case):
    """gc.freeze() moves every object where gc.get_objects() does not list it: the analysis
    lists them itself, or the defect's referents (and the cycles it closes) are not seen."""
    result, output = run_workload(run, case.scenario, case.variant, "defect", "--freeze")
    check_defect(result, output, case)


@pytest.mark.parametrize("case", FROZEN_CASES, ids=lambda c: c.id)
def test_fixed_twin_is_silent_when_the_program_froze_its_heap(run, fixtures, case):
    result, output = run_workload(run, case.scenario, case.variant, "fixed", "--freeze")
    result.check_silent(output.pid)


@pytest.mark.pythons(*NANOBIND_IDS)
@pytest.mark.parametrize("case", NB_CASES, ids=lambda c: c.id)
def test_nanobind_defect_is_reported(run, fixtures, case):
    """The reported case: Container holding a std::function whose Python callable refers back
    to the instance (through the module's globals, or garbage through a closure)."""
    extension_path(fixtures, case.module)
    result, output = run_workload(run, case.scenario, case.variant, "defect")
    check_defect(result, output, case)


@pytest.mark.pythons(*NANOBIND_IDS)
@pytest.mark.parametrize("case", NB_CASES, ids=lambda c: c.id)
def test_nanobind_fixed_twin_is_silent(run, fixtures, case):
    """nb::type_slots with nanobind's documented tp_traverse / tp_clear."""
    extension_path(fixtures, case.module)
    result, output = run_workload(run, case.scenario, case.variant, "fixed")
    result.check_silent(output.pid)


def check_text_report(result, output, case, kind):
    lines = stderr_finding_lines(result.stderr, output.pid)
    text = "\n".join(lines)
    assert kind in text and case.type_name() in text, result.describe()


def test_text_report(run, fixtures):
    """The text report on stderr names the kind and the holder type."""
    case = Case("holder", "global")
    result, output = run_workload(run, case.scenario, case.variant, "defect")
    check_text_report(result, output, case, HIDDEN)


def test_leaked_cycle_as_graphviz_files(run, fixtures, tmp_path):
    """dot_dir: each distinct leaked cycle becomes a Graphviz file naming its nodes and the
    hidden edge; a clean run writes none."""
    dot_dir = tmp_path / "dots"
    dot_dir.mkdir()
    result = run(script=WORKLOADS, args=["holder", "garbage", "defect"],
                 extsan_args=["--dot-dir", str(dot_dir)])
    assert result.returncode == 0, result.describe()
    files = sorted(dot_dir.glob("extsan.%d.cycle*.dot" % program_pid(result)))
    leaked = [f for f in result.all_findings() if f["kind"] == "leaked-cycle"]
    assert len(files) == len(leaked) >= 1, result.describe()
    text = files[0].read_text()
    assert text.startswith("digraph") and "gc_defects.Holder" in text, text
    assert "hidden @+16" in text and "color=red" in text, text
    assert text == leaked[0]["dot"], text
    clean_dir = tmp_path / "clean-dots"
    clean_dir.mkdir()
    result = run(script=WORKLOADS, args=["holder", "garbage", "fixed"],
                 extsan_args=["--dot-dir", str(clean_dir)])
    result.check_silent(program_pid(result))
    assert not list(clean_dir.iterdir()), result.describe()


@pytest.mark.pythons(*NANOBIND_IDS)
def test_nanobind_text_report(run, fixtures):
    case = Case("nanobind", "garbage")
    extension_path(fixtures, case.module)
    result, output = run_workload(run, case.scenario, case.variant, "defect")
    check_text_report(result, output, case, LEAKED)


# ---- Py_TPFLAGS_HAVE_GC without tp_traverse -------------------------------------------------------

SYSTEM_ERROR = ("SystemError: type gc_defects.GcWithoutTraverse has the Py_TPFLAGS_HAVE_GC flag "
                "but has no traverse function")


@pytest.mark.pythons("3.9", "3.10")
def test_gc_without_traverse_is_reported_at_creation(run, fixtures):
    """3.9/3.10 accept the type: reported with the stack of its PyType_Ready. The type never
    gets an instance (a collection meeting one would crash), so the process exits normally."""
    result, output = run_workload(run, "gc-without-traverse", "ready")
    assert "created gc_defects.GcWithoutTraverse" in output.lines, result.describe()
    findings = result.all_findings()
    assert [f["kind"] for f in findings] == [MISSING], result.describe()
    (finding,) = findings
    assert finding["type"] == "gc_defects.GcWithoutTraverse", result.describe()
    assert finding["pid"] == output.pid, result.describe()
    check_stack(finding, "ready_gc_without_traverse", api=MISSING, module="gc_defects")


@pytest.mark.pythons("3.11", "3.12", "3.13", "debian3.11")
def test_gc_without_traverse_systemerror_is_silent(run, fixtures):
    """3.11+ refuse the type: the SystemError reaches Python, extsan says nothing."""
    result, output = run_workload(run, "gc-without-traverse", "ready")
    assert SYSTEM_ERROR in output.lines, result.describe()
    result.check_silent(output.pid)


# ---- programs that must stay silent ---------------------------------------------------------------


def test_python_pass_is_silent(python, tmp_path):
    result = run_extsan(python, None, tmp_path, code="pass")
    result.check_silent()
    assert result.stdout == "", result.describe()


FORKED_CHILDREN = """\
import os, gc_defects
kept = gc_defects.Holder()  # the parent's: its children inherit it
kept.set_callback(kept.touch)
for makes in ("nothing", "clean", "defect"):
    pid = os.fork()
    if pid == 0:
        if makes == "clean":
            h = gc_defects.Holder()  # holds no Python object
        elif makes == "defect":
            h = gc_defects.Pair()
            h.set_callback(h.touch)
        os._exit(0)
    os.waitpid(pid, 0)
    print("child", pid, makes, flush=True)
"""


def test_forked_child_reports_only_its_own_instances(run):
    """A forked child leaves its inherited instances to its parent (which reports the inherited
    holder once): one that made no extension instance does no analysis, one whose instances hold
    no Python object stops at the probe, and one that made a defective instance reports that
    one alone."""
    result = run(code=FORKED_CHILDREN, extsan_args=["--verbosity=1"])
    assert result.returncode == 0, result.describe()
    children = {line.split()[2]: int(line.split()[1]) for line in result.stdout.splitlines()}
    assert result.stderr.count("heap analysis: no extension instance made by this process") == 1, \
        result.describe()
    assert result.stderr.count("heap analysis: no instance made by this process holds") == 1, \
        result.describe()
    by_pid = {}
    for finding in result.all_findings():
        by_pid.setdefault(finding["pid"], set()).add((finding["kind"], finding.get("type")))
    assert children["nothing"] not in by_pid and children["clean"] not in by_pid, result.describe()
    assert by_pid[children["defect"]] == {("incomplete-traverse", "gc_defects.Pair")}, \
        result.describe()
    parent = set(by_pid) - set(children.values())
    assert [("hidden-reference", "gc_defects.Holder") in by_pid[pid] for pid in parent] == [True], \
        result.describe()


def test_no_extension_instance_no_analysis(run):
    """A process that made no extension instance pays for no analysis (nothing could hold a
    hidden reference), one whose instance holds no Python object stops at the probe, before the
    collection; one that made a single defective instance is analysed and its defect found."""
    quiet = run(code="import gc_defects", extsan_args=["--verbosity=1"])
    quiet.check_silent()
    assert "heap analysis: no extension instance made by this process" in quiet.stderr, quiet.describe()
    clean = run(code="import gc_defects\nh = gc_defects.Holder()\n", extsan_args=["--verbosity=2"])
    clean.check_silent()
    assert "heap analysis: no instance made by this process holds" in clean.stderr, clean.describe()
    assert "heap analysis: collect" not in clean.stderr, clean.describe()
    one = run(code="import gc_defects\nh = gc_defects.Holder()\nh.set_callback(h.touch)\n",
              extsan_args=["--verbosity=1"])
    assert "heap analysis: no extension instance made by this process" not in one.stderr, one.describe()
    assert [f["type"] for f in one.findings("hidden-reference")] == ["gc_defects.Holder"], one.describe()


@pytest.mark.parametrize("scenario", ["stdlib", "import"])
def test_program_is_silent(run, fixtures, scenario):
    """stdlib: json, sqlite3 (with a Python function), decimal, pickle, re, asyncio, threads,
    lru_cache, OrderedDict/deque cycles, _random, ... with reachable cycles kept to the end and
    garbage collected. import: the fixture modules imported, their types made, no instance."""
    result, output = run_workload(run, scenario, "all")
    result.check_silent(output.pid)


@pytest.mark.parametrize("variant", ["static", "heap"])
def test_raw_memory_is_silent(run, fixtures, variant):
    """(f) non-GC types holding raw memory only (a heap type's instances still own their type)."""
    result, output = run_workload(run, "raw", variant)
    result.check_silent(output.pid)


# ---- the fixtures are what they claim (no extsan) -------------------------------------------------


def check_fixture(python, fixtures, tmp_path, case, which):
    out, output, describe = run_plain(python, fixtures, tmp_path, case.scenario, case.variant,
                                      which, "--probe")
    probe = output.tagged.get("probe")
    assert probe is not None, describe
    created = CREATED[case.variant]
    assert probe["created"] == created, describe
    # The collector sees the edge (gc.get_referents, i.e. tp_traverse) only in the fixed twin.
    assert probe["visible"] == [which == "fixed"] * created, describe
    if case.variant == "garbage":
        # The defect's garbage survives gc.collect(); the fixed twin's is freed.
        assert probe["live_after_collect"] == (created if which == "defect" else 0), describe
        if case.scenario == "type-visit":
            assert probe["types_alive"] == (created if which == "defect" else 0), describe
    else:
        # No garbage: reference counting frees them once the script drops them.
        assert probe["live_before"] == created, describe
        assert probe["live_after_collect"] == 0, describe
    return out


@pytest.mark.parametrize("which", ["defect", "fixed"])
@pytest.mark.parametrize("case", C_CASES + PB_CASES, ids=lambda c: c.id)
def test_fixture_without_extsan(python, fixtures, tmp_path, case, which):
    extension_path(fixtures, case.module)
    check_fixture(python, fixtures, tmp_path, case, which)


@pytest.mark.pythons(*NANOBIND_IDS)
@pytest.mark.parametrize("which", ["defect", "fixed"])
@pytest.mark.parametrize("case", NB_CASES, ids=lambda c: c.id)
def test_nanobind_fixture_without_extsan(python, fixtures, tmp_path, case, which):
    """Also nanobind's own leak check: at exit it names the leaked instances of the garbage
    variant (no cause, no stack), and nothing for the fixed twin."""
    extension_path(fixtures, case.module)
    out = check_fixture(python, fixtures, tmp_path, case, which)
    if case.variant == "garbage" and which == "defect":
        assert "nanobind: leaked %d instances!" % workloads.GARBAGE_CYCLES in out.stderr, out.stderr
        assert out.stderr.count('of type "nb_gc.Container"') == workloads.GARBAGE_CYCLES, out.stderr
    else:
        assert "nanobind: leaked" not in out.stderr, out.stderr


@pytest.mark.parametrize("variant", ["static", "heap"])
def test_raw_fixture_without_extsan(python, fixtures, tmp_path, variant):
    _, output, describe = run_plain(python, fixtures, tmp_path, "raw", variant, "--probe")
    probe = output.tagged["probe"]
    assert probe["live_before"] == 3 and probe["live_after_collect"] == 0, describe


def test_gc_without_traverse_fixture_without_extsan(python, fixtures, tmp_path):
    """3.9/3.10: the type is made and a collection (with no instance) survives; 3.11+: the
    SystemError reaches Python."""
    _, output, describe = run_plain(python, fixtures, tmp_path, "gc-without-traverse", "ready")
    if python.minor <= 10:
        assert output.lines[-3:] == ("created gc_defects.GcWithoutTraverse", "collected",
                                     "workload ok"), describe
    else:
        assert SYSTEM_ERROR in output.lines, describe


def _no_core_dump():
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


@pytest.mark.pythons("3.9", "3.10")
def test_gc_without_traverse_instance_crashes_collection(python, fixtures, tmp_path):
    """Why the finding matters (and why the workload never makes an instance): on 3.9/3.10 the
    first collection that meets an instance calls the NULL tp_traverse."""
    code = ("import gc, gc_defects as m\nm.ready_gc_without_traverse()\n"
            "x = m.new_gc_without_traverse()\nprint('instance', flush=True)\ngc.collect()\n"
            "print('survived', flush=True)\n")
    out = subprocess.run([str(python.path), "-c", code], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=base_env(fixtures),
                         cwd=str(tmp_path), timeout=RUN_TIMEOUT, preexec_fn=_no_core_dump)
    assert out.stdout == "instance\n", out
    assert out.returncode == -signal.SIGSEGV, out


# ---- the analysis runs no Python code of the program --------------------------------------------

THROUGH_INSTANCE_DICT = """
import os, sys, gc_defects
print("pid", os.getpid(), flush=True)
watching = []  # set once the program is done: the analysis comes after

class Meta(type):
    def __getattribute__(cls, name):
        if watching:
            sys.stderr.write("PROGRAM CODE RAN: %s\\n" % name)
        return type.__getattribute__(cls, name)

class Owner(metaclass=Meta):
    def __getattribute__(self, name):
        if watching:
            sys.stderr.write("PROGRAM CODE RAN: %s\\n" % name)
        return object.__getattribute__(self, name)
    def poke(self):
        pass

def leak():
    holder = gc_defects.{holder}()
    owner = Owner()
    owner.holder = holder
    owner.tracked = []  # keeps the dict tracked: the collector untracks one of untracked values
    owner.__dict__  # a dict object on every version (3.11+ keep attributes inline until asked)
    holder.set_callback(owner.poke)

leak()
watching.append(True)
"""


def test_cycle_through_an_instance_dict_is_named_without_running_program_code(run, fixtures):
    """The leaked cycle Holder -> bound method -> Owner (-> its __dict__) -> Holder is written
    out with each type's name and each link's label, read from the objects' C structures: the
    class's and the instance's own __getattribute__ never run during the analysis."""
    result = run(THROUGH_INSTANCE_DICT.replace("{holder}", "Holder"))
    assert result.returncode == 0, result.describe()
    assert "PROGRAM CODE RAN" not in result.stderr, result.describe()
    (cycle,) = result.findings(LEAKED)
    chain = cycle["chain"]
    assert chain.startswith("gc_defects.Holder --hidden @+16--> method --__self__--> "
                            "__main__.Owner --"), result.describe()
    assert chain.endswith("--> gc_defects.Holder"), result.describe()
    # 3.11+ may visit the instance's attribute values without their dict.
    if "dict" in chain:
        assert "--__dict__--> dict --['holder']--> gc_defects.Holder" in chain, result.describe()


# ---- cycles through what the collector does not track ------------------------------------------

# Each program leaves a cycle through a non-GC holder behind, then prints how many holders are
# still alive after gc.collect() (1: the cycle leaks, as the defect makes it; 0 for the twin).
UNTRACKED_CYCLES = {
    # the collector untracks a dict or tuple that holds only objects it does not collect
    "dict": ('d = {}; d["h"] = gc_defects.{holder}(); d["h"].set_callback(d); del d',
             "gc_defects.Holder --hidden @+16--> dict --['h']--> gc_defects.Holder"),
    "tuple": ("h = gc_defects.{holder}(); h.set_callback((h,)); del h",
              "gc_defects.Holder --hidden @+16--> tuple --[0]--> gc_defects.Holder"),
    # the holder's only reference is the one it holds to itself
    "self": ("h = gc_defects.{holder}(); h.set_callback(h); del h",
             "gc_defects.Holder --hidden @+16--> gc_defects.Holder"),
}

UNTRACKED_PROGRAM = """
import gc, os, gc_defects
print("pid", os.getpid(), flush=True)
{statement}
gc.collect()
print("alive", gc_defects.live()["{holder}"], flush=True)
"""


def untracked_cycle(run, shape, holder):
    statement, chain = UNTRACKED_CYCLES[shape]
    program = UNTRACKED_PROGRAM.replace("{statement}", statement).replace("{holder}", holder)
    result = run(program.replace("{holder}", holder))
    alive = [line for line in result.stdout.splitlines() if line.startswith("alive ")]
    return result, alive, chain


@pytest.mark.parametrize("shape", sorted(UNTRACKED_CYCLES))
def test_cycle_through_an_untracked_container_or_itself_is_found(run, fixtures, shape):
    """A Holder whose cycle closes through a dict or tuple the collector untracked (it holds
    only a non-GC object), or through the holder itself: the cycle outlives gc.collect() and is
    reported as a leaked cycle, the container (or the holder) named as the hidden referent."""
    result, alive, chain = untracked_cycle(run, shape, "Holder")
    assert result.returncode == 0 and alive == ["alive 1"], result.describe()
    (cycle,) = result.findings(LEAKED)
    assert cycle["chain"] == chain, result.describe()
    (hidden,) = result.findings(HIDDEN)
    referent = chain.split("--> ")[1].split(" ")[0]
    assert [(r["type"], r["path"], r["evidence"]) for r in hidden["referents"]] == [
        (referent, "+16", "instance")], result.describe()


@pytest.mark.parametrize("shape", sorted(UNTRACKED_CYCLES))
def test_cycle_through_an_untracked_container_or_itself_of_a_fixed_holder_is_silent(
        run, fixtures, shape):
    """The twin: FixedHolder traverses its callback, the collector frees the cycle, and
    nothing is reported."""
    result, alive, _ = untracked_cycle(run, shape, "FixedHolder")
    assert alive == ["alive 0"], result.describe()
    result.check_silent(program_pid(result))


# ---- references in a heap buffer the holder owns ------------------------------------------------

# Buffers of 8 items are pymalloc blocks (64 bytes); of 100, malloc chunks (800 bytes).
BUFFER_EVIDENCE = {8: "pymalloc block", 100: "malloc chunk"}

OWNED_BUFFER = """
import gc, os, gc_defects
print("pid", os.getpid(), flush=True)
kept = []
for i in range(5):
    b = gc_defects.{type}({capacity})
    for j in range(i):
        b.append(1000 + j)
    b.append([b])  # the cycle closes through item i: a different offset in each buffer
    kept.append(gc_defects.{type}({capacity}))
    kept[-1].append(str(i))
del b
gc.collect()
print("alive", gc_defects.live()["{type}"], flush=True)
"""


def owned_buffer(run, type_name, capacity):
    result = run(OWNED_BUFFER.replace("{type}", type_name).replace("{capacity}", str(capacity)))
    alive = [line for line in result.stdout.splitlines() if line.startswith("alive ")]
    return result, alive


@pytest.mark.parametrize("capacity", sorted(BUFFER_EVIDENCE))
def test_references_in_an_owned_buffer_are_found(run, fixtures, capacity):
    """Buffer (no GC) keeps its references in an array it allocated: five garbage cycles, each
    through another item of its own buffer, are found as leaked cycles, each path ending at
    the item's offset in a block whose extent its allocator gives."""
    result, alive = owned_buffer(run, "Buffer", capacity)
    assert result.returncode == 0 and alive == ["alive 10"], result.describe()
    # Cycles of one shape are one finding, counted, written out once.
    (cycle,) = result.findings(LEAKED)
    assert cycle["count"] == 5, result.describe()
    assert re.fullmatch(r"gc_defects\.Buffer --hidden @\+16->\+\d+--> list --\[0\]--> "
                        r"gc_defects\.Buffer", cycle["chain"]), result.describe()
    (hidden,) = result.findings(HIDDEN)
    assert hidden["instances"] == 5, result.describe()
    paths = {r["path"] for r in hidden["referents"]}
    assert paths == {"+16->+%d" % (8 * i) for i in range(5)}, result.describe()
    for referent in hidden["referents"]:
        assert referent["type"] == "list", result.describe()
        assert referent["evidence"] == BUFFER_EVIDENCE[capacity], result.describe()
        assert referent["evidence_bytes"] >= 8 * capacity, result.describe()


@pytest.mark.parametrize("capacity", sorted(BUFFER_EVIDENCE))
def test_references_in_an_owned_buffer_of_a_fixed_holder_are_silent(run, fixtures, capacity):
    """The twin: FixedBuffer traverses its items, the collector frees the cycles."""
    result, alive = owned_buffer(run, "FixedBuffer", capacity)
    assert alive == ["alive 5"], result.describe()
    result.check_silent(program_pid(result))


# ---- what is no evidence of a reference ----------------------------------------------------

NOT_REFERENCES = """
import os, evidence
print("pid", os.getpid(), flush=True)
tables = [evidence.StaticTable() for i in range(50)]
names = [evidence.Named() for i in range(50)]
back_pointers = [evidence.BackPointer() for i in range(50)]
evidence.keep_back_pointer()
"""


def test_pointers_without_owned_references_are_not_reported(run, fixtures):
    """Instances that point to a static table of their module (a Cython vtable's case), to a
    name string whose block's slack still holds an old pointer, and to themselves (a borrowed
    back-pointer; one of them owned by a C static alone): none of those words is a reference
    the instance owns, and nothing is reported."""
    result = run(NOT_REFERENCES)
    result.check_silent(program_pid(result))


def test_back_pointer_owned_by_a_static_is_not_a_leak(run, fixtures):
    """The one BackPointer is owned by a C static only, and no other instance shows the field
    to be borrowed: the static variable that points to it is what keeps it, not its pointer to
    itself."""
    result = run("import os, evidence\nprint('pid', os.getpid(), flush=True)\n"
                 "evidence.keep_back_pointer()\n")
    result.check_silent(program_pid(result))


def test_cycle_through_an_instance_dict_of_a_fixed_holder_is_silent(run, fixtures):
    """The twin: FixedHolder traverses its callback, so the collector frees the same cycle, and
    the program's own __getattribute__ still never runs during the analysis."""
    result = run(THROUGH_INSTANCE_DICT.replace("{holder}", "FixedHolder"))
    assert "PROGRAM CODE RAN" not in result.stderr, result.describe()
    result.check_silent(program_pid(result))


# ---- naming the member from debug info -----------------------------------------------------------


def test_member_unnamed_without_debug_info(run):
    """gc_defects built without -g: the referent keeps its offset, and the report says that debug
    info would name the member; the same defect with debug info names it."""
    result = run(code="import gc_defects, gc_defects_nodebug as nodebug\n"
                      "KEEP = []\n"
                      "for module in (gc_defects, nodebug):\n"
                      "    h = module.Holder(); h.set_callback(lambda h=h: h.touch()); KEEP.append(h)\n")
    assert result.returncode == 0, result.describe()
    referents = [r for f in result.findings(HIDDEN) for r in f["referents"]]
    assert len(referents) == 2, result.describe()
    unnamed = [r for r in referents if r["member"] is None]
    named = [r for r in referents if r["member"] is not None]
    assert len(unnamed) == 1 and unnamed[0]["member_unknown"] == "no debug info", result.describe()
    assert unnamed[0]["offset"] == named[0]["offset"], result.describe()
    assert named[0]["member"]["path"] == "HolderObject.callback", result.describe()
    assert "its module has no debug info: built with -g, the member would be named" in result.stderr, \
        result.describe()


@pytest.mark.pythons(*NANOBIND_IDS)
def test_member_of_nanobind_class_holding_nb_object(run):
    """An nb::object member after a long: named from the class of the std::type_info that
    nanobind's type record points to, at its offset in the instance."""
    result = run(code="import nb_gc\n"
                      "h = nb_gc.ObjectHolder(); h.set(lambda: h)\n")
    assert result.returncode == 0, result.describe()
    (finding,) = [f for f in result.findings(HIDDEN) if f["type"] == "nb_gc.ObjectHolder"]
    (referent,) = finding["referents"]
    check_member(referent, ("ObjectHolder::held", "nanobind::object", False), "nb_gc.cpp",
                 json.dumps(finding, indent=1))
    assert referent["member"]["visit"] == "Py_VISIT(t->held.ptr())", result.describe()
    assert "HINT: in tp_traverse: Py_VISIT(t->held.ptr());" in result.stderr, result.describe()
