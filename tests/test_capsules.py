"""capsule-without-gil: every planted defect is reported, every clean twin is silent.

Each test runs a small program under `scripts/extsan run --json` on every Python of the matrix
(conftest.py) with the fixture extensions of tests/fixtures. A defect's program must also finish
normally with the expected output: extsan's protection (on by default) holds the GIL around the
defective call, which is what lets 3.12 and 3.13 survive it.
"""

import json
import os
import re
import subprocess
from typing import NamedTuple, Tuple

import pytest

from conftest import (
    BUILD,
    DEMO,
    EXTSAN,
    HALT_STATUS,
    KIND,
    NANOBIND_IDS,
    base_env,
    check_stack,
    check_stopped_before_command,
    extension_path,
    names_function,
    program_pid,
    run_captured,
    run_extsan,
    stderr_finding_lines,
)

PRELUDE = """\
import os, sys
import capsule_defects as m
print("pid", os.getpid(), flush=True)
"""
SUBINTERPRETER = "m.subinterpreter_cycle()\n"

PAYLOAD = "capsule_defects.payload"
COUNTED = "capsule_defects.counted"


class Expect(NamedTuple):
    """One finding a defect must produce."""

    api: str
    function: str  # the fixture function a frame must name
    capsules: Tuple[str, ...]  # acceptable values of "capsule"
    thread: str = "main"  # "main": the main thread, GIL released; "raw": capdef-raw pthread
    inline_headers: Tuple[str, ...] = ()


class Scenario(NamedTuple):
    id: str
    defect: str  # the program (after PRELUDE) that makes the defect
    stdout: str  # what it prints (after the pid line); the clean twin prints the same
    expect: Tuple[Expect, ...]

    @property
    def clean(self):
        """The clean twin: the same program calling the *_with_gil / PyGILState functions."""
        clean = self.defect.replace("_without_gil", "_with_gil").replace(
            "new_in_raw_thread", "new_in_gilstate_thread")
        assert clean != self.defect
        return clean


def one(api, function, capsules=(PAYLOAD,), **kw):
    return (Expect(api, function, tuple(capsules), **kw),)


SCENARIOS = [
    Scenario("new", "cap = m.new_without_gil()\nprint(m.get_pointer_with_gil(cap))\n", "42",
             one("PyCapsule_New", "new_without_gil")),
    Scenario("get_pointer", "cap = m.new_with_gil()\nprint(m.get_pointer_without_gil(cap))\n", "42",
             one("PyCapsule_GetPointer", "get_pointer_without_gil")),
    Scenario("set_pointer",
             "cap = m.new_with_gil()\nm.set_pointer_without_gil(cap)\nprint(m.get_pointer_with_gil(cap))\n",
             "7", one("PyCapsule_SetPointer", "set_pointer_without_gil")),
    Scenario("get_name", "print(m.get_name_without_gil(m.new_with_gil()))\n", PAYLOAD,
             one("PyCapsule_GetName", "get_name_without_gil")),
    # The finding may name the capsule by its name before or after the call.
    Scenario("set_name",
             "cap = m.new_with_gil()\nm.set_name_without_gil(cap)\nprint(m.get_name_with_gil(cap))\n",
             "capsule_defects.renamed",
             one("PyCapsule_SetName", "set_name_without_gil", (PAYLOAD, "capsule_defects.renamed"))),
    Scenario("get_context",
             "cap = m.new_with_gil()\nm.set_context_with_gil(cap)\nprint(m.get_context_without_gil(cap))\n",
             "True", one("PyCapsule_GetContext", "get_context_without_gil")),
    Scenario("set_context",
             "cap = m.new_with_gil()\nm.set_context_without_gil(cap)\nprint(m.get_context_with_gil(cap))\n",
             "True", one("PyCapsule_SetContext", "set_context_without_gil")),
    Scenario("get_destructor", "cap = m.make_counted_capsule()\nprint(m.get_destructor_without_gil(cap))\n",
             "True", one("PyCapsule_GetDestructor", "get_destructor_without_gil", (COUNTED,))),
    # The destructor set without the GIL is the one the API reports, and it runs exactly once.
    Scenario("set_destructor",
             "cap = m.new_with_gil()\nm.set_destructor_without_gil(cap)\n"
             "print(m.get_destructor_with_gil(cap))\ndel cap\nprint(m.destructor_calls())\n",
             "True\n1", one("PyCapsule_SetDestructor", "set_destructor_without_gil")),
    Scenario("is_valid", "print(m.is_valid_without_gil(m.new_with_gil()))\n", "True",
             one("PyCapsule_IsValid", "is_valid_without_gil")),
    Scenario("import", "print(m.import_without_gil())\n", "True",
             one("PyCapsule_Import", "import_without_gil", ("capsule_defects._api",))),
    # The last Py_DECREF without the GIL: PyCapsule_GetDestructor still reported the caller's
    # destructor (True), and the destructor ran exactly once.
    Scenario("drop", "print(m.drop_capsule_without_gil())\nprint(m.destructor_calls())\n", "True\n1",
             one("capsule destruction", "drop_capsule_without_gil", (COUNTED,),
                 inline_headers=("object.h",))),
    Scenario("raw_thread", "cap, got = m.new_in_raw_thread()\nprint(got, m.get_pointer_with_gil(cap))\n",
             "42 42",
             one("PyCapsule_New", "raw_thread_make_capsule", ("capsule_defects.raw_thread",), thread="raw")
             + one("PyCapsule_GetPointer", "raw_thread_make_capsule", ("capsule_defects.raw_thread",),
                   thread="raw")),
]

RAW_THREAD_NAME = "capdef-raw"


def output_after_pid(result):
    return "\n".join(result.stdout.splitlines()[1:])


def check_finding(finding, expect, pid, module="capsule_defects"):
    where = json.dumps(finding, indent=1)
    assert finding["kind"] == KIND
    assert finding["pid"] == pid, where
    assert finding["count"] == 1, where
    assert finding["capsule"] in expect.capsules, where
    thread = finding["thread"]
    if expect.thread == "main":
        assert thread["tid"] == pid, "not reported on the main thread:\n" + where
        assert thread["python_thread_state"] is True, where
    else:
        assert thread["tid"] != pid, where
        assert thread["name"] == RAW_THREAD_NAME, where
        assert thread["python_thread_state"] is False, where
    check_stack(finding, expect.function, api=expect.api, module=module,
                inline_headers=expect.inline_headers)


def check_findings(result, expects, pid, module="capsule_defects"):
    """The run's findings are exactly `expects`, one finding each."""
    findings = result.findings()
    assert sorted(f["api"] for f in findings) == sorted(e.api for e in expects), result.describe()
    for expect in expects:
        (finding,) = [f for f in findings if f["api"] == expect.api]
        check_finding(finding, expect, pid, module)


# ---- each planted defect and its clean twin -------------------------------------------------


@pytest.mark.parametrize("after_subinterpreter", [False, True], ids=["plain", "after-subinterpreter"])
@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.id)
def test_defect_is_reported(run, scenario, after_subinterpreter):
    """Reported with api, capsule, thread and a stack naming the defect's function and line;
    the program survives (protection) and prints what it would print with the GIL held. After
    a subinterpreter has come and gone (PyGILState_Check() is then 1 everywhere) too."""
    result = run(PRELUDE + (SUBINTERPRETER if after_subinterpreter else "") + scenario.defect)
    assert result.returncode == 0, result.describe()
    assert output_after_pid(result) == scenario.stdout, result.describe()
    check_findings(result, scenario.expect, program_pid(result))


@pytest.mark.parametrize("after_subinterpreter", [False, True], ids=["plain", "after-subinterpreter"])
@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.id)
def test_clean_twin_is_silent(run, scenario, after_subinterpreter):
    result = run(PRELUDE + (SUBINTERPRETER if after_subinterpreter else "") + scenario.clean)
    result.check_silent(program_pid(result))
    assert output_after_pid(result) == scenario.stdout, result.describe()


def test_text_report(run):
    """The text report on stderr: the finding (its `==PID==extsan:` lines and its stack), then
    a final SUMMARY line."""
    result = run(PRELUDE + "m.new_without_gil()\n")
    assert result.returncode == 0, result.describe()
    pid = program_pid(result)
    lines = stderr_finding_lines(result.stderr, pid)
    assert lines, result.describe()
    report = result.stderr[result.stderr.index(lines[0]):]
    for word in (KIND, "PyCapsule_New", PAYLOAD, "new_without_gil", "capsule_defects.c"):
        assert word in report, result.describe()
    summary = [i for i, line in enumerate(lines) if "SUMMARY" in line]
    assert summary == [len(lines) - 1] and len(lines) > 1, result.describe()


def test_text_report_off(run):
    result = run(PRELUDE + "m.new_without_gil()\n", env={"EXTSAN_OPTIONS": "text_report=0"})
    assert result.returncode == 0, result.describe()
    assert stderr_finding_lines(result.stderr) == [], result.describe()
    assert [f["api"] for f in result.findings()] == ["PyCapsule_New"], result.describe()


def test_stack_depth_option(run):
    """stack_depth=2: the two innermost frames, the defect's first (the default keeps many more:
    the interpreter's own frames down to main)."""
    result = run(PRELUDE + "m.new_without_gil()\n", env={"EXTSAN_OPTIONS": "stack_depth=2"})
    assert result.returncode == 0, result.describe()
    (finding,) = result.findings()
    assert len(finding["stack"]) == 2, result.describe()
    assert names_function(finding["stack"][0], "new_without_gil"), result.describe()
    check_stack(finding, "new_without_gil", module="capsule_defects")


def test_repeated_defect_is_one_finding(run):
    """The same defect from the same stack 5 times: one finding, count 5."""
    result = run(PRELUDE + "m.repeat_new_without_gil(5)\nprint('done')\n")
    assert result.returncode == 0, result.describe()
    assert output_after_pid(result) == "done", result.describe()
    (finding,) = result.findings()
    assert finding["api"] == "PyCapsule_New", result.describe()
    assert finding["count"] == 5, result.describe()
    check_stack(finding, "new_without_gil", module="capsule_defects")


def test_distinct_defects_are_distinct_findings(run):
    result = run(PRELUDE + "cap = m.new_with_gil()\n"
                 "m.get_name_without_gil(cap)\nm.is_valid_without_gil(cap)\n")
    assert result.returncode == 0, result.describe()
    findings = result.findings()
    assert sorted((f["api"], f["count"]) for f in findings) == \
        [("PyCapsule_GetName", 1), ("PyCapsule_IsValid", 1)], result.describe()
    for finding in findings:
        function = "get_name_without_gil" if finding["api"] == "PyCapsule_GetName" else "is_valid_without_gil"
        check_stack(finding, function, module="capsule_defects")


def test_defect_on_python_thread(run):
    """A threading.Thread that released the GIL: its own tid, with a Python thread state."""
    result = run(PRELUDE + """\
import threading
cap = m.new_with_gil()
seen = {}
def work():
    seen["tid"] = threading.get_native_id()
    seen["name"] = m.get_name_without_gil(cap)
t = threading.Thread(target=work)
t.start()
t.join()
print(seen["tid"])
print(seen["name"])
""")
    assert result.returncode == 0, result.describe()
    tid, name = output_after_pid(result).splitlines()
    assert name == PAYLOAD
    (finding,) = result.findings()
    assert finding["api"] == "PyCapsule_GetName", result.describe()
    assert finding["thread"]["tid"] == int(tid) != program_pid(result), result.describe()
    assert finding["thread"]["python_thread_state"] is True, result.describe()
    check_stack(finding, "get_name_without_gil", module="capsule_defects")


def test_thread_state_is_read_directly(run):
    """The GIL check reads the runtime's own thread-state variable (gil.c) rather than calling its
    getter, on every Python of the matrix, and still tells the threads apart: four threads call
    with the GIL, four without, and only the latter are reported."""
    result = run(PRELUDE + """\
import threading
cap = m.new_with_gil()
def work(without_gil):
    for _ in range(100):
        (m.get_name_without_gil if without_gil else m.get_name_with_gil)(cap)
threads = [threading.Thread(target=work, args=(i % 2,)) for i in range(8)]
for t in threads: t.start()
for t in threads: t.join()
""", extsan_args=["--verbosity", "2"])
    assert result.returncode == 0, result.describe()
    assert re.search(r"extsan: reading the (thread state at offset \d+ of the runtime's TLS|"
                     r"GIL holder at _PyRuntime\+\d+)", result.stderr), result.describe()
    assert "using the getter" not in result.stderr, result.describe()
    (finding,) = result.findings()
    assert (finding["api"], finding["count"]) == ("PyCapsule_GetName", 400), result.describe()
    check_stack(finding, "get_name_without_gil", module="capsule_defects")


# ---- subinterpreters ------------------------------------------------------------------------

IN_SUBINTERPRETER = """\
print(m.run_in_subinterpreter(
    "import capsule_defects as m; print(m.get_name_without_gil(m.new_with_gil()), flush=True)"))
"""


def test_defect_inside_subinterpreter(run):
    result = run(PRELUDE + IN_SUBINTERPRETER)
    assert result.returncode == 0, result.describe()
    assert output_after_pid(result) == PAYLOAD + "\n0", result.describe()
    check_findings(result, one("PyCapsule_GetName", "get_name_without_gil"), program_pid(result))


def test_clean_inside_subinterpreter(run):
    result = run(PRELUDE + IN_SUBINTERPRETER.replace("_without_gil", "_with_gil"))
    result.check_silent(program_pid(result))
    assert output_after_pid(result) == PAYLOAD + "\n0", result.describe()


# ---- protection, halting, exit paths ----------------------------------------------------------


def test_no_protect_still_reports(run):
    """--no-protect: a non-allocating call (safe on every version) is still reported."""
    result = run(PRELUDE + "print(m.get_name_without_gil(m.new_with_gil()))\n", extsan_args=["--no-protect"])
    assert result.returncode == 0, result.describe()
    assert output_after_pid(result) == PAYLOAD, result.describe()
    check_findings(result, one("PyCapsule_GetName", "get_name_without_gil"), program_pid(result))


HALT_PROGRAM = PRELUDE + "print('before', flush=True)\nm.new_without_gil()\nprint('after', flush=True)\n"


def test_halt_on_error(run):
    result = run(HALT_PROGRAM, extsan_args=["--halt-on-error"])
    assert result.returncode == HALT_STATUS, result.describe()
    assert output_after_pid(result) == "before", result.describe()
    check_findings(result, one("PyCapsule_New", "new_without_gil"), program_pid(result))
    text = stderr_finding_lines(result.stderr, program_pid(result))
    assert [line for line in text if KIND in line], result.describe()


def test_halt_exitcode_option(run):
    result = run(HALT_PROGRAM, env={"EXTSAN_OPTIONS": "halt_on_error=1:halt_exitcode=77"})
    assert result.returncode == 77, result.describe()
    assert output_after_pid(result) == "before", result.describe()
    check_findings(result, one("PyCapsule_New", "new_without_gil"), program_pid(result))


def test_halt_on_error_clean_program_runs_to_the_end(run):
    result = run(HALT_PROGRAM.replace("_without_gil", "_with_gil"), extsan_args=["--halt-on-error"])
    result.check_silent(program_pid(result))
    assert output_after_pid(result) == "before\nafter", result.describe()


@pytest.mark.parametrize("status", [0, 3])
def test_os_exit_after_defect_still_reports(run, status):
    """os._exit skips atexit: the report is written all the same, and the status is kept."""
    result = run(PRELUDE + "cap = m.new_without_gil()\nprint(m.get_pointer_with_gil(cap), flush=True)\n"
                 "os._exit(%d)\n" % status)
    assert result.returncode == status, result.describe()
    assert output_after_pid(result) == "42", result.describe()
    check_findings(result, one("PyCapsule_New", "new_without_gil"), program_pid(result))


FORK_PROGRAM = PRELUDE + """\
cap = m.new_without_gil()
child = os.fork()
if child == 0:
    m.get_name_without_gil(cap)
    os._exit(0)
_, status = os.waitpid(child, 0)
print("child", child, status)
"""


def test_forked_child_reports_for_itself(run):
    """The child's defect under the child's pid; the parent's, made before the fork, once."""
    result = run(FORK_PROGRAM)
    assert result.returncode == 0, result.describe()
    parent = program_pid(result)
    words = output_after_pid(result).split()
    assert words[0] == "child" and words[2] == "0", result.describe()
    child = int(words[1])
    findings = result.findings()
    assert sorted((f["api"], f["pid"]) for f in findings) == \
        sorted([("PyCapsule_New", parent), ("PyCapsule_GetName", child)]), result.describe()
    for finding in findings:
        pid = finding["pid"]
        (expect,) = one(finding["api"], "new_without_gil" if pid == parent else "get_name_without_gil")
        check_finding(finding, expect, pid)
    pids = sorted(p.get("pid") for p in result.report["processes"])
    assert pids == sorted([parent, child]), result.describe()
    for pid in pids:  # the child has the parent's argv, and reports to its end too
        result.check_process_checked(pid)


def test_log_dir_one_report_per_process(python, fixtures, tmp_path, shim_libraries):
    """EXTSAN_OPTIONS=log_dir=DIR with the shim preloaded directly: extsan.<pid>.json per
    process, each holding that process's own findings."""
    logs = tmp_path / "logs"
    logs.mkdir()
    env = base_env(fixtures, {"LD_PRELOAD": str(BUILD / "libextsan.so"),
                              "EXTSAN_OPTIONS": "log_dir=%s:text_report=0" % logs})
    out = subprocess.run([str(python.path), "-c", FORK_PROGRAM], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env, cwd=str(tmp_path), timeout=180)
    describe = "status %d\n%s\n%s" % (out.returncode, out.stdout, out.stderr)
    assert out.returncode == 0, describe
    lines = out.stdout.splitlines()
    parent, child = int(lines[0].split()[1]), int(lines[1].split()[1])
    files = sorted(p.name for p in logs.iterdir())
    expected = ["extsan.%d.json" % parent, "extsan.%d.json" % child, "extsan-symbols.tsv"]
    assert files == sorted(expected), describe
    for pid, api in ((parent, "PyCapsule_New"), (child, "PyCapsule_GetName")):
        report = json.loads((logs / ("extsan.%d.json" % pid)).read_text())
        assert report.get("extsan") == 1, report
        assert (report.get("pid"), report.get("complete")) == (pid, True), json.dumps(report, indent=1)
        apis = [f["api"] for f in report["findings"] if f["kind"] == KIND]
        assert apis == [api], json.dumps(report, indent=1)
        assert all(f.get("pid", pid) == pid for f in report["findings"]), json.dumps(report, indent=1)


# ---- programs that must stay silent -----------------------------------------------------------


def test_python_pass_is_silent(python, tmp_path):
    result = run_extsan(python, None, tmp_path, code="pass")
    result.check_silent()
    assert result.stdout == "", result.describe()


STDLIB_WORKLOAD = r'''
import asyncio, ctypes, datetime, decimal, json, pickle, sqlite3, threading, unicodedata
from concurrent.futures import ThreadPoolExecutor

def work(i):
    d = decimal.Decimal(i) / decimal.Decimal(7)
    when = datetime.datetime(2024, 1, 1) + datetime.timedelta(days=i)
    blob = json.dumps({"i": i, "d": str(d), "when": when.isoformat()})
    back = pickle.loads(pickle.dumps((json.loads(blob), d, when)))
    db = sqlite3.connect(":memory:")
    db.execute("create table t (i integer, s text)")
    db.executemany("insert into t values (?, ?)", [(k, str(k)) for k in range(50)])
    total = db.execute("select sum(i) from t").fetchone()[0]
    db.close()
    name = unicodedata.name("\N{GREEK SMALL LETTER ALPHA}")
    return back[0]["i"], total, name

with ThreadPoolExecutor(max_workers=4) as pool:
    results = list(pool.map(work, range(16)))
assert results[3] == (3, 1225, "GREEK SMALL LETTER ALPHA"), results[3]

libc = ctypes.CDLL(None)
assert libc.getpid() == __import__("os").getpid()
buf = ctypes.create_string_buffer(b"capsule", 16)
assert libc.strlen(buf) == 7
callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)(lambda x: x * 2)
assert callback(21) == 42

async def tick(n):
    await asyncio.sleep(0)
    return n * n

async def main():
    return sum(await asyncio.gather(*(tick(n) for n in range(10))))

assert asyncio.run(main()) == 285

lock = threading.Lock()
counter = [0]
def bump():
    for _ in range(1000):
        with lock:
            counter[0] += 1
threads = [threading.Thread(target=bump) for _ in range(4)]
for t in threads: t.start()
for t in threads: t.join()
assert counter[0] == 4000
print("workload ok")
'''


def test_stdlib_workload_is_silent(python, tmp_path):
    """The standard library uses capsules internally (datetime's C API, unicodedata's, ctypes,
    decimal, sqlite3, ...), from many threads: none of it is a finding."""
    script = tmp_path / "workload.py"
    script.write_text(STDLIB_WORKLOAD)
    result = run_extsan(python, None, tmp_path, script=script)
    result.check_silent()
    assert result.stdout == "workload ok\n", result.describe()


# ---- bad options --------------------------------------------------------------------------------

BAD_OPTIONS = ["stack_depth=x", "stack_depth=0", "stack_depth=999", "no_such_option=1",
               "halt_on_error=maybe"]


def names_option(line, name):
    """True when the message names the option `name` as one (`option stack_depth: ...`,
    `unknown option 'no_such_option'`), not merely somewhere in a quoted text."""
    return re.search(r"\boption '?%s\b" % re.escape(name), line) is not None


def _cli(python, tmp_path, extsan_args=(), env=None):
    command = [str(python.path), "-c", "print('ran')"]
    return subprocess.run([str(EXTSAN), "run"] + list(extsan_args) + ["--"] + command,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=base_env(None, env), cwd=str(tmp_path), timeout=180)


def test_bad_flag_value_stops_the_cli(python, tmp_path, shim_libraries):
    line = check_stopped_before_command(_cli(python, tmp_path, ["--stack-depth", "x"]))
    assert "stack-depth" in line or "stack_depth" in line, line


@pytest.mark.parametrize("options", BAD_OPTIONS)
def test_bad_extsan_options_stop_the_cli(python, tmp_path, shim_libraries, options):
    line = check_stopped_before_command(_cli(python, tmp_path, env={"EXTSAN_OPTIONS": options}))
    assert names_option(line, options.split("=")[0]), line


@pytest.mark.parametrize("options", BAD_OPTIONS)
def test_bad_extsan_options_stop_the_shim(python, tmp_path, shim_libraries, options):
    """The shim preloaded without the CLI refuses them too, before the program runs: one line
    naming the option and status 125, as README promises for every failure of extsan itself."""
    env = base_env(None, {"LD_PRELOAD": str(BUILD / "libextsan.so"), "EXTSAN_OPTIONS": options})
    out = subprocess.run([str(python.path), "-c", "print('ran')"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env, cwd=str(tmp_path), timeout=180)
    line = check_stopped_before_command(out)
    assert names_option(line, options.split("=")[0]), line


# ---- the demo -----------------------------------------------------------------------------------


def demo_line(text):
    """The number of the one line of demo.py that holds text."""
    numbers = [n for n, line in enumerate(DEMO.read_text().splitlines(), 1) if text in line]
    assert len(numbers) == 1, "%d lines of %s hold %r" % (len(numbers), DEMO, text)
    return numbers[0]


def python_frames(finding, depth):
    """The innermost `depth` Python frames of a finding as (file base name, function, line)."""
    return [(os.path.basename(f["file"]), f["function"], f["line"]) for f in finding["python_stack"][:depth]]


def holder_callback_offset(python, fixtures, tmp_path):
    """Where gc_defects.Holder keeps its callback, as the extension itself says (OFFSETS)."""
    out = run_captured([str(python.path), "-c", "import gc_defects; print(gc_defects.OFFSETS['Holder.callback'])"],
                       base_env(fixtures), tmp_path)
    assert out.returncode == 0, out.stderr
    return int(out.stdout)


def test_demo(python, tmp_path, fixtures):
    """What the demo is there to show: its two GIL-less capsule calls, each with the native
    frame of the defect's line and the Python line of demo.py that made the call, and the
    Holder whose callback hides a reference to it: one hidden-reference and one leaked cycle,
    allocated by the line of make_leaky_holder that made it. Nothing else."""
    result = run_extsan(python, fixtures, tmp_path, script=DEMO)
    assert result.returncode == 0, result.describe()
    assert "demo: done" in result.stdout, result.describe()
    pid = int(re.search(r"pid (\d+), under extsan\n", result.stdout).group(1))
    expects = one("PyCapsule_New", "new_without_gil") + one("PyCapsule_GetPointer", "get_pointer_without_gil")
    check_findings(result, expects, pid)
    assert sorted(f["kind"] for f in result.all_findings()) == \
        sorted([KIND, KIND, "hidden-reference", "leaked-cycle"]), result.describe()
    called_main = ("demo.py", "<module>", demo_line("sys.exit(main())"))
    calls = {"PyCapsule_New": "capsule = capsule_defects.new_without_gil()",
             "PyCapsule_GetPointer": "value = capsule_defects.get_pointer_without_gil(capsule)"}
    for finding in result.findings():
        # The Python code that called into the extension, read while the GIL was borrowed.
        assert python_frames(finding, 2) == [("demo.py", "main", demo_line(calls[finding["api"]])),
                                             called_main], result.describe()

    # The demo's second half: a Holder whose callback refers back to it, leaked.
    assert "1 Holder still alive" in result.stdout, result.describe()
    allocated = [("demo.py", "make_leaky_holder", demo_line("holder = gc_defects.Holder()")),
                 ("demo.py", "main", demo_line("    make_leaky_holder()")), called_main]
    offset = holder_callback_offset(python, fixtures, tmp_path)
    (hidden,) = result.findings("hidden-reference")
    (leaked,) = result.findings("leaked-cycle")
    for finding in (hidden, leaked):
        where = json.dumps(finding, indent=1)
        assert (finding["type"], finding["pid"], finding["count"]) == ("gc_defects.Holder", pid, 1), where
        assert python_frames(finding, 3) == allocated, where
        assert any(names_function(f, "PyInit_gc_defects") for f in finding["type_stack"]), where
    assert hidden["instances"] == 1, result.describe()
    assert [(r["type"], r["offset"], r["count"]) for r in hidden["referents"]] == [("function", offset, 1)], \
        result.describe()
    assert leaked["chain"] == ("gc_defects.Holder --hidden @+%d--> function --__closure__--> tuple --[0]--> cell "
                               "--cell_contents--> gc_defects.Holder" % offset), result.describe()


# ---- binding libraries ----------------------------------------------------------------------------

NB_PRELUDE = """\
import os
import nb_capsule as nb
print("pid", os.getpid(), flush=True)
"""


@pytest.mark.pythons(*NANOBIND_IDS)
def test_nanobind_capsule_in_released_scope(run, fixtures):
    """nb::capsule built inside nb::gil_scoped_release: its constructor's PyCapsule_New and
    PyCapsule_SetContext, both naming the binding function; the program goes on normally."""
    extension_path(fixtures, "nb_capsule")
    result = run(NB_PRELUDE + "cap = nb.in_released_scope()\nprint(nb.payload(cap))\ndel cap\n"
                 "print(nb.cleanups())\n")
    assert result.returncode == 0, result.describe()
    assert output_after_pid(result) == "42\n1", result.describe()
    pid = program_pid(result)
    findings = result.findings()
    assert sorted(f["api"] for f in findings) == ["PyCapsule_New", "PyCapsule_SetContext"], result.describe()
    for finding in findings:
        # Both calls are made on the constructor's line of the binding function.
        expect = Expect("PyCapsule_New", "nb_capsule_in_released_scope", ("nb_capsule.payload",))
        check_finding(finding, expect, pid, module="nb_capsule")


@pytest.mark.pythons(*NANOBIND_IDS)
@pytest.mark.parametrize("fixed", ["after_released_scope", "with_acquire"])
def test_nanobind_fixed_twins_are_silent(run, fixtures, fixed):
    extension_path(fixtures, "nb_capsule")
    result = run(NB_PRELUDE + "cap = nb.%s()\nprint(nb.payload(cap))\ndel cap\n"
                 "print(nb.cleanups())\n" % fixed)
    result.check_silent(program_pid(result))
    assert output_after_pid(result) == "42\n1", result.describe()


PB_PRELUDE = """\
import os
import pb_capsule as pb
print("pid", os.getpid(), flush=True)
"""


def test_pybind11_capsule_destroyed_in_released_scope(run, fixtures):
    """A py::capsule whose last reference dies inside py::gil_scoped_release: one "capsule
    destruction" finding; its destructor ran once, and the program goes on."""
    extension_path(fixtures, "pb_capsule")
    result = run(PB_PRELUDE + "print(pb.dies_in_released_scope(), pb.destructions())\n")
    assert result.returncode == 0, result.describe()
    assert output_after_pid(result) == "42 1", result.describe()
    expects = one("capsule destruction", "pb_capsule_dies_in_released_scope", ("pb_capsule.payload",))
    check_findings(result, expects, program_pid(result), module="pb_capsule")


def test_pybind11_fixed_twin_is_silent(run, fixtures):
    extension_path(fixtures, "pb_capsule")
    result = run(PB_PRELUDE + "print(pb.dies_with_gil(), pb.destructions())\n")
    result.check_silent(program_pid(result))
    assert output_after_pid(result) == "42 1", result.describe()
