"""Suppressions (option `suppressions`): a file of `kind:pattern` lines.

- The file format, through the runtime's own parser: `build/extsan-options check-suppressions
  FILE` (and `check TEXT` for the file an options text names); the C unit test
  build/test-suppressions (glob matching, rule choice, use counts) runs in test_project.py with
  the other unit tests.
- At run time, on two Pythons of the matrix (a shared pyenv build and Debian's static 3.11),
  with the fixtures capsule_defects (capsule-without-gil) and gc_defects through
  tests/fixtures/gc_workloads.py (hidden-reference, leaked-cycle): rules by function name, API,
  module base name, type name and `*` kind; a suppressed finding leaves the text report, stays in
  the JSON report marked with its rule, and is counted per rule; a file that cannot be used stops
  the run with one line and status 125, through `extsan run` and through EXTSAN_OPTIONS alone.
"""

import subprocess

import pytest

from conftest import (
    BUILD,
    EXTSAN,
    FIXTURES_SRC,
    base_env,
    check_stopped_before_command,
    program_pid,
    stderr_finding_lines,
)

OPTIONS_TOOL = BUILD / "extsan-options"
WORKLOADS = FIXTURES_SRC / "gc_workloads.py"
KINDS = ("capsule-without-gil, call-without-gil, hidden-reference, incomplete-traverse, leaked-cycle, "
         "traverse-missing-gc, reference-leak, deadly-signal or *")
RUNTIME_PYTHONS = pytest.mark.pythons("3.12", "debian3.11")
# extsan-options check-suppressions and check refuse a bad file as the runtime does (README).
BAD_FILE_STATUS = 125

CAPSULE_PRELUDE = """\
import os
import capsule_defects as m
print("pid", os.getpid(), flush=True)
"""
# Two findings: PyCapsule_GetName in get_name_without_gil, PyCapsule_IsValid in is_valid_without_gil.
TWO_CAPSULE_DEFECTS = CAPSULE_PRELUDE + """\
cap = m.new_with_gil()
m.get_name_without_gil(cap)
m.is_valid_without_gil(cap)
print("done")
"""


def write_rules(tmp_path, text, name="extsan.supp"):
    path = tmp_path / name
    path.write_text(text)
    return path


def options_tool(*args):
    return subprocess.run([str(OPTIONS_TOOL)] + [str(a) for a in args], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=60)


# ---- the file format ------------------------------------------------------------------------------


def test_good_file_is_accepted(tmp_path):
    path = write_rules(tmp_path, """\
# extsan suppressions
hidden-reference:nb_gc.*
   capsule-without-gil : *worker*    # spaces around kind and pattern

*:libthirdparty.so
leaked-cycle:ns::Type<int>::*
incomplete-traverse:gc_defects.Pair
traverse-missing-gc:?*
*:lib#1.so
""")
    result = options_tool("check-suppressions", path)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", ""), result


def test_empty_file_is_accepted(tmp_path):
    result = options_tool("check-suppressions", write_rules(tmp_path, ""))
    assert (result.returncode, result.stderr) == (0, ""), result


MALFORMED = [
    ("no-colon", "hidden-reference:a\n\n# fine\nhidden-reference nb_gc.X\n",
     "4: 'hidden-reference nb_gc.X' is not kind:pattern (no ':')"),
    ("unknown-kind", "leak:malloc\n", "1: unknown kind 'leak' (%s)" % KINDS),
    ("kind-case", "*:a\nHidden-Reference:x\n", "2: unknown kind 'Hidden-Reference' (%s)" % KINDS),
    ("empty-pattern", "# a\ncapsule-without-gil:\n", "2: empty pattern after 'capsule-without-gil:'"),
    ("comment-only-pattern", "*:   # nothing\n", "1: empty pattern after '*:'"),
    ("empty-kind", ":foo\n", "1: no kind before ':' (%s)" % KINDS),
]


@pytest.mark.parametrize("text, message", [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_malformed_line_is_one_line_naming_file_and_line(tmp_path, text, message):
    path = write_rules(tmp_path, text)
    result = options_tool("check-suppressions", path)
    assert result.returncode == BAD_FILE_STATUS, result
    assert result.stdout == "", result
    assert result.stderr == "extsan: %s:%s\n" % (path, message), result


def test_unreadable_file(tmp_path):
    missing = tmp_path / "missing.supp"
    result = options_tool("check-suppressions", missing)
    assert result.returncode == BAD_FILE_STATUS, result
    assert result.stderr == "extsan: %s: cannot read it: No such file or directory\n" % missing, result
    result = options_tool("check-suppressions", tmp_path)
    assert result.returncode == BAD_FILE_STATUS, result
    assert result.stderr == "extsan: %s: cannot read it: Is a directory\n" % tmp_path, result


def test_check_options_checks_the_file_they_name(tmp_path):
    good = write_rules(tmp_path, "*:x\n", "good.supp")
    bad = write_rules(tmp_path, "*:x\nbad\n", "bad.supp")
    result = options_tool("check", "verbosity=1:suppressions=%s" % good)
    assert (result.returncode, result.stderr) == (0, ""), result
    result = options_tool("check", "suppressions='%s':verbosity=1" % bad)
    assert result.returncode == BAD_FILE_STATUS, result
    assert result.stderr == "extsan: %s:2: 'bad' is not kind:pattern (no ':')\n" % bad, result
    result = options_tool("check", "suppressions=")
    assert (result.returncode, result.stderr) == (0, ""), result


# ---- at run time: capsule-without-gil ---------------------------------------------------------------


def process_suppressions(result):
    """The `suppressions` list of the (single) process of the merged report."""
    (process,) = result.report["processes"]
    assert "suppressions" in process, result.describe()
    return process["suppressions"]


def rule_entries(path, *rules):
    """The expected `suppressions` list: rules as (line, text, used)."""
    return [{"rule": text, "file": str(path), "line": line, "used": used} for line, text, used in rules]


@RUNTIME_PYTHONS
def test_suppressed_by_function_name(run, tmp_path):
    """The only finding suppressed: nothing on stderr (like a clean run), the JSON report keeps
    it, marked with the rule, and lists the rule as used once."""
    rules = write_rules(tmp_path, "# rules\ncapsule-without-gil:new_without_gil\n")
    result = run(CAPSULE_PRELUDE + "m.new_without_gil()\nprint('done')\n",
                 extsan_args=["--options", "suppressions=%s" % rules])
    assert result.returncode == 0, result.describe()
    assert result.stdout.splitlines()[-1] == "done", result.describe()
    assert result.stderr == "", result.describe()
    (finding,) = result.findings()
    assert finding["api"] == "PyCapsule_New", result.describe()
    assert finding["suppressed"] == "capsule-without-gil:new_without_gil", result.describe()
    assert process_suppressions(result) == rule_entries(
        rules, (2, "capsule-without-gil:new_without_gil", 1)), result.describe()


@RUNTIME_PYTHONS
def test_suppressed_by_api_leaves_the_other_finding(run, tmp_path):
    """One of two findings suppressed: the other is reported, SUMMARY counts it alone, and the
    report ends with the rules used; the unused rule is not mentioned at verbosity 0."""
    rules = write_rules(tmp_path, "leaked-cycle:*\ncapsule-without-gil:PyCapsule_GetName\n")
    result = run(TWO_CAPSULE_DEFECTS, extsan_args=["--suppressions", str(rules)])
    assert result.returncode == 0, result.describe()
    pid = program_pid(result)
    findings = {f["api"]: f for f in result.findings()}
    assert sorted(findings) == ["PyCapsule_GetName", "PyCapsule_IsValid"], result.describe()
    assert findings["PyCapsule_GetName"]["suppressed"] == "capsule-without-gil:PyCapsule_GetName"
    assert "suppressed" not in findings["PyCapsule_IsValid"], result.describe()
    lines = stderr_finding_lines(result.stderr, pid)
    assert any("PyCapsule_IsValid" in line for line in lines), result.describe()
    assert not any("PyCapsule_GetName" in line for line in lines[:-1]), result.describe()
    assert lines[-2] == "==%d==extsan: SUMMARY: 1 finding (1 occurrence) in this process" % pid, \
        result.describe()
    assert lines[-1] == "==%d==extsan: suppressed 1 finding: capsule-without-gil:PyCapsule_GetName (1)" \
        % pid, result.describe()
    assert "warning" not in result.stderr, result.describe()
    assert process_suppressions(result) == rule_entries(
        rules, (1, "leaked-cycle:*", 0), (2, "capsule-without-gil:PyCapsule_GetName", 1)), \
        result.describe()


@RUNTIME_PYTHONS
def test_suppressed_by_module_base_name_for_any_kind(run, tmp_path):
    """`*:` with a glob on the extension's file name suppresses every finding it is in the stack
    of; a repeated finding (count 5) is one use of the rule."""
    rules = write_rules(tmp_path, "*:capsule_defects.cpython-*.so\n")
    result = run(TWO_CAPSULE_DEFECTS + "m.repeat_new_without_gil(5)\n",
                 env={"EXTSAN_OPTIONS": "suppressions=%s" % rules})
    assert result.returncode == 0, result.describe()
    assert result.stderr == "", result.describe()
    findings = result.findings()
    assert sorted((f["api"], f["count"]) for f in findings) == [
        ("PyCapsule_GetName", 1), ("PyCapsule_IsValid", 1), ("PyCapsule_New", 5)], result.describe()
    assert {f["suppressed"] for f in findings} == {"*:capsule_defects.cpython-*.so"}, result.describe()
    assert process_suppressions(result) == rule_entries(rules, (1, "*:capsule_defects.cpython-*.so", 3))


@RUNTIME_PYTHONS
def test_first_matching_rule_is_credited_and_unused_rules_warn_at_verbosity_1(run, tmp_path):
    """Two rules match the finding: the first in file order takes it. verbosity=1: the rules used
    are listed even with every finding suppressed, and each unused rule gets one warning line."""
    rules = write_rules(tmp_path, "hidden-reference:*\n"
                                  "*:*capsule_defects.c\n"
                                  "capsule-without-gil:get_name_*\n"
                                  "*:no_such_function\n")
    result = run(TWO_CAPSULE_DEFECTS, extsan_args=["--suppressions", str(rules), "--verbosity", "1"])
    assert result.returncode == 0, result.describe()
    pid = program_pid(result)
    assert {f["suppressed"] for f in result.findings()} == {"*:*capsule_defects.c"}, result.describe()
    lines = stderr_finding_lines(result.stderr, pid)
    assert lines == [
        "==%d==extsan: suppressed 2 findings: *:*capsule_defects.c (2)" % pid,
        "==%d==extsan: warning: suppression hidden-reference:* (%s:1) matched nothing in this process"
        % (pid, rules),
        "==%d==extsan: warning: suppression capsule-without-gil:get_name_* (%s:3) matched nothing in "
        "this process" % (pid, rules),
        "==%d==extsan: warning: suppression *:no_such_function (%s:4) matched nothing in this process"
        % (pid, rules),
    ], result.describe()


@RUNTIME_PYTHONS
def test_clean_run_with_suppressions_prints_nothing(run, tmp_path):
    rules = write_rules(tmp_path, "*:*\n")
    result = run(CAPSULE_PRELUDE + "m.get_pointer_with_gil(m.new_with_gil())\n",
                 extsan_args=["--suppressions", str(rules)])
    result.check_silent(program_pid(result))
    assert result.stderr == "", result.describe()
    assert process_suppressions(result) == rule_entries(rules, (1, "*:*", 0))


@RUNTIME_PYTHONS
def test_halt_on_error_ignores_a_suppressed_finding(run, tmp_path):
    rules = write_rules(tmp_path, "capsule-without-gil:PyCapsule_GetName\n")
    result = run(TWO_CAPSULE_DEFECTS, extsan_args=["--suppressions", str(rules), "--halt-on-error"])
    assert result.returncode == 66, result.describe()
    assert "done" not in result.stdout, result.describe()
    # The suppressed GetName came first and did not stop the process; IsValid did.
    assert sorted((f["api"], f.get("suppressed")) for f in result.findings()) == [
        ("PyCapsule_GetName", "capsule-without-gil:PyCapsule_GetName"), ("PyCapsule_IsValid", None)], \
        result.describe()


# ---- at run time: findings about types (gc_defects) --------------------------------------------------


def run_workload(run, *args, **kwargs):
    result = run(script=WORKLOADS, args=list(args), **kwargs)
    assert result.returncode == 0, result.describe()
    assert result.stdout.splitlines()[-1] == "workload ok", result.describe()
    return result, int(result.stdout.splitlines()[0].split()[1])


@RUNTIME_PYTHONS
def test_suppressed_by_type_name_glob(run, tmp_path):
    """hidden-reference of gc_defects.Holder by a type glob; its leaked cycles (another kind)
    are still reported."""
    rules = write_rules(tmp_path, "hidden-reference:gc_defects.Hold*\n")
    result, pid = run_workload(run, "holder", "garbage", extsan_args=["--suppressions", str(rules)])
    findings = result.report["findings"]
    kinds = {f["kind"]: f for f in findings}
    assert sorted(kinds) == ["hidden-reference", "leaked-cycle"], result.describe()
    assert kinds["hidden-reference"]["suppressed"] == "hidden-reference:gc_defects.Hold*"
    assert "suppressed" not in kinds["leaked-cycle"], result.describe()
    lines = stderr_finding_lines(result.stderr, pid)
    assert not [line for line in lines[:-1] if "hidden-reference" in line], result.describe()
    assert [line for line in lines if "leaked-cycle:" in line], result.describe()
    assert lines[-2].startswith("==%d==extsan: SUMMARY: 1 finding " % pid), result.describe()
    assert lines[-1] == "==%d==extsan: suppressed 1 finding: hidden-reference:gc_defects.Hold* (1)" \
        % pid, result.describe()


@RUNTIME_PYTHONS
def test_suppressed_by_python_file_for_any_kind(run, tmp_path):
    """`*:` and the base name of the Python file that allocated the instance: both findings."""
    rules = write_rules(tmp_path, "*:gc_workloads.py\n")
    result, pid = run_workload(run, "holder", "garbage", extsan_args=["--suppressions", str(rules)])
    findings = result.report["findings"]
    assert sorted(f["kind"] for f in findings) == ["hidden-reference", "leaked-cycle"], result.describe()
    assert {f["suppressed"] for f in findings} == {"*:gc_workloads.py"}, result.describe()
    assert stderr_finding_lines(result.stderr) == [], result.describe()
    assert process_suppressions(result) == rule_entries(rules, (1, "*:gc_workloads.py", 2))


# ---- a file that cannot be used stops the run -------------------------------------------------------

BAD_FILES = [
    ("malformed", "capsule-without-gil:x\nleak:malloc\n", "%s:2: unknown kind 'leak' (" + KINDS + ")"),
    ("missing", None, "%s: cannot read it: No such file or directory"),
]


def bad_file(tmp_path, text):
    path = tmp_path / "rules.supp"
    if text is not None:
        path.write_text(text)
    return path


@RUNTIME_PYTHONS
@pytest.mark.parametrize("text, message", [b[1:] for b in BAD_FILES], ids=[b[0] for b in BAD_FILES])
def test_bad_file_stops_the_shim(python, tmp_path, shim_libraries, text, message):
    """Preloaded without the CLI: the process stops at start, one line, status 125."""
    path = bad_file(tmp_path, text)
    env = base_env(None, {"LD_PRELOAD": str(BUILD / "libextsan.so"),
                          "EXTSAN_OPTIONS": "suppressions=%s" % path})
    out = subprocess.run([str(python.path), "-c", "print('ran')"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env, cwd=str(tmp_path), timeout=180)
    assert check_stopped_before_command(out) == "extsan: " + message % path


@RUNTIME_PYTHONS
@pytest.mark.parametrize("how", ["options", "flag", "environment"])
@pytest.mark.parametrize("text, message", [b[1:] for b in BAD_FILES], ids=[b[0] for b in BAD_FILES])
def test_bad_file_stops_the_cli(python, tmp_path, shim_libraries, text, message, how):
    """Through `extsan run`: refused before the command starts, one line naming the file (and
    line), status 125."""
    path = bad_file(tmp_path, text)
    args, env = {
        "options": (["--options", "suppressions=%s" % path], None),
        "flag": (["--suppressions", str(path)], None),
        "environment": ([], {"EXTSAN_OPTIONS": "suppressions=%s" % path}),
    }[how]
    command = [str(python.path), "-c", "print('ran')"]
    out = subprocess.run([str(EXTSAN), "run"] + args + ["--"] + command, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=base_env(None, env), cwd=str(tmp_path),
                         timeout=180)
    line = check_stopped_before_command(out)
    assert (message % path) in line, line
