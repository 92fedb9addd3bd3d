"""extsan never harms the process it runs in and never loses a finding it made.

Each test plants what real code does (tests/fixtures/host_stress.c: instances that die out of
extsan's sight, deaths by signal, capsule threads racing a fork, ...) and checks that the program
ends exactly as it would without extsan and that every finding reaches the merged report.
"""

import json
import os
import re
import signal
import subprocess
import time

import pytest

from conftest import (BUILD, EXTSAN, KIND, Run, base_env, check_report, check_stack, program_pid,
                      run_captured)

PRELUDE = "import os, sys, host_stress\n"


# ---- registry records that outlive their objects ----------------------------------------------

UNSEEN = PRELUDE + """
print("pid", os.getpid())
for cls in (host_stress.UnseenChild, host_stress.UnseenGcChild):
    objs = [cls() for i in range(500)]
    del objs
# The freed blocks are reused by objects of the same size class, and by raw data.
junk = [bytes(80) for i in range(5000)] + [b"\\xff" * 90 for i in range(5000)]
junk += [bytearray(150) for i in range(4000)]
print("done")
"""


def test_instances_freed_unseen_do_not_crash_the_analysis(run):
    """Instances freed without passing through a wrapped slot leave stale registry records; the
    exit analysis proves each record alive before reading its object, and drops the stale."""
    result = run(UNSEEN, extsan_args=["--verbosity", "1"])
    assert result.returncode == 0, result.describe()
    assert result.stdout.endswith("done\n"), result.describe()
    dropped = re.findall(r"dropped (\d+) stale registry records", result.stderr)
    assert dropped and int(dropped[0]) > 0, result.describe()
    result.check_silent(program_pid(result))


CTYPES = """
import ctypes, os
print("pid", os.getpid())
for i in range(50):
    ctypes.CDLL("libz.so.1").zlibVersion
callbacks = [ctypes.CFUNCTYPE(ctypes.c_int)(lambda: 0) for i in range(2000)]
del callbacks
junk = [bytearray(150) for i in range(4000)]
print("done")
"""


def test_ctypes_program_ends_as_without_extsan(run):
    """The ctypes program of issue 8 (exit 139 under extsan before): status 0, complete report."""
    result = run(CTYPES)
    assert result.returncode == 0, result.describe()
    assert result.stdout.endswith("done\n"), result.describe()
    result.check_silent(program_pid(result))


# ---- fork and vfork ----------------------------------------------------------------------------

FORK_WHILE_BORROWING = PRELUDE + """
import time
print("pid", os.getpid())
host_stress.start_capsule_threads(8)
hung = 0
for i in range(200):
    child = os.fork()
    if child == 0:
        os._exit(0)
    deadline = time.monotonic() + 10
    while not os.waitpid(child, os.WNOHANG)[0]:
        if time.monotonic() > deadline:
            hung += 1
            os.kill(child, 9)
            os.waitpid(child, 0)
            break
        time.sleep(0.001)
host_stress.stop_capsule_threads()
print("hung", hung)
"""


def test_fork_while_threads_borrow_the_gil_never_hangs(run):
    """Raw threads make capsules without the GIL (extsan borrows it for them, making thread
    states) while the main thread forks: no child may hang in PyOS_AfterFork_Child (3.9-3.11
    delete the other threads' states under a lock they re-initialise only later)."""
    result = run(FORK_WHILE_BORROWING, timeout=600)
    assert result.returncode == 0, result.describe()
    assert "hung 0\n" in result.stdout, result.describe()
    findings = result.findings(KIND)
    assert findings and {f["api"] for f in findings} <= {"PyCapsule_New", "capsule destruction"}, \
        result.describe()


VFORK_EXEC_FAILS = """
import os, subprocess, capsule_defects
print("pid", os.getpid())
capsule_defects.new_without_gil()
for i in range(20):
    try:
        subprocess.run(["/nonexistent/extsan-test-binary"])
    except FileNotFoundError:
        pass
print("done")
"""


def test_vfork_child_that_fails_to_exec_writes_no_report(run):
    """subprocess's vfork child calls _exit when exec fails; it shares the parent's memory and
    is no Python process of its own: it must not write a report (with the parent's findings)."""
    result = run(VFORK_EXEC_FAILS)
    assert result.returncode == 0, result.describe()
    pid = program_pid(result)
    result.check_process_checked(pid)
    assert [p["pid"] for p in result.report["processes"]] == [pid], result.describe()
    assert {f["pid"] for f in result.report["findings"]} == {pid}, result.describe()
    assert len(result.findings(KIND)) == 1, result.describe()


# ---- deaths by signal --------------------------------------------------------------------------

CRASH = """
import os, signal, sys, capsule_defects, host_stress
print("pid", os.getpid(), flush=True)
capsule_defects.new_without_gil()
{crash}
print("survived", flush=True)
"""

CRASHES = {
    # id: (statement, signal, the function whose frame names the crash site)
    "segv": ("host_stress.crash_segv()", signal.SIGSEGV, "crash_segv"),
    "abort": ("host_stress.crash_abort()", signal.SIGABRT, "crash_abort"),
    "bus": ("host_stress.crash_signal(signal.SIGBUS)", signal.SIGBUS, "crash_signal"),
    "fpe": ("host_stress.crash_signal(signal.SIGFPE)", signal.SIGFPE, "crash_signal"),
    "ill": ("host_stress.crash_signal(signal.SIGILL)", signal.SIGILL, "crash_signal"),
}


def check_died_with_report(result, signal_number, crash=True):
    """The process died of the signal (the status a shell reports), its report says so, and
    the finding made before the death is in it, in JSON and on stderr."""
    assert result.returncode == 128 + signal_number, result.describe()
    pid = program_pid(result)
    (process,) = [p for p in result.report["processes"] if p["pid"] == pid]
    assert process["signal"] == signal.Signals(signal_number).name, result.describe()
    assert process["complete"] is False, result.describe()
    assert len(result.findings(KIND)) == 1, result.describe()
    assert "capsule-without-gil" in result.stderr, result.describe()
    deadly = result.findings("deadly-signal")
    assert len(deadly) == (1 if crash else 0), result.describe()
    return deadly[0] if crash else None


@pytest.mark.parametrize("crash", CRASHES, ids=str)
def test_crash_is_reported_and_the_process_dies_of_it(run, crash):
    """A crash is a deadly-signal finding with the crashing frame (function, file:line) and the
    Python code that called it; the findings made before are kept; the process dies of the same
    signal, as without extsan."""
    statement, number, function = CRASHES[crash]
    result = run(CRASH.format(crash=statement))
    finding = check_died_with_report(result, number)
    assert finding["signal"] == signal.Signals(number).name, result.describe()
    check_stack(finding, function, api="deadly-signal", module="host_stress",
                inline_headers=("raise.c", "pthread_kill.c", "abort.c"))
    assert finding["python_stack"] and finding["python_stack"][0]["line"] == 5, result.describe()
    assert "deadly-signal: %s" % signal.Signals(number).name in result.stderr, result.describe()


def test_process_that_does_not_crash_reports_no_deadly_signal(run):
    """The crash programs' clean twin: the same process, the crash not called. Its report is
    complete, names no signal, and holds only the capsule finding it made."""
    result = run(CRASH.format(crash="pass"))
    assert result.returncode == 0 and result.stdout.endswith("survived\n"), result.describe()
    pid = program_pid(result)
    result.check_process_checked(pid)
    (process,) = [p for p in result.report["processes"] if p["pid"] == pid]
    assert process["signal"] is None and process["analysis"] == "done", result.describe()
    assert result.findings("deadly-signal") == [], result.describe()
    assert len(result.findings(KIND)) == 1, result.describe()


def test_crash_under_faulthandler_is_reported_after_its_traceback(run):
    """faulthandler (pytest turns it on) puts back the disposition it found and raises again:
    its traceback comes first, then extsan's report, and the process dies of SIGSEGV."""
    result = run("import faulthandler; faulthandler.enable()\n" +
                 CRASH.format(crash="host_stress.crash_segv()"))
    check_died_with_report(result, signal.SIGSEGV)
    assert "Fatal Python error: Segmentation fault" in result.stderr, result.describe()
    assert result.stderr.index("Fatal Python error") < result.stderr.index("deadly-signal"), \
        result.describe()


def test_crash_inside_malloc_still_writes_the_report(run):
    """glibc aborts inside free() on a corrupt heap, holding its lock: the full report cannot be
    written (malloc would wait forever, or abort again). The report written first, without
    allocating, is there: every finding, the deadly signal with its unsymbolised stack."""
    result = run(CRASH.format(crash="host_stress.crash_in_malloc()"), timeout=120)
    finding = check_died_with_report(result, signal.SIGABRT)
    modules = [os.path.basename(frame["module"] or "") for frame in finding["stack"]]
    assert any(m.startswith("libc.so") for m in modules), result.describe()
    assert any(m.startswith("host_stress.") for m in modules), result.describe()


def test_abort_in_a_py_atexit_callback_keeps_the_exit_analysis(run):
    """nanobind's leak check aborts from a Py_AtExit callback (NB_ABORT_ON_LEAK), after the
    exit analysis ran: its findings (here a hidden reference and the cycle it leaks) are in the
    report, with the deadly signal."""
    code = CRASH.format(crash="host_stress.abort_at_exit()") + """
import gc_defects
def leak():
    holder = gc_defects.Holder()
    holder.set_callback(lambda: holder.touch())
leak()
"""
    result = run(code)
    finding = check_died_with_report(result, signal.SIGABRT)
    check_stack(finding, "abort_now", api="deadly-signal", module="host_stress",
                inline_headers=("raise.c", "pthread_kill.c", "abort.c"))
    kinds = {f["kind"] for f in result.report["findings"]}
    assert {"hidden-reference", "leaked-cycle"} <= kinds, result.describe()
    pid = program_pid(result)
    (process,) = [p for p in result.report["processes"] if p["pid"] == pid]
    assert process["analysis"] == "done", result.describe()


TERMINATED = """
import os, signal, sys, time, capsule_defects
{setup}
capsule_defects.new_without_gil()
print("pid", os.getpid(), flush=True)
time.sleep(60)
"""


def run_and_signal(python, fixtures, tmp_path, code, signal_number):
    """Runs code under `extsan run --json`, sends it signal_number once it printed its pid;
    returns the Run."""
    report_path = tmp_path / "report.json"
    command = [str(python.path), "-c", code]
    process = subprocess.Popen([str(EXTSAN), "run", "--json", str(report_path), "--", *command],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=base_env(fixtures), cwd=str(tmp_path))
    seen = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        seen.append(line)
        if line.startswith("pid "):
            process.send_signal(signal_number)
            break
    stdout, stderr = process.communicate(timeout=120)
    report = json.loads(report_path.read_text()) if report_path.exists() else None
    if report is not None:
        check_report(report, report_path)
    return Run(process.returncode, "".join(seen) + stdout, stderr, report, tuple(command))


@pytest.mark.parametrize("setup", ["", "signal.signal(signal.SIGTERM, signal.SIG_DFL)"],
                         ids=["default", "set-to-default"])
def test_termination_signal_flushes_the_report(python, fixtures, tmp_path, setup):
    """SIGTERM (what Pool.terminate() sends) kills the process as without extsan; the findings
    made before are in the report, which names the signal. A program that sets SIG_DFL itself
    gets the same."""
    result = run_and_signal(python, fixtures, tmp_path, TERMINATED.format(setup=setup),
                            signal.SIGTERM)
    check_died_with_report(result, signal.SIGTERM, crash=False)


DISPOSITIONS = """
import os, signal
print("pid", os.getpid())
names = ("SIGSEGV", "SIGBUS", "SIGILL", "SIGFPE", "SIGABRT", "SIGTERM", "SIGHUP", "SIGINT")
print([(n, signal.getsignal(getattr(signal, n))) for n in names])
signal.signal(signal.SIGTERM, lambda *a: print("handled"))
os.kill(os.getpid(), signal.SIGTERM)
print("after")
"""


@pytest.mark.parametrize("faulthandler", ["", "1"], ids=["plain", "faulthandler"])
def test_the_program_sees_the_dispositions_it_would_see_without_extsan(python, run, fixtures,
                                                                     tmp_path, faulthandler):
    """signal.getsignal() answers as without extsan (SIG_DFL where extsan stands in for it),
    with faulthandler on or off, and a handler the program sets runs instead of extsan's."""
    env = {"PYTHONFAULTHANDLER": faulthandler}
    result = run(DISPOSITIONS, env=env)
    bare = run_captured([str(python.path), "-c", DISPOSITIONS], base_env(fixtures, env), tmp_path)
    assert result.returncode == bare.returncode == 0, result.describe()
    assert result.stdout.splitlines()[1:] == bare.stdout.splitlines()[1:], result.describe()
    assert "handled" in result.stdout, result.describe()
    result.check_silent(program_pid(result))


BIG_HEAP_EXIT = """
import os, signal, gc_defects, host_stress
print("pid", os.getpid(), flush=True)
# Python's own handler, as in a terminal: a test run in the background inherits SIGINT ignored
signal.signal(signal.SIGINT, signal.default_int_handler)
holder = gc_defects.Holder()  # a hidden reference: the exit analysis has something to find
holder.set_callback(holder.touch)
heap = [[i] for i in range(1_000_000)]  # an analysis long enough to be interrupted
host_stress.interrupt_when_sigint_handler_changes()  # Ctrl-C as the analysis takes SIGINT over
"""


def test_interrupt_during_the_exit_analysis_is_honoured(run):
    """Ctrl-C while the exit analysis runs stops it: the process ends by SIGINT, as Python ends
    on an unhandled KeyboardInterrupt, and the report says the analysis did not complete. The
    signal comes from a thread of the program, which sends it as soon as SIGINT's handler changes
    (the analysis taking SIGINT over), so that it lands during the analysis on a loaded machine
    too."""
    result = run(BIG_HEAP_EXIT)
    assert result.returncode == 128 + signal.SIGINT, result.describe()
    pid = program_pid(result)
    (process,) = [p for p in result.report["processes"] if p["pid"] == pid]
    assert process["analysis"].startswith("interrupted by SIGINT during"), result.describe()
    assert process["complete"] is True, result.describe()
    assert "the heap analysis did not complete" in result.stderr, result.describe()


# ---- objects loaded out of extsan's dlopen hook --------------------------------------------

OTHER_DLOPEN_HOOK = """
import os, host_stress
print("pid", os.getpid(), flush=True)
assert host_stress.hook_runtime_dlopen() > 0
import capsule_defects
capsule_defects.{call}()
assert host_stress.hooked_load_count() > 0  # the module came through the other hook
print("done")
"""


def test_modules_loaded_through_another_tools_dlopen_hook_are_checked(run):
    """A tool that hooks the runtime's dlopen itself (memray does) takes extsan's hook out of
    the way: modules imported after it are still patched, before their init function is looked
    up, so their GIL-less calls are reported and made safe (3.12+ would crash)."""
    result = run(OTHER_DLOPEN_HOOK.format(call="new_without_gil"))
    assert result.returncode == 0 and result.stdout.endswith("done\n"), result.describe()
    (finding,) = result.findings(KIND)
    check_stack(finding, "new_without_gil", module="capsule_defects")


def test_clean_module_loaded_through_another_tools_dlopen_hook_is_silent(run):
    result = run(OTHER_DLOPEN_HOOK.format(call="new_with_gil"))
    assert result.stdout.endswith("done\n"), result.describe()
    result.check_silent(program_pid(result))


CTYPES_LIBRARY = """
import ctypes, os, sys
print("pid", os.getpid(), flush=True)
library = ctypes.PyDLL(os.path.join(sys.argv[1], "libcapsule_calls.so"))
assert getattr(library, sys.argv[2])() == 1
print("done")
"""


def test_library_loaded_with_ctypes_is_checked(run, fixtures, tmp_path):
    """A library that ctypes loads (its own dlopen call, not the runtime's) is patched before
    ctypes looks up a function of it."""
    script = tmp_path / "ctypes_library.py"
    script.write_text(CTYPES_LIBRARY)
    result = run(script=script, args=[str(fixtures), "capsule_calls_new_without_gil"])
    assert result.returncode == 0 and result.stdout.endswith("done\n"), result.describe()
    (finding,) = result.findings(KIND)
    assert finding["capsule"] == "capsule_calls.payload", result.describe()
    check_stack(finding, "capsule_calls_new_without_gil")


def test_clean_library_loaded_with_ctypes_is_silent(run, fixtures, tmp_path):
    script = tmp_path / "ctypes_library.py"
    script.write_text(CTYPES_LIBRARY)
    result = run(script=script, args=[str(fixtures), "capsule_calls_new_with_gil"])
    assert result.stdout.endswith("done\n"), result.describe()
    result.check_silent(program_pid(result))


# ---- the output directories -----------------------------------------------------------------

PRELOADED_PROGRAM = """
import os, capsule_defects
print("pid", os.getpid(), flush=True)
capsule_defects.new_without_gil()
"""


def run_preloaded(python, fixtures, tmp_path, options):
    """PRELOADED_PROGRAM with the shim preloaded directly (no `extsan run` to check anything
    first), EXTSAN_OPTIONS=options."""
    env = base_env(fixtures, {"LD_PRELOAD": str(BUILD / "libextsan.so"), "EXTSAN_OPTIONS": options})
    return run_captured([str(python.path), "-c", PRELOADED_PROGRAM], env, tmp_path)


def test_log_dir_that_does_not_exist_is_made(python, fixtures, tmp_path, shim_libraries):
    """A log_dir that does not exist is made at start (with its parents), and the report is in
    it, complete."""
    logs = tmp_path / "not" / "yet" / "there"
    out = run_preloaded(python, fixtures, tmp_path, "log_dir=%s:text_report=0" % logs)
    assert out.returncode == 0, out.stderr
    pid = int(out.stdout.split()[1])
    report = json.loads((logs / ("extsan.%d.json" % pid)).read_text())
    assert report["complete"] is True and len(report["findings"]) == 1, report


@pytest.mark.parametrize("option", ["log_dir", "dot_dir"])
def test_output_dir_too_long_stops_the_process_at_start(python, fixtures, tmp_path, shim_libraries,
                                                         option):
    """A directory whose report names would not fit in PATH_MAX is a bad option: one line
    naming it, status 125, before the program runs (rather than every process writing the same
    truncated path)."""
    too_long = str(tmp_path / ("d" * 200)) * 25
    out = run_preloaded(python, fixtures, tmp_path, "%s=%s" % (option, too_long))
    assert out.returncode == 125, out.stderr
    assert out.stdout == "", out.stdout
    (line,) = out.stderr.splitlines()
    assert line.startswith("extsan: EXTSAN_OPTIONS: %s: the path is too long" % option), line


def test_output_dir_that_cannot_be_made_stops_the_process_at_start(python, fixtures, tmp_path,
                                                                   shim_libraries):
    """A log_dir under a file cannot be made: one line naming it, status 125."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    out = run_preloaded(python, fixtures, tmp_path, "log_dir=%s/logs" % blocker)
    assert out.returncode == 125, out.stderr
    (line,) = out.stderr.splitlines()
    assert "log_dir=%s/logs: cannot create" % blocker in line, line


POOLS_TERMINATED_AT_START = """
import multiprocessing, os, sys, time
if __name__ == "__main__":
    print("pid", os.getpid(), flush=True)
    slowest = 0
    for i in range(40):
        started = time.monotonic()
        with multiprocessing.get_context(sys.argv[1]).Pool(2):
            pass  # terminate(): SIGTERM to workers that may still be starting up
        slowest = max(slowest, time.monotonic() - started)
    print("slowest %.2f" % slowest)
"""


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_workers_terminated_while_they_start_die_cleanly(run, tmp_path, method):
    """SIGTERM can arrive anywhere, inside malloc too (a worker starting up): the handler only
    writes what was prepared, without allocating. A full report written there corrupted the
    heap ("malloc assertion failure") or waited for a lock the interrupted code held (the
    5-second watchdog)."""
    script = tmp_path / "pools.py"
    script.write_text(POOLS_TERMINATED_AT_START)
    result = run(script=script, args=[method])
    assert result.returncode == 0, result.describe()
    assert "malloc" not in result.stderr and "Fatal" not in result.stderr, result.describe()
    slowest = float(result.stdout.split("slowest")[1])
    assert slowest < 3, result.describe()
    result.check_process_checked(program_pid(result))


# ---- what the registry holds ----------------------------------------------------------------

ONLY_EXTENSION_TYPES = """
import ctypes, os, _struct, host_stress
print("pid", os.getpid(), flush=True)
host_stress.ready_runtime_types()
words = [str(i) * 3 for i in range(1000)] + [bytes(range(256)).decode("latin-1")] * 10
callbacks = [ctypes.CFUNCTYPE(ctypes.c_int)(lambda: 0) for i in range(10)]
"""


def test_the_registry_holds_extension_types_only(run):
    """Types of the runtime (str, readied again by an extension) and of the standard library
    (ctypes, _struct) are not registered: their instances are never read as holders."""
    result = run(ONLY_EXTENSION_TYPES, extsan_args=["--verbosity", "2"])
    assert result.returncode == 0, result.describe()
    registered = re.findall(r"^extsan: registered type (\S+) .* created by (.*)$", result.stderr,
                            re.M)
    names = {name for name, _ in registered}
    assert "host_stress.UnseenBase" in names, result.describe()
    assert not names & {"str", "list"}, result.describe()
    assert not [creator for _, creator in registered if "/lib-dynload/" in creator
                or "/lib/python3" in creator and "site-packages" not in creator], result.describe()
    result.check_silent(program_pid(result))


# ---- what extsan keeps alive --------------------------------------------------------------------

COMPILED_AS_IT_GOES = PRELUDE + """
import gc, weakref
print("pid", os.getpid())
codes = []
for i in range(200):
    code = compile("[host_stress.UnseenBase() for i in range(3)]", "<made %d>" % i, "eval")
    codes.append(weakref.ref(code))
    eval(code)
    del code
gc.collect()
print("alive", sum(1 for ref in codes if ref() is not None))
"""


def test_code_compiled_as_it_goes_is_not_kept_alive(run):
    """Code objects that made extension instances (each a new allocation site) die as they would
    without extsan: sites do not hold them (eval and exec would otherwise grow the heap without
    bound, and the reference-leak check would see them leaked)."""
    result = run(COMPILED_AS_IT_GOES)
    assert result.returncode == 0, result.describe()
    assert result.stdout.endswith("alive 0\n"), result.describe()
    result.check_silent(program_pid(result))
