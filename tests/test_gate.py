"""extsan gate: a CI step that fails on new findings, and its outputs.

Integration tests run `scripts/extsan gate ... -- python -c CODE` on a shared pyenv Python and
Debian's static 3.11 with the fixture extensions: capsule_defects (capsule-without-gil) and
gc_defects through tests/fixtures/gc_workloads.py (hidden-reference, leaked-cycle), and
leak_defects under extsan.leaks.check_leaks (reference-leak). They check
the exit status (0 clean, 3 new findings, CMD's own failure first, 125 for extsan's), the summary
line, suppressions and baselines, fingerprints across runs and rebuilds, the SARIF file against
the SARIF 2.1.0 schema, the JUnit file, and atomic writes. Unit tests check the pure parts
(scripts/python/extsan: fingerprints, the suppression parser and matcher, the baseline reader).
"""

import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import NamedTuple, Optional, Tuple

import jsonschema
import pytest

from conftest import (
    BUILD,
    EXTSAN,
    EXTSAN_FAILURE_STATUS,
    EXTSAN_VERSION,
    FIXTURES_SRC,
    ROOT,
    RUN_TIMEOUT,
    base_env,
    check_process_checked,
    defect_sites,
    rebuild_fixtures_elsewhere,
)

sys.path.insert(0, str(ROOT / "scripts" / "python"))
from extsan import baseline, fingerprint, suppressions  # noqa: E402
from extsan.findings import finding_line  # noqa: E402

GATE_PYTHONS = pytest.mark.pythons("3.12", "debian3.11")
NEW_FINDINGS_STATUS = 3
# The OASIS SARIF 2.1.0 JSON schema (oasis-tcs/sarif-spec, sarif-2.1/schema/), kept with the tests.
SARIF_SCHEMA = ROOT / "tests" / "data" / "sarif-schema-2.1.0.json"
WORKLOADS = FIXTURES_SRC / "gc_workloads.py"
OPTIONS_TOOL = BUILD / "extsan-options"
NEW_LINE = "extsan: new: "

# Each program first creates the file $GATE_MARKER (tmp_path/ran), so that a test can tell that
# the gate stopped before it.
PRELUDE = "import os, sys\nopen(os.environ['GATE_MARKER'], 'w').close()\nimport capsule_defects as m\n"
DEFECT = PRELUDE + "print(m.get_pointer_without_gil(m.new_with_gil()))\n"
CLEAN = DEFECT.replace("_without_gil", "_with_gil")
OTHER_DEFECT = PRELUDE + "print(m.get_pointer_with_gil(m.new_without_gil()))\n"
GC_DEFECT = [str(WORKLOADS), "holder", "garbage", "defect"]  # a script and its arguments


class Gate(NamedTuple):
    returncode: int
    stdout: str
    stderr: str
    report: Optional[dict]  # the --json output, when written
    command: Tuple[str, ...]  # the program's argv

    @property
    def summary(self):
        """The summary line: the last line but the new findings' lines that end the output."""
        lines = self.stderr.splitlines()
        while lines and lines[-1].startswith(NEW_LINE):
            lines.pop()
        return lines[-1] if lines else ""

    @property
    def new_lines(self):
        """The lines after the summary line, one per new finding, line numbers as N."""
        lines = self.stderr.splitlines()
        count = 0
        while count < len(lines) and lines[len(lines) - 1 - count].startswith(NEW_LINE):
            count += 1
        return [re.sub(r"(\.c):\d+$", r"\1:N", line) for line in lines[len(lines) - count:]]

    def describe(self):
        report = json.dumps(self.report, indent=1)[:8000] if self.report is not None else "none"
        return "status %d\n--- stdout ---\n%s\n--- stderr ---\n%s\n--- report ---\n%s" % (
            self.returncode, self.stdout[-4000:], self.stderr[-8000:], report)

    def check_process_checked(self):
        """The program's own process is in the --json output, complete: a verdict of "0 new
        findings" is extsan's, not the sign that it never ran."""
        check_process_checked(self.report, self.describe(), argv=self.command)

    def statuses(self):
        """{(kind, status)} of the findings of the --json output."""
        return sorted((f["kind"], f["status"]) for f in self.report["findings"])


def run_gate(python, pythonpath, cwd, program, *gate_args, env=None, json_path=None):
    """`extsan gate [--json FILE] ARGS -- python -c PROGRAM` in cwd (`python PROGRAM...` for a
    list: a script and its arguments); json_path=False: no --json."""
    if json_path is None:
        json_path = Path(cwd) / "gate.json"
    command = [str(python.path)] + (["-c", program] if isinstance(program, str) else program)
    cli = [str(EXTSAN), "gate"] + (["--json", str(json_path)] if json_path else []) + \
        [str(a) for a in gate_args] + ["--"] + command
    out = subprocess.run(cli, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(cwd),
                         env=base_env(pythonpath, env), timeout=RUN_TIMEOUT, stdin=subprocess.DEVNULL)
    report = None
    if json_path and Path(json_path).exists():
        report = json.loads(Path(json_path).read_text())
    return Gate(out.returncode, out.stdout, out.stderr, report, tuple(command))


@pytest.fixture
def gate(python, fixtures, tmp_path):
    """gate(code, *args, **kw): run_gate with this test's Python and fixtures, in tmp_path."""

    def runner(code, *args, **kwargs):
        kwargs.setdefault("pythonpath", fixtures)
        kwargs.setdefault("cwd", tmp_path)
        kwargs["env"] = dict(kwargs.get("env") or {}, GATE_MARKER=str(tmp_path / "ran"))
        return run_gate(python, kwargs.pop("pythonpath"), kwargs.pop("cwd"), code, *args, **kwargs)

    return runner


def write(path, text):
    path.write_text(text)
    return path


def summary(new, suppressed, baselined, command_status=0):
    noun = "finding" if new == 1 else "findings"
    line = "extsan: %d new %s, %d suppressed, %d baselined" % (new, noun, suppressed, baselined)
    return line + (" (the command failed with status %d)" % command_status if command_status else "")


# ---- the verdict --------------------------------------------------------------------------------


@GATE_PYTHONS
def test_clean_code_passes(gate):
    result = gate(CLEAN)
    assert result.returncode == 0, result.describe()
    assert result.stdout == "42\n", result.describe()
    assert result.summary == summary(0, 0, 0) and result.new_lines == [], result.describe()
    assert result.report["findings"] == [], result.describe()
    result.check_process_checked()


@GATE_PYTHONS
def test_planted_defect_fails_with_the_new_findings_status(gate):
    result = gate(DEFECT)
    assert result.returncode == NEW_FINDINGS_STATUS, result.describe()
    assert result.stdout == "42\n", result.describe()
    assert result.summary == summary(1, 0, 0), result.describe()
    (finding,) = result.report["findings"]
    assert finding["api"] == "PyCapsule_GetPointer", result.describe()
    assert finding["status"] == "new", result.describe()
    assert re.fullmatch(r"[0-9a-f]{16}", finding["fingerprint"]), result.describe()
    # The output ends with the new finding: kind, subject, fingerprint, first extension frame.
    assert result.new_lines == [
        NEW_LINE + "capsule-without-gil: PyCapsule_GetPointer capsule_defects.payload, fingerprint %s, "
        "at get_pointer_without_gil capsule_defects.c:N" % finding["fingerprint"]], result.describe()


@GATE_PYTHONS
def test_gc_defect_fails_and_its_suppressions_pass(gate, tmp_path):
    result = gate(GC_DEFECT)
    assert result.returncode == NEW_FINDINGS_STATUS, result.describe()
    assert result.summary == summary(2, 0, 0), result.describe()
    assert result.statuses() == [("hidden-reference", "new"), ("leaked-cycle", "new")], result.describe()
    fingerprints = {f["kind"]: f["fingerprint"] for f in result.report["findings"]}
    assert sorted(result.new_lines) == [
        NEW_LINE + "%s: gc_defects.Holder, fingerprint %s, at add_type gc_defects.c:N" % (kind, fingerprints[kind])
        for kind in ("hidden-reference", "leaked-cycle")], result.describe()
    rules = write(tmp_path / "gc.supp", "hidden-reference:gc_defects.Holder\nleaked-cycle:gc_defects.Holder\n")
    result = gate(GC_DEFECT, "--suppressions", rules)
    assert result.returncode == 0, result.describe()
    assert result.summary == summary(0, 2, 0), result.describe()
    assert "warning" not in result.stderr, result.describe()
    assert result.statuses() == [("hidden-reference", "suppressed"), ("leaked-cycle", "suppressed")]
    assert [(s["rule"], s["used"]) for s in result.report["suppressions"]] == \
        [("hidden-reference:gc_defects.Holder", 1), ("leaked-cycle:gc_defects.Holder", 1)], result.describe()


@GATE_PYTHONS
def test_suppression_turns_the_failure_into_a_pass(gate, tmp_path):
    rules = write(tmp_path / "extsan.supp", "# accepted for now\ncapsule-without-gil:get_pointer_without_gil\n")
    result = gate(DEFECT, "--suppressions", rules)
    assert result.returncode == 0, result.describe()
    assert result.summary == summary(0, 1, 0), result.describe()
    (finding,) = result.report["findings"]
    assert finding["status"] == "suppressed", result.describe()
    assert finding["suppressed"] == "capsule-without-gil:get_pointer_without_gil", result.describe()


@GATE_PYTHONS
def test_suppressions_named_in_extsan_options_count_too(gate, tmp_path):
    rules = write(tmp_path / "extsan.supp", "capsule-without-gil:PyCapsule_GetPointer\n")
    result = gate(DEFECT, env={"EXTSAN_OPTIONS": "suppressions=%s" % rules})
    assert result.returncode == 0, result.describe()
    assert result.summary == summary(0, 1, 0), result.describe()


@GATE_PYTHONS
def test_unused_rules_are_warned_about_once_for_the_whole_run(gate, tmp_path):
    """Two processes, each using one rule the other does not: no warning for either; the rule
    no process used gets one warning (not one per process)."""
    code = DEFECT + ("import subprocess\nsubprocess.run([sys.executable, '-c', 'import capsule_defects as m; "
                     "m.get_name_without_gil(m.new_with_gil())'], check=True)\n")
    rules = write(tmp_path / "extsan.supp", "capsule-without-gil:get_pointer_without_gil\n"
                                            "capsule-without-gil:get_name_without_gil\n"
                                            "leaked-cycle:nothing.*\n")
    result = gate(code, "--suppressions", rules)
    assert result.returncode == 0, result.describe()
    assert len(result.report["processes"]) == 2, result.describe()
    assert result.summary == summary(0, 2, 0), result.describe()
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert warnings == ["extsan: warning: suppression leaked-cycle:nothing.* (extsan.supp:3) was not used "
                        "in this run"], result.describe()


@GATE_PYTHONS
def test_baseline_turns_the_failure_into_a_pass(gate, tmp_path):
    recorded = tmp_path / "extsan-baseline.json"
    result = gate(DEFECT, "--update-baseline", recorded)
    assert result.returncode == 0, result.describe()
    assert result.summary == summary(0, 0, 1), result.describe()
    (finding,) = result.report["findings"]
    document = json.loads(recorded.read_text())
    assert document == {"extsan_baseline": 1, "fingerprints": [{
        "fingerprint": finding["fingerprint"], "kind": "capsule-without-gil",
        "subject": "PyCapsule_GetPointer capsule_defects.payload",
        "first_frame": "get_pointer_without_gil@capsule_defects.c"}]}, result.describe()

    result = gate(DEFECT, "--baseline", recorded)
    assert result.returncode == 0, result.describe()
    assert result.summary == summary(0, 0, 1) and result.new_lines == [], result.describe()
    assert result.statuses() == [("capsule-without-gil", "baselined")], result.describe()

    result = gate(OTHER_DEFECT, "--baseline", recorded)  # another defect is new all the same
    assert result.returncode == NEW_FINDINGS_STATUS, result.describe()
    assert result.summary == summary(1, 0, 0), result.describe()


LEAK_DEFECT = """
import leak_defects
from extsan.leaks import check_leaks
check_leaks(lambda: leak_defects.append_new_ref([]), repeat=2)
check_leaks(lambda: leak_defects.append_released([]), repeat=2)  # its twin: silent
"""


@GATE_PYTHONS
def test_reference_leak_fails_then_its_baseline_and_suppression_pass(gate, fixtures, tmp_path):
    """A reference leak is a new finding like any other: its line, a fingerprint stable from one
    run to the next (its baseline entry matches), and a suppression by type."""
    pythonpath = "%s:%s" % (fixtures, ROOT / "scripts" / "python")
    result = gate(LEAK_DEFECT, pythonpath=pythonpath)
    assert result.returncode == NEW_FINDINGS_STATUS, result.describe()
    (finding,) = result.report["findings"]
    assert result.new_lines == [NEW_LINE + "reference-leak: int, fingerprint %s, at append_number "
                                "leak_defects.c:N" % finding["fingerprint"]], result.describe()

    recorded = tmp_path / "extsan-baseline.json"
    assert gate(LEAK_DEFECT, "--update-baseline", recorded, pythonpath=pythonpath).returncode == 0
    result = gate(LEAK_DEFECT, "--baseline", recorded, pythonpath=pythonpath)
    assert result.returncode == 0, result.describe()
    assert result.statuses() == [("reference-leak", "baselined")], result.describe()

    rules = write(tmp_path / "extsan.supp", "reference-leak:int\n")
    result = gate(LEAK_DEFECT, "--suppressions", rules, pythonpath=pythonpath)
    assert result.returncode == 0, result.describe()
    assert result.summary == summary(0, 1, 0), result.describe()


@GATE_PYTHONS
@pytest.mark.parametrize("program", [DEFECT, CLEAN], ids=["defect", "clean"])
def test_the_command_failure_wins(gate, program):
    result = gate(program + "sys.exit(5)\n")
    assert result.returncode == 5, result.describe()
    new = 1 if program == DEFECT else 0
    assert result.summary == summary(new, 0, 0, command_status=5), result.describe()
    result.check_process_checked()


def test_command_not_found_is_127(tmp_path):
    out = subprocess.run([str(EXTSAN), "gate", "--", str(tmp_path / "no-such-command")], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, cwd=str(tmp_path), env=base_env(), timeout=RUN_TIMEOUT)
    assert out.returncode == 127, out.stderr
    assert out.stderr.splitlines()[-1] == summary(0, 0, 0, command_status=127), out.stderr


# ---- malformed inputs and unwritable outputs: 125 before the command starts --------------------

MALFORMED_SUPPRESSIONS = [
    ("no-colon", "capsule-without-gil:a\nhidden-reference nb_gc.X\n",
     "2: 'hidden-reference nb_gc.X' is not kind:pattern (no ':')"),
    ("unknown-kind", "# c\nleak:malloc\n", "2: unknown kind 'leak' (capsule-without-gil, call-without-gil, hidden-reference, "
                                         "incomplete-traverse, leaked-cycle, traverse-missing-gc, reference-leak, "
                                         "deadly-signal or *)"),
    ("empty-pattern", "capsule-without-gil:   # nothing\n", "1: empty pattern after 'capsule-without-gil:'"),
]


def check_stopped_before_the_command(result, tmp_path, message):
    assert result.returncode == EXTSAN_FAILURE_STATUS, result.describe()
    assert result.stderr == "extsan: %s\n" % message, result.describe()
    assert result.stdout == "", result.describe()
    assert not (tmp_path / "ran").exists(), "the command ran:\n" + result.describe()


@GATE_PYTHONS
@pytest.mark.parametrize("text, message", [m[1:] for m in MALFORMED_SUPPRESSIONS],
                         ids=[m[0] for m in MALFORMED_SUPPRESSIONS])
def test_malformed_suppression_file(gate, tmp_path, text, message):
    rules = write(tmp_path / "bad.supp", text)
    result = gate(DEFECT, "--suppressions", rules)
    check_stopped_before_the_command(result, tmp_path, "%s:%s" % (rules, message))


@GATE_PYTHONS
def test_missing_suppression_file(gate, tmp_path):
    rules = tmp_path / "missing.supp"
    result = gate(DEFECT, "--suppressions", rules)
    check_stopped_before_the_command(result, tmp_path, "%s: cannot read it: No such file or directory" % rules)


MALFORMED_BASELINES = [
    ("not-json", "{fingerprints", "not valid JSON: "),
    ("not-an-object", "[]", 'not a baseline (a JSON object with "extsan_baseline": 1 was expected)'),
    ("wrong-version", '{"extsan_baseline": 2, "fingerprints": []}', 'not a baseline of version 1 ("extsan_baseline": 2)'),
    ("no-fingerprints", '{"extsan_baseline": 1}', '"fingerprints" is missing or not a list'),
    ("entry-not-object", '{"extsan_baseline": 1, "fingerprints": ["abc"]}', '"fingerprints"[0] is not an object'),
    ("missing-keys", '{"extsan_baseline": 1, "fingerprints": [{"fingerprint": "0123456789abcdef", "kind": "x"}]}',
     '"fingerprints"[0] has no "subject", "first_frame"'),
    ("bad-fingerprint", '{"extsan_baseline": 1, "fingerprints": [{"fingerprint": "XYZ", "kind": "k", '
                        '"subject": "s", "first_frame": null}]}',
     '"fingerprints"[0]: "fingerprint" is not 16 lowercase hex digits: "XYZ"'),
]


@GATE_PYTHONS
@pytest.mark.parametrize("text, message", [m[1:] for m in MALFORMED_BASELINES], ids=[m[0] for m in MALFORMED_BASELINES])
def test_malformed_baseline(gate, tmp_path, text, message):
    write(tmp_path / "baseline.json", text)
    result = gate(DEFECT, "--baseline", "baseline.json")
    assert result.stderr.startswith("extsan: --baseline baseline.json: " + message), result.describe()
    check_stopped_before_the_command(result, tmp_path, result.stderr[len("extsan: "):].rstrip("\n"))


@GATE_PYTHONS
@pytest.mark.parametrize("flag", ["--json", "--sarif", "--junit", "--update-baseline"])
def test_unwritable_output_stops_before_the_command(gate, tmp_path, flag):
    missing_dir = tmp_path / "no-such-dir" / "out"
    result = gate(DEFECT, flag, missing_dir, json_path=False)
    check_stopped_before_the_command(result, tmp_path, "%s %s: directory %s does not exist"
                                     % (flag, missing_dir, missing_dir.parent))
    (tmp_path / "a-dir").mkdir()
    result = gate(DEFECT, flag, tmp_path / "a-dir", json_path=False)
    check_stopped_before_the_command(result, tmp_path, "%s %s: is a directory" % (flag, tmp_path / "a-dir"))


@GATE_PYTHONS
def test_outputs_replace_a_symlink_instead_of_following_it(gate, tmp_path):
    """A symlink planted at an output's path is replaced by the file; its target is untouched."""
    victim = write(tmp_path / "victim", "not to be overwritten\n")
    outputs = {flag: tmp_path / ("out" + flag.replace("-", "_")) for flag in ("--json", "--sarif", "--junit")}
    for path in outputs.values():
        path.symlink_to(victim)
    args = [item for flag, path in outputs.items() for item in (flag, path)]
    result = gate(DEFECT, *args, json_path=False)
    assert result.returncode == NEW_FINDINGS_STATUS, result.describe()
    assert victim.read_text() == "not to be overwritten\n"
    for path in outputs.values():
        assert not path.is_symlink() and path.is_file(), path
    assert json.loads(outputs["--json"].read_text())["findings"][0]["status"] == "new"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


# ---- fingerprints ---------------------------------------------------------------------------------


@GATE_PYTHONS
def test_fingerprints_survive_runs_and_a_rebuild_elsewhere(python, gate, tmp_path):
    """Equal over two runs, and for the extension rebuilt from a copy of its sources in another
    directory with functions aligned to 64 bytes: its module path, source path and the defect's
    offset all differ (checked, so that the test proves the rebuild changed them)."""
    first, second = gate(DEFECT), gate(DEFECT)
    # Alignment moves the functions without changing their code, and so the frames.
    rebuilt_dir = rebuild_fixtures_elsewhere(python, tmp_path / "elsewhere", "-falign-functions=64")
    rebuilt = gate(DEFECT, pythonpath=rebuilt_dir)
    runs = (first, second, rebuilt)
    described = "\n".join(run.describe() for run in runs)
    for run in runs:
        assert run.returncode == NEW_FINDINGS_STATUS, run.describe()
    findings = [one_finding(run) for run in runs]
    assert len({f["fingerprint"] for f in findings}) == 1, described
    before, after = [defect_frame(f, described) for f in (findings[0], findings[2])]
    assert os.path.dirname(after["module"]) == str(rebuilt_dir), described
    assert before["module"] != after["module"], described
    copied_source = (tmp_path / "elsewhere" / "fixtures" / "capsule_defects.c").resolve()
    assert Path(rebuilt_dir, after["file"]).resolve() == copied_source, described
    assert Path(before["file"]).name == Path(after["file"]).name and before["file"] != after["file"], described
    assert before["offset"] != after["offset"], "the rebuild did not move the defect:\n" + described
    assert before["line"] == after["line"], described


def one_finding(run):
    findings = run.report["findings"] if run.report else []
    assert len(findings) == 1, run.describe()
    return findings[0]


def defect_frame(finding, described):
    """The frame of the planted defect's function."""
    frames = [f for f in finding["stack"] if f.get("function") == "get_pointer_without_gil"]
    assert frames and frames[0].get("file"), described
    return frames[0]


CAPSULE_FINDING = {
    "kind": "capsule-without-gil", "api": "PyCapsule_New", "capsule": "mymod.handle", "count": 1, "pid": 7,
    "stack": [
        {"function": "make_handle", "module": "/build/a/mymod.cpython-312-x86_64-linux-gnu.so",
         "offset": "0x11ff", "pc": "0x7f7b9da031ff", "file": "../../src/mymod.c", "line": 42},
        {"function": "cfunction_call", "module": "/usr/lib/libpython3.12.so.1.0", "offset": "0x10",
         "pc": "0x7f00", "file": "Objects/methodobject.c", "line": 509},
        {"function": "helper", "module": "/build/a/mymod.cpython-312-x86_64-linux-gnu.so",
         "offset": "0x1000", "pc": "0x7f7b9da03000", "file": "../../src/helper.c", "line": 7},
        {"function": "__libc_start_main", "module": "/lib/x86_64-linux-gnu/libc.so.6", "offset": "0x27305",
         "pc": "0x7f9483445305"},
    ],
}


def changed(finding, frame_index=None, **fields):
    copy = json.loads(json.dumps(finding))
    (copy["stack"][frame_index] if frame_index is not None else copy).update(fields)
    return copy


def test_fingerprint_ignores_lines_addresses_and_directories():
    base = fingerprint.fingerprint(CAPSULE_FINDING)
    same = [
        changed(CAPSULE_FINDING, 0, line=99, offset="0x2222", pc="0x1234"),
        changed(CAPSULE_FINDING, 0, file="/elsewhere/src/mymod.c",
                module="/other/mymod.cpython-311-x86_64-linux-gnu.so"),
        changed(CAPSULE_FINDING, 0, function="make_handle.constprop.0"),
        changed(CAPSULE_FINDING, 1, function="other_runtime_function"),  # not the extension's
        changed(CAPSULE_FINDING, count=5, pid=99),
    ]
    assert [fingerprint.fingerprint(f) for f in same] == [base] * len(same)


def test_fingerprint_changes_with_what_identifies_the_defect():
    base = fingerprint.fingerprint(CAPSULE_FINDING)
    different = [
        changed(CAPSULE_FINDING, 0, function="make_other_handle"),
        changed(CAPSULE_FINDING, 0, file="../../src/other.c"),
        changed(CAPSULE_FINDING, 2, function="other_helper"),
        changed(CAPSULE_FINDING, api="PyCapsule_GetPointer"),
        changed(CAPSULE_FINDING, capsule="mymod.other"),
        changed(CAPSULE_FINDING, kind="other-kind"),
    ]
    prints = [fingerprint.fingerprint(f) for f in different]
    assert base not in prints and len(set(prints)) == len(prints)
    assert re.fullmatch(r"[0-9a-f]{16}", base)


def test_fingerprint_keeps_the_top_three_extension_frames():
    deep = changed(CAPSULE_FINDING)
    extra = {"module": "/build/a/mymod.so", "offset": "0x1", "pc": "0x1"}
    deep["stack"][3:3] = [dict(extra, function="third"), dict(extra, function="fourth")]
    assert fingerprint.extension_frame_identities(deep) == ["make_handle@mymod.c", "helper@helper.c", "third@mymod"]
    deeper = changed(deep, 4, function="fifth")
    assert fingerprint.fingerprint(deeper) == fingerprint.fingerprint(deep)


def test_fingerprint_of_a_type_finding_uses_the_type_creation_stack():
    """A type's allocation example changes with the order tests run in; its creation does not."""
    frame = {"module": "/b/gc_defects.so", "offset": "0x1", "pc": "0x1", "file": "gc_defects.c", "line": 1}
    finding = {"kind": "hidden-reference", "type": "gc_defects.Holder",
               "type_stack": [dict(frame, function="add_type")],
               "stack": [dict(frame, function="holder_new")]}
    other_site = dict(finding, stack=[dict(frame, function="holder_new_elsewhere")])
    assert fingerprint.fingerprint(finding) == fingerprint.fingerprint(other_site)
    assert fingerprint.first_frame_identity(finding) == "add_type@gc_defects.c"


def test_finding_line():
    """The one-line form of the gate's new findings and the pytest plugin's summary: kind,
    subject, (test,) (fingerprint,) the first extension frame, or its module and offset."""
    line = finding_line(CAPSULE_FINDING, fingerprint=True)
    assert line == "capsule-without-gil: PyCapsule_New mymod.handle, fingerprint None, " \
                   "at make_handle mymod.c:42"
    finding = dict(changed(CAPSULE_FINDING, 0, function=None), test="t.py::test_x", capsule=None)
    del finding["stack"][0]["file"]
    assert finding_line(finding, test=True) == \
        "capsule-without-gil: PyCapsule_New (unnamed capsule), in test t.py::test_x, " \
        "at ?? mymod.cpython-312-x86_64-linux-gnu.so+0x11ff"
    runtime_only = dict(CAPSULE_FINDING, stack=CAPSULE_FINDING["stack"][1:2])
    assert finding_line(runtime_only, test=True) == \
        "capsule-without-gil: PyCapsule_New mymod.handle, in no test, at no frame of an extension"


# ---- a suppressions file's use over the run (the runtime parses and matches it) ----------------


def test_rule_use_is_summed_over_the_processes():
    processes = [{"suppressions": [{"rule": "*:a", "file": "r.supp", "line": 1, "used": 2},
                                   {"rule": "*:b", "file": "r.supp", "line": 2, "used": 0},
                                   {"rule": "*:c", "file": "r.supp", "line": 3, "used": 0}]},
                 {"suppressions": [{"rule": "*:b", "file": "r.supp", "line": 2, "used": 1},
                                   {"rule": "*:c", "file": "r.supp", "line": 3, "used": 0}]}, {}]
    usage = suppressions.suppression_usage(processes)
    assert [(u["rule"], u["used"]) for u in usage] == [("*:a", 2), ("*:b", 1), ("*:c", 0)]


def test_baseline_round_trip(tmp_path):
    finding = dict(CAPSULE_FINDING, fingerprint=fingerprint.fingerprint(CAPSULE_FINDING))
    path = tmp_path / "b.json"
    baseline.write_baseline(str(path), [finding, dict(finding, pid=8)])
    accepted = baseline.load_baseline(str(path))
    assert list(accepted) == [finding["fingerprint"]]
    assert accepted[finding["fingerprint"]]["first_frame"] == "make_handle@mymod.c"


# ---- SARIF and JUnit ------------------------------------------------------------------------------


def sarif_validator():
    schema = json.loads(SARIF_SCHEMA.read_text())
    return jsonschema.Draft4Validator(schema)


def check_sarif(path):
    document = json.loads(Path(path).read_text())
    errors = sorted(sarif_validator().iter_errors(document), key=lambda e: list(e.absolute_path))
    assert not errors, "%s is not SARIF 2.1.0: %s at %s" % (
        path, errors[0].message, "/".join(map(str, errors[0].absolute_path)))
    assert document["version"] == "2.1.0"
    (run,) = document["runs"]
    driver = run["tool"]["driver"]
    assert (driver["name"], driver["version"]) == ("extsan", EXTSAN_VERSION)
    rules = {rule["id"]: rule for rule in driver["rules"]}
    assert {rules[i]["name"] for i in ("EXT001", "EXT002", "EXT003", "EXT004", "EXT005")} == {
        "capsule-without-gil", "hidden-reference", "incomplete-traverse", "leaked-cycle", "traverse-missing-gc"}
    for rule in rules.values():
        assert rule["shortDescription"]["text"] and rule["fullDescription"]["text"] and rule["help"]["text"]
    return run


@GATE_PYTHONS
def test_sarif_of_a_new_finding(gate, tmp_path):
    """Run from the checkout (as CI does): the location is the defect's file:line relative to it."""
    sarif = tmp_path / "extsan.sarif"
    result = gate(DEFECT, "--sarif", sarif, cwd=ROOT, json_path=tmp_path / "gate.json")
    assert result.returncode == NEW_FINDINGS_STATUS, result.describe()
    run = check_sarif(sarif)
    (sarif_result,) = run["results"]
    (finding,) = result.report["findings"]
    assert sarif_result["ruleId"] == "EXT001" and sarif_result["level"] == "error"
    assert "PyCapsule_GetPointer" in sarif_result["message"]["text"]
    assert sarif_result["partialFingerprints"] == {"extsanFingerprint/v1": finding["fingerprint"]}
    assert "baselineState" not in sarif_result and "suppressions" not in sarif_result
    source, line = defect_sites()[("get_pointer_without_gil", "PyCapsule_GetPointer")]
    physical = sarif_result["locations"][0]["physicalLocation"]
    assert physical["artifactLocation"] == {"uri": "tests/fixtures/" + source, "uriBaseId": "SRCROOT"}
    assert physical["region"] == {"startLine": line}
    assert run["originalUriBaseIds"]["SRCROOT"]["uri"] == "file://%s/" % ROOT
    (stack,) = sarif_result["stacks"]
    assert len(stack["frames"]) == len(finding["stack"])
    assert stack["frames"][0]["location"] == sarif_result["locations"][0]
    assert stack["frames"][0]["module"].startswith("capsule_defects.")


@GATE_PYTHONS
def test_sarif_of_baselined_and_suppressed_findings(gate, tmp_path):
    sarif = tmp_path / "extsan.sarif"
    rules = write(tmp_path / "gc.supp", "leaked-cycle:gc_defects.Holder\n")
    result = gate(GC_DEFECT, "--suppressions", rules, "--update-baseline", tmp_path / "b.json", "--sarif", sarif)
    assert result.returncode == 0, result.describe()
    assert result.summary == summary(0, 1, 1), result.describe()
    run = check_sarif(sarif)
    by_rule = {r["ruleId"]: r for r in run["results"]}
    assert sorted(by_rule) == ["EXT002", "EXT004"], run["results"]
    assert by_rule["EXT002"]["baselineState"] == "unchanged" and "suppressions" not in by_rule["EXT002"]
    assert by_rule["EXT004"]["suppressions"][0]["kind"] == "external"
    assert "leaked-cycle:gc_defects.Holder" in by_rule["EXT004"]["suppressions"][0]["justification"]
    titles = [stack["message"]["text"] for stack in by_rule["EXT002"]["stacks"]]
    assert titles == ["allocated by Python code", "allocated at", "type created at"], titles


@GATE_PYTHONS
def test_sarif_locates_a_type_finding_at_the_member(gate, tmp_path):
    """A hidden reference is located where the member that holds it is declared (from debug
    info), not at the Python line that allocated an instance; the leaked cycle of the same type
    names no member and is located where the type was created."""
    sarif = tmp_path / "extsan.sarif"
    result = gate(GC_DEFECT, "--sarif", sarif, cwd=ROOT, json_path=tmp_path / "gate.json")
    assert result.returncode == NEW_FINDINGS_STATUS, result.describe()
    by_rule = {r["ruleId"]: r for r in check_sarif(sarif)["results"]}
    source = (FIXTURES_SRC / "gc_defects.c").read_text().splitlines()
    hidden = by_rule["EXT002"]["locations"][0]
    physical = hidden["physicalLocation"]
    assert physical["artifactLocation"] == {"uri": "tests/fixtures/gc_defects.c", "uriBaseId": "SRCROOT"}
    assert "PyObject *callback;" in source[physical["region"]["startLine"] - 1], hidden
    assert hidden["logicalLocations"][0]["fullyQualifiedName"] == "HolderObject.callback"
    created = by_rule["EXT004"]["locations"][0]
    assert created["logicalLocations"][0]["fullyQualifiedName"] == "add_type", created


@GATE_PYTHONS
def test_sarif_of_a_clean_run(gate, tmp_path):
    result = gate(CLEAN, "--sarif", tmp_path / "extsan.sarif")
    assert result.returncode == 0, result.describe()
    result.check_process_checked()
    assert check_sarif(tmp_path / "extsan.sarif")["results"] == []


def junit_cases(path):
    root = ET.parse(str(path)).getroot()
    (suite,) = root.findall("testsuite")
    assert suite.get("name") == "extsan"
    cases = suite.findall("testcase")
    assert suite.get("tests") == str(len(cases))
    return suite, cases


@GATE_PYTHONS
def test_junit(gate, tmp_path):
    junit = tmp_path / "extsan.xml"
    result = gate(DEFECT, "--junit", junit)
    assert result.returncode == NEW_FINDINGS_STATUS, result.describe()
    suite, (case,) = junit_cases(junit)
    assert suite.get("failures") == "1" and suite.get("skipped") == "0"
    failure = case.find("failure")
    assert "PyCapsule_GetPointer" in failure.get("message")
    assert "get_pointer_without_gil" in failure.text and "capsule_defects.c" in failure.text
    assert case.get("classname") == "extsan.capsule-without-gil"

    rules = write(tmp_path / "extsan.supp", "capsule-without-gil:get_pointer_without_gil\n")
    result = gate(DEFECT, "--suppressions", rules, "--junit", junit)
    assert result.returncode == 0, result.describe()
    suite, (case,) = junit_cases(junit)
    assert suite.get("failures") == "0" and suite.get("skipped") == "1"
    assert case.find("skipped").get("message") == "suppressed by capsule-without-gil:get_pointer_without_gil"

    result = gate(CLEAN, "--junit", junit)
    assert result.returncode == 0, result.describe()
    result.check_process_checked()
    suite, (case,) = junit_cases(junit)
    assert suite.get("failures") == "0" and list(case) == [], ET.tostring(suite)
