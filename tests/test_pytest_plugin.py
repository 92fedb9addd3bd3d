"""The pytest plugin (scripts/extsan_pytest.py): findings name the test that made them, an
option checks for leaks after each test and fails the test that leaked, and the plugin works
without LD_PRELOAD by loading the core into the running interpreter.

Each test writes a small pytest project (tests/pytest_projects.py) and runs it with an
interpreter of the matrix, under `scripts/extsan run` or on its own.
"""

import json
import re
import sys

import pytest

from conftest import BUILD, DEBIAN_ID, KIND, ROOT
from pytest_projects import PYTEST_IDS, one, project_env, run_pytest, write_project

sys.path.insert(0, str(ROOT / "scripts" / "python"))
from extsan.baseline import write_baseline  # noqa: E402
from extsan.fingerprint import add_fingerprints  # noqa: E402

LEAK = "leaked-cycle"
HIDDEN = "hidden-reference"
HOLDER = "gc_defects.Holder"

# Tests in file order: a GIL-less capsule call, a holder kept reachable (hidden reference), a
# holder left in a garbage cycle (leaked cycle), a clean test.
DEFECTS = """\
import capsule_defects as m
import gc_defects

from record import record

KEEP = []


def test_capsule():
    record("test_defects.py::test_capsule")
    m.new_without_gil()


def test_keep():
    record("test_defects.py::test_keep")
    h = gc_defects.Holder()
    h.set_callback(lambda: h.touch())
    KEEP.append(h)


def test_leak():
    record("test_defects.py::test_leak")
    c = gc_defects.Holder()
    c.set_callback(lambda: c.touch())


def test_clean():
    record("test_defects.py::test_clean")
    m.get_pointer_with_gil(m.new_with_gil())
"""

# A test that starts a Python child making a GIL-less call of its own.
CHILD = """\
import subprocess
import sys

from record import record


def test_child():
    code = ("from record import record; record('child'); import capsule_defects as m; "
            "m.is_valid_without_gil(m.new_with_gil())")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
"""

# Imports the extensions before pytest (and so before the plugin activates extsan), then runs
# pytest: their types are found by the type walk, their calls are seen through the GOT patch.
RUN_AFTER_IMPORTS = """\
import sys

import capsule_defects
import gc_defects
import pytest

sys.exit(pytest.main(sys.argv[1:]))
"""


def describe(findings):
    return json.dumps([{k: f.get(k) for k in ("kind", "pid", "api", "type", "count", "test")}
                       for f in findings], indent=1)


def check_named(result, pid_of_main=None):
    """The defects of DEFECTS are each reported once, by the pytest process, naming their test."""
    pids = result.pids()
    pid = pid_of_main or pids["test_defects.py::test_capsule"]
    capsule = one(result.findings(KIND, pid=pid), describe(result.report["findings"]))
    assert (capsule["api"], capsule["test"]) == ("PyCapsule_New", "test_defects.py::test_capsule"), \
        describe([capsule])
    leak = one(result.findings(LEAK, pid=pid), describe(result.report["findings"]))
    assert (leak["type"], leak["test"], leak["count"]) == (HOLDER, "test_defects.py::test_leak", 1), \
        describe([leak])
    # One finding per type: its example holder is the oldest, test_keep's.
    hidden = one(result.findings(HIDDEN, pid=pid), describe(result.report["findings"]))
    assert (hidden["type"], hidden["test"], hidden["instances"]) == \
        (HOLDER, "test_defects.py::test_keep", 2), describe([hidden])
    for finding in result.findings(pid=pid):
        assert finding["test"] != "test_defects.py::test_clean", describe([finding])


# ---- attribution --------------------------------------------------------------------------------


@pytest.mark.pythons("3.12", DEBIAN_ID)
def test_findings_name_their_test_under_extsan_run(python, fixtures, tmp_path):
    """Under `extsan run` with -p extsan_pytest: "test" in the JSON report and an "in test"
    line in the text report; the findings do not change pytest's outcome."""
    project = write_project(tmp_path / "project", {"test_defects.py": DEFECTS})
    result = run_pytest(python, fixtures, project, ["-v", "-p", "extsan_pytest"])
    assert result.returncode == 0, result.describe()
    assert "extsan: preloaded (" in result.stdout, result.describe()
    check_named(result)
    pid = result.pids()["test_defects.py::test_capsule"]
    for test in ("test_capsule", "test_keep", "test_leak"):
        assert "==%d==extsan:   in test test_defects.py::%s\n" % (pid, test) in result.stderr, \
            result.describe()


@pytest.mark.pythons("3.12")
def test_without_the_plugin_no_test_is_named(python, fixtures, tmp_path):
    project = write_project(tmp_path / "project", {"test_defects.py": DEFECTS})
    result = run_pytest(python, fixtures, project, ["-q"])
    assert result.returncode == 0, result.describe()
    assert result.findings(KIND) and result.findings(LEAK), result.describe()
    assert all("test" not in f for f in result.report["findings"]), result.describe()
    assert "extsan:   in test" not in result.stderr, result.describe()


# ---- checking after each test -------------------------------------------------------------------

CHECK_EACH = """\
import capsule_defects as m
import gc_defects

from record import record

KEEP = []


def make_garbage_cycle():
    c = gc_defects.Holder()
    c.set_callback(lambda: c.touch())


def test_1_clean():
    record("main")


def test_2_leak():
    make_garbage_cycle()


def test_3_clean_after_a_leak():
    pass


def test_4_capsule():
    m.new_without_gil()


def test_5_leak_again():
    make_garbage_cycle()


def test_6_capsule_again_same_call():
    test_4_capsule()
"""

ERROR_LINE = re.compile(r"^ERROR (test_check\.py::\S+)", re.M)


@pytest.mark.parametrize("how", ["under-extsan-run", "in-process"])
@pytest.mark.pythons("3.12", DEBIAN_ID)
def test_check_each_test_fails_the_test_that_leaked(python, fixtures, tmp_path, how):
    """--extsan-check-each-test: the tests that leaked a cycle or made a GIL-less call error at
    teardown with extsan's text; the others pass; nothing is reported twice (a leak of a later
    test is its own finding, a repeat of the same call only counts)."""
    project = write_project(tmp_path / "project", {"test_check.py": CHECK_EACH})
    result = run_pytest(python, fixtures, project,
                        ["-p", "extsan_pytest", "--extsan-check-each-test", "-rE"],
                        under_extsan=how == "under-extsan-run")
    assert result.returncode == 1, result.describe()
    errors = ERROR_LINE.findall(result.stdout)
    assert errors == ["test_check.py::test_2_leak", "test_check.py::test_4_capsule",
                      "test_check.py::test_5_leak_again"], result.describe()
    assert re.search(r"\b6 passed, 3 errors\b", result.stdout), result.describe()
    # The error sections only: extsan's summary and pytest's short summary follow them.
    sections = before_summaries(result.stdout)
    blocks = sections.split("ERROR at teardown of ")
    leak_block = next(b for b in blocks if b.startswith("test_2_leak"))
    for expected in ("extsan: findings during test_check.py::test_2_leak",
                     "extsan: leaked-cycle: 4 objects kept alive only by a hidden reference of "
                     + HOLDER, "extsan:   in test test_check.py::test_2_leak",
                     "extsan: hidden-reference: " + HOLDER):
        assert expected in leak_block, result.describe()
    later_leak = next(b for b in blocks if b.startswith("test_5_leak_again"))
    assert "leaked-cycle" in later_leak and "hidden-reference" not in later_leak, result.describe()
    capsule_block = next(b for b in blocks if b.startswith("test_4_capsule"))
    assert "capsule-without-gil: PyCapsule_New" in capsule_block, result.describe()

    pid = result.pids()["main"]
    leaks = result.findings(LEAK, pid=pid)
    assert sorted((f["test"], f["count"]) for f in leaks) == [
        ("test_check.py::test_2_leak", 1), ("test_check.py::test_5_leak_again", 1)], describe(leaks)
    capsule = one(result.findings(KIND, pid=pid), describe(result.report["findings"]))
    assert (capsule["test"], capsule["count"]) == ("test_check.py::test_4_capsule", 2), \
        describe([capsule])


# Cycles made while collection imports the module (no test runs then): one garbage at once, one
# of another shape kept until the first test drops it; and one made by the third test.
LEAK_AT_IMPORT = """\
import gc_defects

from record import record


def make_cycle():
    c = gc_defects.Holder()
    c.set_callback(lambda: c.touch())


make_cycle()
KEPT = gc_defects.Holder()
KEPT.set_callback([KEPT])


def test_1_drops_an_import_time_cycle():
    global KEPT
    record("main")
    del KEPT


def test_2_clean():
    pass


def test_3_leak():
    make_cycle()


def test_4_clean():
    pass
"""


SUMMARY_TITLE = re.compile(r"^=+ extsan: (\d+) findings? =+$", re.M)


def before_summaries(stdout):
    """pytest's output before extsan's summary section and pytest's short test summary."""
    return SUMMARY_TITLE.split(stdout)[0].split("short test summary info")[0]


def summary_lines(stdout):
    """The lines of the plugin's section of the terminal summary (without its title), [] when
    it has none; fails the test when the title's count is not the number of findings listed."""
    parts = SUMMARY_TITLE.split(stdout)
    if len(parts) == 1:
        return []
    assert len(parts) == 3, "more than one extsan section:\n" + stdout
    lines = []
    for line in parts[2].splitlines()[1:]:  # [0]: the rest of the title line
        if line.startswith("=") or not line.strip():
            break
        lines.append(line)
    listed = [line for line in lines if not line.startswith("extsan: ")]
    assert len(listed) == int(parts[1]), "the title counts %s findings:\n%s" % (parts[1], stdout)
    return lines


@pytest.mark.parametrize("how", ["under-extsan-run", "in-process"])
@pytest.mark.pythons(*PYTEST_IDS)
def test_check_each_test_does_not_blame_a_test_for_collection(python, fixtures, tmp_path, how):
    """--extsan-check-each-test: a leak of an instance allocated while collection imported the
    test module names no test and fails none, whether found before the first test or after the
    test that dropped its last outside reference; both are listed in the terminal summary. The
    leak the third test makes fails the third test only."""
    project = write_project(tmp_path / "project", {"test_import.py": LEAK_AT_IMPORT})
    result = run_pytest(python, fixtures, project,
                        ["-p", "extsan_pytest", "--extsan-check-each-test", "-rE"],
                        under_extsan=how == "under-extsan-run")
    assert result.returncode == 1, result.describe()
    assert re.findall(r"^ERROR (test_import\.py::\S+)", result.stdout, re.M) == \
        ["test_import.py::test_3_leak"], result.describe()
    assert re.search(r"\b4 passed, 1 error\b", result.stdout), result.describe()
    error = before_summaries(result.stdout.split("ERROR at teardown of test_3_leak")[1])
    assert "extsan:   in test test_import.py::test_3_leak" in error, result.describe()
    assert error.count("extsan: leaked-cycle: ") == 1, result.describe()
    # The type was reported before the first test: its later holders only count.
    assert "hidden-reference" not in error, result.describe()

    # The summary lists each finding once, those that failed no test marked with when they
    # were found.
    frame = ", at add_type gc_defects.c:"
    lines = [re.sub(r"(%s)\d+" % frame, r"\1N", line) for line in summary_lines(result.stdout)]
    before = "  [fails no test: found before the first test (collection)]"
    after = "  [fails no test: found after test_import.py::test_1_drops_an_import_time_cycle]"
    assert lines == [
        "hidden-reference: %s, in no test%sN%s" % (HOLDER, frame, before),
        "leaked-cycle: %s, in no test%sN%s" % (HOLDER, frame, before),
        "leaked-cycle: %s, in no test%sN%s" % (HOLDER, frame, after),
        "leaked-cycle: %s, in test test_import.py::test_3_leak%sN" % (HOLDER, frame),
    ], result.describe()

    pid = result.pids()["main"]
    leaks = result.findings(LEAK, pid=pid)
    assert [f["test"] for f in leaks if "test" in f] == ["test_import.py::test_3_leak"], \
        describe(leaks)
    assert sum(f["count"] for f in leaks if "test" not in f) == 2, describe(leaks)
    hidden = one(result.findings(HIDDEN, pid=pid), describe(result.report["findings"]))
    assert (hidden["type"], hidden["instances"]) == (HOLDER, 3) and "test" not in hidden, \
        describe([hidden])


# ---- in-process activation ----------------------------------------------------------------------


def check_in_process(python, fixtures, project, script=None):
    """Runs project without LD_PRELOAD (`addopts = -p extsan_pytest`) and checks that both
    defect kinds are reported and named, and a subprocess of a test too (LD_PRELOAD for
    children)."""
    (project / "pytest.ini").write_text("[pytest]\naddopts = -p extsan_pytest\n")
    result = run_pytest(python, fixtures, project, ["-v"], under_extsan=False, script=script)
    assert result.returncode == 0, result.describe()
    assert "extsan: in-process" in result.stdout, result.describe()
    check_named(result)
    child = one(result.findings(KIND, pid=result.pids()["child"]), describe(result.report["findings"]))
    assert child["api"] == "PyCapsule_IsValid", describe([child])


@pytest.mark.pythons(*PYTEST_IDS)
def test_in_process_activation(python, fixtures, tmp_path):
    """No LD_PRELOAD: `addopts = -p extsan_pytest` loads the core into pytest's interpreter
    before the test modules import the extensions."""
    project = write_project(tmp_path / "project", {"test_defects.py": DEFECTS, "test_child.py": CHILD})
    check_in_process(python, fixtures, project)


@pytest.mark.pythons("3.12", "3.13", DEBIAN_ID)
def test_in_process_activation_after_imports(python, fixtures, tmp_path):
    """The extensions were imported before pytest started (a script calling pytest.main): their
    types are found by the type walk and instrumented then, their calls seen through the GOT
    patched at activation."""
    project = write_project(tmp_path / "project", {
        "test_defects.py": DEFECTS, "test_child.py": CHILD, "run_tests.py": RUN_AFTER_IMPORTS})
    check_in_process(python, fixtures, project, script=project / "run_tests.py")


@pytest.mark.pythons("3.12", DEBIAN_ID)
def test_in_process_activation_with_xdist(python, fixtures, tmp_path):
    """No LD_PRELOAD, -n 2: the controller activates in-process and preloads the workers, whose
    findings are reported for their own pids and named."""
    project = write_project(tmp_path / "project", {"test_defects.py": DEFECTS})
    result = run_pytest(python, fixtures, project, ["-q", "-n", "2", "-p", "extsan_pytest"],
                        under_extsan=False)
    assert result.returncode == 0, result.describe()
    pids = result.pids()
    capsule = one(result.findings(KIND), describe(result.report["findings"]))
    assert (capsule["pid"], capsule["test"]) == (pids["test_defects.py::test_capsule"],
                                                 "test_defects.py::test_capsule"), describe([capsule])
    leak = one(result.findings(LEAK), describe(result.report["findings"]))
    assert (leak["pid"], leak["test"]) == (pids["test_defects.py::test_leak"],
                                           "test_defects.py::test_leak"), describe([leak])


# Only a leak: unchecked, a GIL-less PyCapsule_New would crash 3.12.
LEAK_ONLY = """\
import gc_defects


def test_leak():
    c = gc_defects.Holder()
    c.set_callback(lambda: c.touch())
"""


@pytest.mark.pythons("3.12")
def test_the_plugin_can_be_loaded_off(python, fixtures, tmp_path):
    """ini `extsan = false`: loaded but off (no core, no report); --extsan turns it on for a
    run; --no-extsan turns the default off."""
    files = {"test_leak.py": LEAK_ONLY}
    ini = "[pytest]\naddopts = -p extsan_pytest\nextsan = false\n"
    off = run_pytest(python, fixtures, write_project(tmp_path / "off", files, ini=ini), ["-q"],
                     under_extsan=False)
    assert off.returncode == 0 and off.report is None, off.describe()
    assert "extsan" not in off.stderr, off.describe()
    on = run_pytest(python, fixtures, write_project(tmp_path / "on", files, ini=ini),
                    ["-q", "--extsan"], under_extsan=False)
    assert on.returncode == 0, on.describe()
    leak = one(on.findings(LEAK), on.describe())
    assert leak["test"] == "test_leak.py::test_leak", on.describe()
    refused = run_pytest(python, fixtures, write_project(tmp_path / "refused", files),
                         ["-q", "-p", "extsan_pytest", "--no-extsan"], under_extsan=False)
    assert refused.returncode == 0 and refused.report is None, refused.describe()


@pytest.mark.pythons("3.12")
def test_in_process_bad_options_are_a_usage_error(python, fixtures, tmp_path):
    """A malformed EXTSAN_OPTIONS stops pytest with its usage-error status and one line, before
    the core is loaded (which would end the process with 125)."""
    project = write_project(tmp_path / "project", {"test_leak.py": LEAK_ONLY})
    result = run_pytest(python, fixtures, project, ["-q", "-p", "extsan_pytest"],
                        under_extsan=False, env={"EXTSAN_OPTIONS": "stack_depth=0"})
    assert result.returncode == 4, result.describe()
    assert "extsan: invalid EXTSAN_OPTIONS 'stack_depth=0" in result.stderr, result.describe()
    assert result.report is None, result.describe()


# ---- the summary, --extsan-fail and the markers ---------------------------------------------------

# DEFECTS' clean twin: the same tests with the fixed holder and calls made with the GIL.
CLEAN_TWIN = DEFECTS.replace("gc_defects.Holder()", "gc_defects.FixedHolder()").replace(
    "m.new_without_gil()", "m.new_with_gil()")
LAST_LINE = re.compile(r"^=+ (.*) in [\d.]+s(?: \([\d:]+\))? =+$", re.M)
DEFECT_LINES = [
    "capsule-without-gil: PyCapsule_New capsule_defects.payload, in test test_defects.py::test_capsule, "
    "at new_without_gil capsule_defects.c:N",
    "hidden-reference: %s, in test test_defects.py::test_keep, at add_type gc_defects.c:N" % HOLDER,
    "leaked-cycle: %s, in test test_defects.py::test_leak, at add_type gc_defects.c:N" % HOLDER,
]


def last_line(result):
    """pytest's last line without its frame: '4 passed, 2 extsan findings'."""
    found = LAST_LINE.findall(result.stdout)
    assert found, result.describe()
    return found[-1]


def listed(result):
    """The summary's finding lines, line numbers as N; checks that the section comes before
    pytest's last line."""
    lines = summary_lines(result.stdout)
    if lines:
        assert result.stdout.index(lines[-1]) < result.stdout.rindex(last_line(result)), result.describe()
    return [re.sub(r"(\.c):\d+", r"\1:N", line) for line in lines]


@pytest.mark.parametrize("how", ["under-extsan-run", "in-process"])
@pytest.mark.pythons(*PYTEST_IDS)
def test_summary_lists_findings_in_pytests_output(python, fixtures, tmp_path, how):
    """Every finding, one line each (kind, subject, test, first extension frame), in a section of
    pytest's terminal summary before its last line; without --extsan-fail the run passes. The
    clean twin has no section."""
    project = write_project(tmp_path / "defects", {"test_defects.py": DEFECTS})
    result = run_pytest(python, fixtures, project, ["-p", "extsan_pytest"],
                        under_extsan=how == "under-extsan-run")
    assert result.returncode == 0, result.describe()
    assert listed(result) == DEFECT_LINES, result.describe()
    assert last_line(result) == "4 passed", result.describe()

    project = write_project(tmp_path / "clean", {"test_defects.py": CLEAN_TWIN})
    result = run_pytest(python, fixtures, project, ["-p", "extsan_pytest"],
                        under_extsan=how == "under-extsan-run")
    assert result.returncode == 0, result.describe()
    assert "extsan" not in result.stdout and result.findings() == [], result.describe()


FAILING = "extsan: 3 findings not suppressed, baselined or allowed: the run fails (--extsan-fail)"


@pytest.mark.parametrize("how", ["under-extsan-run", "in-process", "ini"])
@pytest.mark.pythons(*PYTEST_IDS)
def test_extsan_fail_fails_the_run(python, fixtures, tmp_path, how):
    """--extsan-fail (or ini extsan_fail = true): the findings make the run fail, status 1,
    which the summary and pytest's last line say; the clean twin passes."""
    args = ["-p", "extsan_pytest"] + ([] if how == "ini" else ["--extsan-fail"])
    ini = "[pytest]\nextsan_fail = true\n" if how == "ini" else "[pytest]\n"
    for name, source in (("defects", DEFECTS), ("clean", CLEAN_TWIN)):
        project = write_project(tmp_path / name, {"test_defects.py": source}, ini=ini)
        result = run_pytest(python, fixtures, project, args, under_extsan=how == "under-extsan-run")
        if name == "clean":
            assert result.returncode == 0, result.describe()
            assert last_line(result) == "4 passed" and summary_lines(result.stdout) == [], \
                result.describe()
            continue
        assert result.returncode == 1, result.describe()
        assert listed(result) == DEFECT_LINES + [FAILING], result.describe()
        assert last_line(result) == "4 passed, 3 extsan findings", result.describe()


MARKED = """\
import capsule_defects as m
import gc_defects
import pytest

KEEP = []


@pytest.mark.extsan(check=False)
def test_capsule():
    m.new_without_gil()


@pytest.mark.extsan(allow=["hidden-reference:gc_defects.*"])
def test_keep():
    h = gc_defects.Holder()
    h.set_callback(lambda: h.touch())
    KEEP.append(h)


@pytest.mark.extsan(allow=["capsule-without-gil:*", "leaked-cycle:other_module.*"])
def test_leak():
    c = gc_defects.Holder()
    c.set_callback(lambda: c.touch())
"""


@pytest.mark.parametrize("how", ["under-extsan-run", "in-process"])
@pytest.mark.pythons("3.12", DEBIAN_ID)
def test_markers_accept_the_findings_of_their_test(python, fixtures, tmp_path, how):
    """check=False accepts every finding of its test, allow= those of its test a rule matches;
    a rule that matches nothing of the test accepts nothing. Accepted findings are listed,
    marked, and fail nothing."""
    project = write_project(tmp_path / "project", {"test_marked.py": MARKED},
                            ini="[pytest]\naddopts = --strict-markers\n")
    result = run_pytest(python, fixtures, project, ["-p", "extsan_pytest", "--extsan-fail"],
                        under_extsan=how == "under-extsan-run")
    assert result.returncode == 1, result.describe()
    assert listed(result) == [
        "capsule-without-gil: PyCapsule_New capsule_defects.payload, in test test_marked.py::test_capsule, "
        "at new_without_gil capsule_defects.c:N  [its test is marked check=False]",
        "hidden-reference: %s, in test test_marked.py::test_keep, at add_type gc_defects.c:N  "
        "[allowed by its test's marker: hidden-reference:gc_defects.*]" % HOLDER,
        "leaked-cycle: %s, in test test_marked.py::test_leak, at add_type gc_defects.c:N" % HOLDER,
        "extsan: 1 finding not suppressed, baselined or allowed: the run fails (--extsan-fail)",
    ], result.describe()
    assert last_line(result) == "3 passed, 1 extsan finding", result.describe()

    # The leak allowed too: nothing fails.
    (project / "test_marked.py").write_text(MARKED.replace("leaked-cycle:other_module.*",
                                                            "leaked-cycle:gc_defects.Holder"))
    result = run_pytest(python, fixtures, project, ["-p", "extsan_pytest", "--extsan-fail"],
                        under_extsan=how == "under-extsan-run")
    assert result.returncode == 0, result.describe()
    assert last_line(result) == "3 passed", result.describe()
    assert len(listed(result)) == 3, result.describe()


@pytest.mark.pythons("3.12")
def test_check_false_skips_the_check_after_its_test(python, fixtures, tmp_path):
    """--extsan-check-each-test: a test marked check=False does not error for its leak; a test
    allowed its leak neither; the unmarked leak errors."""
    source = MARKED.replace("@pytest.mark.extsan(allow=[\"capsule-without-gil:*\", \"leaked-cycle:other_module.*\"])\n", "")
    source += "\n\n@pytest.mark.extsan(check=False)\ndef test_leak_unchecked():\n    test_leak()\n"
    project = write_project(tmp_path / "project", {"test_marked.py": source})
    result = run_pytest(python, fixtures, project,
                        ["-p", "extsan_pytest", "--extsan-check-each-test", "-rE"], under_extsan=False)
    assert result.returncode == 1, result.describe()
    assert re.findall(r"^ERROR (test_marked\.py::\S+)", result.stdout, re.M) == \
        ["test_marked.py::test_leak"], result.describe()
    assert last_line(result) == "4 passed, 1 error", result.describe()


@pytest.mark.pythons("3.12")
def test_malformed_marker_errors_its_test(python, fixtures, tmp_path):
    source = """\
        import pytest


        @pytest.mark.extsan(allow=["leak:gc_defects.*"])
        def test_bad_kind():
            pass


        @pytest.mark.extsan(allows=["leaked-cycle:*"])
        def test_bad_keyword():
            pass


        @pytest.mark.extsan(allow=["leaked-cycle:*", "  # only a comment"])
        def test_empty_rule():
            pass


        def test_fine():
            pass
        """
    project = write_project(tmp_path / "project", {"test_bad.py": source})
    result = run_pytest(python, fixtures, project, ["-p", "extsan_pytest", "-rE"], under_extsan=False)
    assert result.returncode == 1, result.describe()
    assert "extsan marker of test_bad.py::test_bad_kind: allow:1: unknown kind 'leak'" in result.stdout, \
        result.describe()
    assert "extsan marker of test_bad.py::test_bad_keyword: takes only allow=, check= and leaks= (got allows)" \
        in result.stdout, result.describe()
    assert "extsan marker of test_bad.py::test_empty_rule: allow:2: an empty rule" in result.stdout, \
        result.describe()
    assert last_line(result) == "1 passed, 3 errors", result.describe()


@pytest.mark.parametrize("how", ["option", "ini"])
@pytest.mark.pythons("3.12", DEBIAN_ID)
def test_baselined_and_suppressed_findings_do_not_fail(python, fixtures, tmp_path, how):
    """A finding whose fingerprint the baseline lists, or that a rule of the runtime's
    suppressions file matches, fails nothing: the run passes with --extsan-fail."""
    project = write_project(tmp_path / "first", {"test_defects.py": DEFECTS})
    first = run_pytest(python, fixtures, project, ["-p", "extsan_pytest"])
    # The gate's own baseline of that run, but for the capsule call, which the rule suppresses.
    document = add_fingerprints(first.report)
    baseline = tmp_path / "extsan-baseline.json"
    write_baseline(str(baseline), [f for f in document["findings"] if f["kind"] != KIND])
    rules = tmp_path / "extsan.supp"
    rules.write_text("capsule-without-gil:new_without_gil\n")
    args = ["-p", "extsan_pytest", "--extsan-fail"]
    if how == "option":
        args += ["--extsan-baseline=%s" % baseline]  # as one word: pytest takes a word for a path
        ini = "[pytest]\n"
    else:
        ini = "[pytest]\nextsan_baseline = ../extsan-baseline.json\n"
    project = write_project(tmp_path / "second", {"test_defects.py": DEFECTS}, ini=ini)
    result = run_pytest(python, fixtures, project, args, extsan_args=["--suppressions", str(rules)])
    assert result.returncode == 0, result.describe()
    assert listed(result) == [line + "  [baselined]" for line in DEFECT_LINES[1:]], result.describe()

    # Without the baseline, the two fail the run.
    result = run_pytest(python, fixtures, project, ["-p", "extsan_pytest", "--extsan-fail", "-o",
                                                    "extsan_baseline="],
                        extsan_args=["--suppressions", str(rules)])
    assert result.returncode == 1, result.describe()
    assert last_line(result) == "4 passed, 2 extsan findings", result.describe()


@pytest.mark.pythons("3.12")
def test_bad_baseline_is_a_usage_error(python, fixtures, tmp_path):
    baseline = tmp_path / "extsan-baseline.json"
    baseline.write_text("{}")
    project = write_project(tmp_path / "project", {"test_leak.py": LEAK_ONLY})
    result = run_pytest(python, fixtures, project,
                        ["-p", "extsan_pytest", "--extsan-baseline=%s" % baseline], under_extsan=False)
    assert result.returncode == 4, result.describe()
    # The file is named relative to the current directory, the project.
    assert "extsan: --extsan-baseline ../extsan-baseline.json: not a baseline" in result.stderr, \
        result.describe()


@pytest.mark.parametrize("how", ["under-extsan-run", "in-process"])
@pytest.mark.pythons("3.12", DEBIAN_ID)
def test_extsan_fail_with_xdist(python, fixtures, tmp_path, how):
    """-n 2: the workers' findings are listed by the controller, and fail the run."""
    project = write_project(tmp_path / "project", {"test_defects.py": DEFECTS})
    result = run_pytest(python, fixtures, project, ["-n", "2", "-p", "extsan_pytest", "--extsan-fail"],
                        under_extsan=how == "under-extsan-run")
    assert result.returncode == 1, result.describe()
    lines = listed(result)
    # Each worker reports the type its holders belong to: the hidden reference may come twice.
    assert set(lines[:-1]) >= set(DEFECT_LINES[:1] + DEFECT_LINES[2:]), result.describe()
    assert lines[-1].startswith("extsan: %d findings not suppressed" % (len(lines) - 1)), result.describe()
    assert last_line(result) == "4 passed, %d extsan findings" % (len(lines) - 1), result.describe()


# Composition with pytest-memray: its report and its limit_memory marker work under extsan, and
# extsan lists what it lists without memray. memray and extsan both patch the extensions' GOTs.
MEMRAY_TESTS = DEFECTS.replace("import gc_defects\n", "import gc_defects\nimport pytest\n", 1) + """

@pytest.mark.limit_memory("64 KB")
def test_over_memray_limit():
    KEEP.append(bytearray(1024 * 1024))


@pytest.mark.limit_memory("4 MB")
def test_within_memray_limit():
    KEEP.append(bytearray(64 * 1024))
"""


@pytest.mark.parametrize("how", ["under-extsan-run", "in-process"])
@pytest.mark.pythons("3.12", DEBIAN_ID)
def test_composes_with_pytest_memray_and_xdist(python, fixtures, tmp_path, how):
    memray = BUILD / "memray" / ("cp3%d" % python.minor)
    if not (memray / "pytest_memray").is_dir():
        pytest.fail("%s has no pytest-memray: run scripts/install-deps" % memray, pytrace=False)
    project = write_project(tmp_path / "project", {"test_defects.py": MEMRAY_TESTS})
    path = project_env(python, fixtures)["PYTHONPATH"]
    result = run_pytest(python, fixtures, project, ["-n", "2", "-p", "extsan_pytest", "--memray"],
                        under_extsan=how == "under-extsan-run",
                        env={"PYTHONPATH": str(memray) + ":" + path})
    assert result.returncode == 1, result.describe()
    assert "MEMRAY REPORT" in result.stdout, result.describe()
    assert "Test was limited to 64.0KiB but allocated 1.0MiB" in result.stdout, result.describe()
    assert "MEMORY PROBLEMS test_defects.py::test_over_memray_limit" in result.stdout, result.describe()
    lines = listed(result)
    # Each worker reports the type its holders belong to: the hidden reference may come twice,
    # naming the test of either holder.
    assert set(lines) >= set(DEFECT_LINES[:1] + DEFECT_LINES[2:]), result.describe()
    assert {line for line in lines if not line.startswith("hidden-reference: %s, " % HOLDER)} \
        <= set(DEFECT_LINES), result.describe()
    assert last_line(result) == "1 failed, 5 passed", result.describe()
