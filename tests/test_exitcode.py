"""Option `exitcode` (LeakSanitizer's): a process that reported findings no rule suppressed and
would have exited 0 exits with it instead; 0, the default, keeps the program's own status.

- The process itself (detector/runtime/lifecycle.c), with the shim preloaded directly: a planted defect
  (a GIL-less capsule call, found when made; a hidden reference, found by the exit analysis)
  ending at the end of the script, by sys.exit(0) or by os._exit(0) exits with exitcode; its
  clean twin exits 0; a program that fails keeps its own status; a suppressed finding changes
  nothing; exitcode=0 keeps 0.
- `extsan run` (scripts/extsan): the run-wide result the same way, also for a finding of a
  subprocess whose status the command ignored.
- A malformed value stops the run before the command, with one line and status 125.
"""

import re
import subprocess

import pytest

from conftest import (
    BUILD,
    EXTSAN,
    FIXTURES_SRC,
    base_env,
    check_stopped_before_command,
    program_pid,
    run_captured,
    stderr_finding_lines,
)

EXITCODE = 23
WORKLOADS = FIXTURES_SRC / "gc_workloads.py"

PRELUDE = """\
import os, sys
import capsule_defects as m
print("pid", os.getpid(), flush=True)
"""
# A GIL-less PyCapsule_GetName (the defect), or the same call with the GIL held (its twin).
DEFECT = PRELUDE + "m.get_name_without_gil(m.new_with_gil())\nprint('done')\n"
CLEAN = DEFECT.replace("_without_gil", "_with_gil")

# program ending: (code appended, the program's own status)
ENDINGS = {
    "end-of-script": ("", 0),
    "sys.exit(0)": ("sys.exit(0)\n", 0),
    "os._exit(0)": ("sys.stdout.flush()\nos._exit(0)\n", 0),
    "sys.exit(4)": ("sys.exit(4)\n", 4),
    "exception": ("raise RuntimeError('the program fails')\n", 1),
}


def preloaded(python, fixtures, tmp_path, command, options):
    """command (a Python argv) with the shim preloaded and EXTSAN_OPTIONS=options."""
    env = base_env(fixtures, {"LD_PRELOAD": str(BUILD / "libextsan.so"), "EXTSAN_OPTIONS": options})
    return run_captured([str(python.path)] + command, env, tmp_path)


def describe(out):
    return "status %d\n--- stdout ---\n%s\n--- stderr ---\n%s" % (out.returncode, out.stdout, out.stderr)


def check_reported(out, count=1):
    """The process reported `count` findings on stderr: it ran checked, to its end."""
    pid = program_pid(out)
    summary = [line for line in stderr_finding_lines(out.stderr, pid) if "SUMMARY" in line]
    assert summary and re.search(r"SUMMARY: %d finding" % count, summary[0]), describe(out)


# ---- the process ------------------------------------------------------------------------------


@pytest.mark.parametrize("ending", list(ENDINGS))
def test_defect_exits_with_exitcode_unless_the_program_failed(python, fixtures, tmp_path,
                                                              shim_libraries, ending):
    code, own_status = ENDINGS[ending]
    out = preloaded(python, fixtures, tmp_path, ["-c", DEFECT + code], "exitcode=%d" % EXITCODE)
    assert out.returncode == (EXITCODE if own_status == 0 else own_status), describe(out)
    assert out.stdout.splitlines()[1:] == ["done"], describe(out)  # nothing lost on the way out
    check_reported(out)


@pytest.mark.parametrize("ending", list(ENDINGS))
def test_clean_twin_keeps_its_status(python, fixtures, tmp_path, shim_libraries, ending):
    code, own_status = ENDINGS[ending]
    out = preloaded(python, fixtures, tmp_path, ["-c", CLEAN + code], "exitcode=%d" % EXITCODE)
    assert out.returncode == own_status, describe(out)
    assert out.stdout.splitlines()[1:] == ["done"], describe(out)
    assert stderr_finding_lines(out.stderr) == [], describe(out)


def test_default_keeps_status_zero(python, fixtures, tmp_path, shim_libraries):
    out = preloaded(python, fixtures, tmp_path, ["-c", DEFECT], "")
    assert out.returncode == 0, describe(out)
    check_reported(out)


def test_suppressed_finding_keeps_status_zero(python, fixtures, tmp_path, shim_libraries):
    rules = tmp_path / "extsan.supp"
    rules.write_text("capsule-without-gil:get_name_without_gil\n")
    out = preloaded(python, fixtures, tmp_path, ["-c", DEFECT],
                    "exitcode=%d:suppressions=%s" % (EXITCODE, rules))
    assert out.returncode == 0, describe(out)
    assert stderr_finding_lines(out.stderr) == [], describe(out)


@pytest.mark.parametrize("variant", ["defect", "fixed"])
def test_finding_of_the_exit_analysis(python, fixtures, tmp_path, shim_libraries, variant):
    """A hidden reference is found by the exit analysis (a Python atexit callback), after the
    program's last line: it still sets the status; its fixed twin does not."""
    out = preloaded(python, fixtures, tmp_path, [str(WORKLOADS), "holder", "global", variant],
                    "exitcode=%d" % EXITCODE)
    assert "workload ok" in out.stdout, describe(out)
    if variant == "defect":
        assert out.returncode == EXITCODE, describe(out)
        assert "hidden-reference" in out.stderr, describe(out)
    else:
        assert out.returncode == 0, describe(out)
        assert stderr_finding_lines(out.stderr) == [], describe(out)


# ---- extsan run ---------------------------------------------------------------------------------

# The command's own process is clean; a subprocess it starts makes the defect and the command
# ignores how that ended.
SUBPROCESS = """\
import os, subprocess, sys
print("pid", os.getpid(), flush=True)
child = subprocess.run([sys.executable, "-c", %r])
print("child status", child.returncode)
""" % DEFECT.replace("print('done')\n", "")


def extsan_run(python, fixtures, tmp_path, extsan_args, code, env=None):
    command = [str(EXTSAN), "run"] + list(extsan_args) + ["--", str(python.path), "-c", code]
    return run_captured(command, base_env(fixtures, env), tmp_path)


def test_run_exits_with_exitcode(python, fixtures, tmp_path, shim_libraries):
    """The command's process exits with exitcode itself: the run exits with the command's."""
    out = extsan_run(python, fixtures, tmp_path, ["--exitcode", str(EXITCODE)], DEFECT)
    assert out.returncode == EXITCODE, describe(out)


def test_run_counts_the_findings_of_every_process(python, fixtures, tmp_path, shim_libraries):
    out = extsan_run(python, fixtures, tmp_path, ["--exitcode", str(EXITCODE)], SUBPROCESS)
    assert out.returncode == EXITCODE, describe(out)
    # The subprocess itself exited with exitcode, which the command ignored.
    assert "child status %d" % EXITCODE in out.stdout, describe(out)
    assert out.stderr.rstrip().splitlines()[-1] == \
        "extsan: 1 finding no rule suppressed: exit status %d (option exitcode)" % EXITCODE, describe(out)


def test_run_exitcode_from_extsan_options(python, fixtures, tmp_path, shim_libraries):
    out = extsan_run(python, fixtures, tmp_path, [], SUBPROCESS,
                     env={"EXTSAN_OPTIONS": "exitcode=%d" % EXITCODE})
    assert out.returncode == EXITCODE, describe(out)


def test_run_without_exitcode_keeps_status_zero(python, fixtures, tmp_path, shim_libraries):
    out = extsan_run(python, fixtures, tmp_path, [], SUBPROCESS)
    assert out.returncode == 0, describe(out)
    assert "child status 0" in out.stdout, describe(out)


def test_run_clean_command_exits_zero(python, fixtures, tmp_path, shim_libraries):
    out = extsan_run(python, fixtures, tmp_path, ["--exitcode", str(EXITCODE)], CLEAN)
    assert out.returncode == 0, describe(out)
    assert out.stderr == "", describe(out)


def test_run_keeps_the_failing_command_status(python, fixtures, tmp_path, shim_libraries):
    out = extsan_run(python, fixtures, tmp_path, ["--exitcode", str(EXITCODE)], SUBPROCESS + "sys.exit(4)\n")
    assert out.returncode == 4, describe(out)
    assert "exitcode" not in out.stderr, describe(out)


def test_run_suppressed_finding_keeps_status_zero(python, fixtures, tmp_path, shim_libraries):
    rules = tmp_path / "extsan.supp"
    rules.write_text("capsule-without-gil:get_name_without_gil\n")
    out = extsan_run(python, fixtures, tmp_path,
                     ["--exitcode", str(EXITCODE), "--suppressions", str(rules)], SUBPROCESS)
    assert out.returncode == 0, describe(out)
    assert "child status 0" in out.stdout, describe(out)


# ---- malformed values ---------------------------------------------------------------------------

BAD_VALUES = ["x", "-1", "256", ""]


@pytest.mark.parametrize("value", BAD_VALUES)
def test_bad_value_stops_the_process(python, tmp_path, shim_libraries, value):
    env = base_env(None, {"LD_PRELOAD": str(BUILD / "libextsan.so"), "EXTSAN_OPTIONS": "exitcode=" + value})
    out = subprocess.run([str(python.path), "-c", "print('ran')"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env, cwd=str(tmp_path), timeout=180)
    line = check_stopped_before_command(out)
    assert "option exitcode" in line, line


@pytest.mark.parametrize("value", BAD_VALUES)
def test_bad_value_stops_the_run(python, tmp_path, shim_libraries, value):
    out = subprocess.run([str(EXTSAN), "run", "--options", "exitcode=" + value, "--",
                          str(python.path), "-c", "print('ran')"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=base_env(), cwd=str(tmp_path), timeout=180)
    line = check_stopped_before_command(out)
    assert "option exitcode" in line, line


def test_bad_flag_value_stops_the_run(tmp_path, shim_libraries):
    out = subprocess.run([str(EXTSAN), "run", "--exitcode", "256", "--", "python3", "-c", "print('ran')"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=base_env(),
                         cwd=str(tmp_path), timeout=180)
    line = check_stopped_before_command(out)
    assert "exitcode" in line, line
