"""Real code under extsan: Cython cdef classes and cffi programs, with exactly the findings checked
by hand against their sources (issue 9: no false finding on Cython and cffi code).

Every workload runs in its own process under `scripts/extsan run --json` on every Python of the
matrix, and also without extsan where that proves what a fixture claims.

Cython (tests/fixtures/cy_classes.pyx, built by Meson per Python; cy_classes_heap is the same
source built with CYTHON_USE_TYPE_SPECS=1, the classes as heap types):
- Ordinary work with cdef classes that have vtables (cdef/cpdef methods), typed object
  attributes, inheritance, a Python subclass, weak references, and cycles through all of them,
  kept to the end or collected (cy_workload.py classes): no finding at all.
- The planted defect, a @cython.no_gc class (Cython emits no tp_traverse) whose `cdef object`
  closes a cycle: hidden-reference (the cycle named, never collectable) or, for garbage,
  hidden-reference and leaked-cycle; its twin without @cython.no_gc: no finding.
- A defect of Cython itself (cython/cython#5053): the traverse it generates for a cdef class
  never visits a typed memoryview attribute (`cdef double[:] values`, whose `memview` it owns),
  so cycles closed through one are never collected: incomplete-traverse and leaked-cycle.

cffi 2.0.0 (build/cffi/cpXY per ABI; tests/fixtures/cffi_*): an out-of-line API-mode module
(ffi.set_source, @ffi.def_extern) and ABI mode (ffi.dlopen, ffi.callback) with handles, ffi.gc,
listeners the C library keeps, cycles through cffi's objects, and callbacks the library calls
from its own thread while the caller released the GIL (cffi_workload.py). Two findings stand in
every cffi program, both true (cffi 2.0.0's src/c/_cffi_backend.c):
- `_cffi_backend._CDataBase` (CData_Type: Py_TPFLAGS_DEFAULT, no tp_traverse) holds its
  `CTypeDescrObject *c_type` at +16 (after the object header), a strong reference (new_simple_
  cdata INCREFs it, cdata_dealloc DECREFs it) to a CType, which is GC-tracked
  (ctypedescr_traverse). No cycle can run through it (a CType refers to CTypes and to its
  ct_stuff: dicts of CFields, tuples, strings; never to a cdata).
- `_cffi_backend.CField` (Py_TPFLAGS_DEFAULT, no tp_traverse) holds `cf_type` at +16, the same.
  This one closes real cycles: a self-referential struct's CType -> ct_stuff dict -> the CField
  of its pointer member -> the pointer CType -> ct_itemdescr -> the struct's CType. Such a struct
  type outlives its FFI for ever (cffi_workload.py leak proves it without extsan); extsan names
  that cycle, never collectable. It is no leaked-cycle: the struct's CType is also held by a
  key of cffi's type caches, ('new_pointer_type', (<ctype 'struct nodeN'>,)), whose refcount
  has references that no traverse shows (5, of which gc.get_referrers finds 2, on 3.12), so
  neither the collector nor extsan can prove the cycle garbage.
Three false findings used to come and go on cffi programs with the memory's stale words (an
unset integer field pointing into a free pymalloc block, a name's slack past a CType's exact
extent, the slack of a C struct that a cdata points to): any finding beyond the two fails.
"""

import json
import os
import re
import subprocess

import pytest

from conftest import (BUILD, FIXTURES_SRC, RUN_TIMEOUT, base_env, extension_path,
                      parse_workload_output, run_plain_workload)

CY_WORKLOAD = FIXTURES_SRC / "cy_workload.py"
CFFI_WORKLOAD = FIXTURES_SRC / "cffi_workload.py"

HIDDEN = "hidden-reference"
INCOMPLETE = "incomplete-traverse"
LEAKED = "leaked-cycle"

CY_MODULES = ("cy_classes", "cy_classes_heap")
GARBAGE_CYCLES = 3  # cy_workload.GARBAGE_CYCLES
LEAKED_FFIS = 3  # cffi_workload.LEAKED_FFIS

CDATA = "_cffi_backend._CDataBase"
CFIELD = "_cffi_backend.CField"
CTYPE = "_cffi_backend.CType"
CTYPE_OFFSET = 16  # c_type, cf_type: right after PyObject_HEAD


def cffi_env(python, fixtures):
    """PYTHONPATH: the fixture build (cffi_api, libcffi_native.so) and cffi for this Python."""
    cffi_dir = BUILD / "cffi" / ("cp3%d" % python.minor)
    if not (cffi_dir / "cffi").is_dir():
        pytest.fail("cffi for Python %s is not in %s: run scripts/install-deps" % (python.id, cffi_dir),
                    pytrace=False)
    return {"PYTHONPATH": os.pathsep.join([str(fixtures), str(cffi_dir)])}


def run_workload(run, script, args, env=None):
    """The workload under extsan: (Run, Output)."""
    result = run(script=script, args=list(args), env=env)
    assert result.returncode == 0, result.describe()
    return result, parse_workload_output(result.stdout, result.describe())


def run_plain(python, tmp_path, script, args, env):
    """The workload without extsan: WorkloadOutput."""
    return run_plain_workload(python, script, args, tmp_path, base_env(None, env))[1]


def creation_line(function):
    """The line of cy_workload.py, inside `function`, that ends with `# creates`."""
    current = None
    for number, line in enumerate(CY_WORKLOAD.read_text().splitlines(), 1):
        m = re.match(r"def (\w+)\(", line)
        if m:
            current = m.group(1)
        elif current == function and line.rstrip().endswith("# creates"):
            return number
    raise AssertionError("no `# creates` line in cy_workload.%s" % function)


def check_created_by(finding, function, where):
    stack = finding.get("python_stack") or []
    assert stack, "no python_stack:\n" + where
    top = stack[0]
    assert (os.path.basename(top.get("file") or ""), top.get("function"), top.get("line")) \
        == ("cy_workload.py", function, creation_line(function)), \
        "the innermost Python frame is not the line of cy_workload.%s that created the instance:\n%s" \
        % (function, where)


def summary(findings):
    """One line per finding and per referent: what a failure shows first (the full report may be
    cut)."""
    lines = []
    for f in findings:
        top = [frame.get("function") for frame in (f.get("stack") or [])[:3]]
        lines.append("%s %s instances=%s count=%s allocated by %s" % (
            f["kind"], f.get("type") or f.get("api"), f.get("instances"), f.get("count"), " < ".join(map(str, top))))
        for r in f.get("referents") or []:
            lines.append("    %s at %s (%s, %s bytes) x%s" % (r.get("type"), r.get("path", r.get("offset")),
                                                          r.get("evidence"), r.get("evidence_bytes"), r.get("count")))
    return "\n".join(lines)


def first_hop(referent):
    """The offset in the holder where a referent's path starts (+24 of "+24->+8")."""
    path = str(referent.get("path", referent.get("offset")))
    return int(path.split("->")[0].lstrip("+"))


def same_type(name, expected):
    return name == expected or name == "builtins." + expected


# ---- Cython ---------------------------------------------------------------------------------


@pytest.mark.parametrize("module", CY_MODULES)
def test_cython_classes_are_silent(run, fixtures, module):
    """vtables, typed object attributes, inheritance, cycles kept and collected: no finding."""
    extension_path(fixtures, module)
    result, output = run_workload(run, CY_WORKLOAD, [module, "classes"])
    result.check_silent(output.pid)
    # The workload made what it claims, and its garbage was collected (under extsan too).
    kept = output.info["kept"]
    assert kept["Counter"] >= 41 and kept["Tree"] == 1 and kept["Leaf"] >= 4, result.describe()
    assert output.tagged["live"] == kept, result.describe()


@pytest.mark.parametrize("module", CY_MODULES)
def test_cython_no_gc_holder_global_is_reported(run, fixtures, module):
    """One @cython.no_gc Holder whose callback refers back to it through the module's globals:
    one hidden-reference, its cycle named and never collectable; nothing else."""
    extension_path(fixtures, module)
    result, output = run_workload(run, CY_WORKLOAD, [module, "holder", "global", "defect"])
    findings = result.all_findings()
    describe = result.describe()
    type_name = module + ".Holder"
    assert output.info["type"] == type_name, describe
    assert [(f["kind"], f.get("type")) for f in findings] == [(HIDDEN, type_name)], describe
    (finding,) = findings
    where = json.dumps(finding, indent=1)
    assert finding["pid"] == output.pid and finding.get("binding") == "Cython", where
    assert finding.get("instances") == 1, where
    referents = finding.get("referents") or []
    assert len(referents) == 1 and same_type(referents[0].get("type"), "function"), where
    assert referents[0].get("offset") in (output.info["offset"], "+%d" % output.info["offset"]), \
        "the referent is not Holder.callback at +%d:\n%s" % (output.info["offset"], where)
    assert referents[0].get("count") == 1, where
    cycle = finding.get("cycle")
    assert isinstance(cycle, dict) and cycle.get("never_collectable") is True, where
    chain = cycle.get("chain") or ""
    assert chain.startswith(type_name + " --hidden @+%d--> function" % output.info["offset"]) \
        and chain.endswith(type_name), where
    assert any(module in (frame.get("module") or "") for frame in finding.get("stack") or []), where
    check_created_by(finding, "holder_global", where)


@pytest.mark.parametrize("module", CY_MODULES)
def test_cython_no_gc_holder_garbage_is_reported(run, fixtures, module):
    """GARBAGE_CYCLES Holders, each in a cycle through a closure, dropped and collected: they
    stay; hidden-reference for the three and leaked-cycle for their cycles; nothing else."""
    extension_path(fixtures, module)
    result, output = run_workload(run, CY_WORKLOAD, [module, "holder", "garbage", "defect"])
    findings = result.all_findings()
    describe = result.describe()
    type_name = module + ".Holder"
    assert output.tagged["live"]["Holder"] == GARBAGE_CYCLES, "the planted garbage was collected:\n" + describe
    assert {(f["kind"], f.get("type")) for f in findings} == {(HIDDEN, type_name), (LEAKED, type_name)}, \
        describe
    (hidden,) = [f for f in findings if f["kind"] == HIDDEN]
    where = json.dumps(hidden, indent=1)
    assert hidden.get("instances") == GARBAGE_CYCLES, where
    assert [(r.get("offset"), r.get("count")) for r in hidden.get("referents") or []] \
        in ([(output.info["offset"], GARBAGE_CYCLES)], [("+%d" % output.info["offset"], GARBAGE_CYCLES)]), \
        where
    check_created_by(hidden, "garbage_cycle", where)
    leaked = [f for f in findings if f["kind"] == LEAKED]
    assert sum(f["count"] for f in leaked) == GARBAGE_CYCLES, describe
    for finding in leaked:
        where = json.dumps(finding, indent=1)
        types = finding.get("types") or {}
        for expected in (type_name, "function", "cell"):
            assert any(same_type(name, expected) for name in types), where
        chain = finding.get("chain") or ""
        assert chain.startswith(type_name + " --hidden @+%d-->" % output.info["offset"]) \
            and "cell" in chain and chain.endswith(type_name), where
        check_created_by(finding, "garbage_cycle", where)


@pytest.mark.parametrize("variant", ("global", "garbage"))
@pytest.mark.parametrize("module", CY_MODULES)
def test_cython_fixed_holder_is_silent(run, fixtures, module, variant):
    """The same class without @cython.no_gc: Cython's traverse sees the callback."""
    extension_path(fixtures, module)
    result, output = run_workload(run, CY_WORKLOAD, [module, "holder", variant, "fixed"])
    result.check_silent(output.pid)
    assert output.tagged["live"]["FixedHolder"] == (1 if variant == "global" else 0), result.describe()


@pytest.mark.parametrize("module", CY_MODULES)
def test_cython_fixture_without_extsan(python, fixtures, tmp_path, module):
    """Without extsan: the no_gc Holder's garbage survives gc.collect(), FixedHolder's does not;
    the collector sees FixedHolder's callback among its referents and not Holder's."""
    extension_path(fixtures, module)
    env = {"PYTHONPATH": str(fixtures)}
    defect = run_plain(python, tmp_path, CY_WORKLOAD, [module, "holder", "garbage", "defect"], env)
    fixed = run_plain(python, tmp_path, CY_WORKLOAD, [module, "holder", "garbage", "fixed"], env)
    assert defect.tagged["live"]["Holder"] == GARBAGE_CYCLES and fixed.tagged["live"]["FixedHolder"] == 0
    code = ("import gc, %s as m\n"
            "for T in (m.Holder, m.FixedHolder):\n"
            "    h = T(); f = lambda: None; h.set_callback(f)\n"
            "    print(T.__name__, any(r is f for r in gc.get_referents(h)), gc.is_tracked(h))\n" % module)
    out = subprocess.run([str(python.path), "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=base_env(fixtures), cwd=str(tmp_path), timeout=RUN_TIMEOUT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["Holder False False", "FixedHolder True True"], out.stdout


@pytest.mark.parametrize("module", CY_MODULES)
def test_cython_memoryview_attribute_cycle_is_reported(run, python, fixtures, tmp_path, module):
    """Cython's generated tp_traverse skips a typed memoryview attribute: the Samples in
    cycles through one stay after gc.collect() (without extsan too), and extsan names the
    missed reference (Cython's memoryview at +16) and the leaked cycles; nothing else."""
    extension_path(fixtures, module)
    plain = run_plain(python, tmp_path, CY_WORKLOAD, [module, "memoryview"], {"PYTHONPATH": str(fixtures)})
    assert plain.tagged["live"]["Samples"] == GARBAGE_CYCLES, plain.lines
    result, output = run_workload(run, CY_WORKLOAD, [module, "memoryview"])
    findings = result.all_findings()
    describe = summary(findings) + "\n" + result.describe()
    type_name = module + ".Samples"
    memoryview = module + ".memoryview"
    assert output.tagged["live"]["Samples"] == GARBAGE_CYCLES, describe
    assert {(f["kind"], f.get("type")) for f in findings} == {(INCOMPLETE, type_name), (LEAKED, type_name)}, \
        describe
    (missed,) = [f for f in findings if f["kind"] == INCOMPLETE]
    where = summary([missed]) + "\n" + json.dumps(missed, indent=1)
    assert missed.get("binding") == "Cython" and missed.get("instances") == GARBAGE_CYCLES, where
    assert missed.get("missed_type_visit") is False, where
    assert [(r.get("type"), first_hop(r), "->" in str(r.get("path", "")), r.get("count"))
            for r in missed.get("referents") or []] \
        == [(memoryview, output.info["offset"], False, GARBAGE_CYCLES)], where
    check_created_by(missed, "memoryview_cycle", where)
    leaked = [f for f in findings if f["kind"] == LEAKED]
    assert sum(f["count"] for f in leaked) == GARBAGE_CYCLES, describe
    for finding in leaked:
        where = summary([finding]) + "\n" + json.dumps(finding, indent=1)
        types = finding.get("types") or {}
        assert {type_name, memoryview, "__main__.Weights"} <= set(types), where
        chain = finding.get("chain") or ""
        assert chain.startswith("%s --hidden @+%d--> %s" % (type_name, output.info["offset"], memoryview)) \
            and chain.endswith(type_name), where
        check_created_by(finding, "memoryview_cycle", where)


def test_cython_no_gc_fix_hint_names_the_decorator(run, fixtures):
    """The class is a hidden holder because of @cython.no_gc: the hint names the decorator."""
    result, _ = run_workload(run, CY_WORKLOAD, ["cy_classes", "holder", "global", "defect"])
    (finding,) = result.all_findings()
    assert "no_gc" in (finding.get("fix") or ""), json.dumps(finding, indent=1)


# ---- cffi -----------------------------------------------------------------------------------


def check_cffi_findings(result, output):
    """Exactly the two true findings of every cffi program (module docstring): _CDataBase and
    CField, each holding one CType at +16, with no cycle through them; nothing else (no
    capsule-without-gil from the library's thread, no leaked-cycle)."""
    findings = result.all_findings()
    describe = summary(findings) + "\n" + result.describe()
    assert sorted((f["kind"], f.get("type")) for f in findings) == sorted([(HIDDEN, CDATA), (HIDDEN, CFIELD)]), \
        describe
    for finding in findings:
        where = summary([finding]) + "\n" + json.dumps(finding, indent=1)
        assert finding["pid"] == output.pid and finding.get("binding") == "C API", where
        referents = finding.get("referents") or []
        assert [(r.get("type"), r.get("offset")) for r in referents] in (
            [(CTYPE, CTYPE_OFFSET)], [(CTYPE, "+%d" % CTYPE_OFFSET)]), where
        assert referents[0].get("count") == finding.get("instances") >= 1, where
        assert finding.get("cycle") is None, where
        assert any("_cffi_backend" in (frame.get("module") or "") for frame in finding.get("stack") or []), \
            where


@pytest.mark.parametrize("mode", ("api", "abi"))
@pytest.mark.parametrize("threads", (False, True), ids=("main-thread", "library-thread"))
def test_cffi_program(run, python, fixtures, mode, threads):
    extension_path(fixtures, "cffi_api")
    args = [mode] + (["--threads"] if threads else [])
    result, output = run_workload(run, CFFI_WORKLOAD, args, env=cffi_env(python, fixtures))
    assert output.info["mode"] == mode and output.info["threads"] is threads, result.describe()
    assert output.info["cffi"] == "2.0.0", result.describe()
    check_cffi_findings(result, output)
    result.check_process_checked(output.pid)


def test_cffi_self_referential_struct_leak_is_named(run, python, fixtures, tmp_path):
    """cffi's own leak: the struct types of dropped FFIs stay for ever (proved without extsan);
    extsan names the cycle through CField's hidden cf_type, never collectable."""
    env = cffi_env(python, fixtures)
    plain = run_plain(python, tmp_path, CFFI_WORKLOAD, ["leak"], env)
    assert plain.info["alive"] == LEAKED_FFIS, "the struct types were collected: %s" % (plain.lines,)
    result, output = run_workload(run, CFFI_WORKLOAD, ["leak"], env=env)
    assert output.info["alive"] == LEAKED_FFIS, result.describe()
    findings = result.all_findings()
    describe = summary(findings) + "\n" + result.describe()
    assert {(f["kind"], f.get("type")) for f in findings} <= {(HIDDEN, CDATA), (HIDDEN, CFIELD)}, describe
    (field,) = [f for f in findings if f.get("type") == CFIELD]
    where = summary([field]) + "\n" + json.dumps(field, indent=1)
    # Two fields per struct (next, value), each holding its type.
    assert field.get("instances") == 2 * LEAKED_FFIS, where
    cycle = field.get("cycle")
    assert isinstance(cycle, dict) and cycle.get("never_collectable") is True, where
    chain = cycle.get("chain") or ""
    assert chain.startswith("%s --hidden @+%d--> %s" % (CFIELD, CTYPE_OFFSET, CTYPE)) \
        and "['next']" in chain and chain.endswith(CFIELD), where
