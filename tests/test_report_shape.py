"""What a report shows a person: each finding leads with one headline (kind, subject, where in
the user's code), then the fix, then the evidence; native stacks show the extension's frames and
their neighbours with the rest folded into one line, Python stacks stop at the test harness, and
an allocation without a frame of an extension points at the type's tp_new/tp_init instead. The
option full_stacks (`--full-stacks` of run and report) shows every frame. The JSON report keeps
every frame, each marked in_extension. The demo's report fits on one screen per finding, text and
HTML alike.
"""

import json
import os
import re
import subprocess
import sys

import pytest

from conftest import (DEBIAN_ID, EXTSAN, PYTHON_IDS, ROOT, RUN_TIMEOUT, base_env, defect_sites,
                      run_extsan)
from pytest_projects import one, run_pytest, write_project
from test_report import Page

sys.path.insert(0, str(ROOT / "scripts" / "python"))
from extsan.findings import NOT_EXTENSION, is_extension_frame  # noqa: E402
from extsan.fingerprint import add_fingerprints  # noqa: E402

SHAPE_PYTHONS = pytest.mark.pythons("3.12", DEBIAN_ID)
KINDS = ("capsule-without-gil", "hidden-reference", "incomplete-traverse", "leaked-cycle",
         "traverse-missing-gc", "deadly-signal")
CAPSULE_DEFECT = "import capsule_defects as m\nprint(m.get_pointer_without_gil(m.new_with_gil()))\n"
# A holder whose tp_new is the runtime's PyType_GenericNew, left in a garbage cycle.
GENERIC_DEFECT = """\
import gc
import gc_defects


def make():
    h = gc_defects.GenericHolder()
    h.set_callback(lambda: h.touch())


make()
gc.collect()
"""
LINES_PER_FINDING = 25  # the demo's report: one screen per finding
# The demo's HTML page (4 findings, with Graphviz's SVG): 25,985 bytes before stacks were
# trimmed and folded, about 17,700 after (Python 3.11).
DEMO_HTML_BYTES = 20000
FOLD = re.compile(r"^    \.\.\. (\d+) frames? in (.+)$")


def blocks(text, prefix=r"==\d+==extsan: "):
    """{kind: [lines of each block]}: a block starts with a finding's headline and ends at the
    blank line after it."""
    found, current = {}, None
    headline = re.compile(prefix + r"(%s): " % "|".join(KINDS))
    for line in text.splitlines():
        m = headline.match(line)
        if m:
            current = [line]
            found.setdefault(m.group(1), []).append(current)
        elif current is not None and line:
            current.append(line)
        else:
            current = None
    return found


def stack_lines(block, title):
    """The lines of the block's stack titled `title` (frames and folds), without the title."""
    start = next(i for i, line in enumerate(block) if line.startswith("  %s:" % title))
    lines = []
    for line in block[start + 1:]:
        if not line.startswith("    "):
            break
        lines.append(line)
    return lines


def first_appearance(names):
    seen = []
    for name in names:
        if name not in seen:
            seen.append(name)
    return seen


def extsan(*args, env=None, cwd=None):
    return subprocess.run([str(EXTSAN)] + [str(a) for a in args], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=RUN_TIMEOUT,
                          env=env if env is not None else base_env(), cwd=cwd)


# ---- native stacks: the JSON's marks, the text's trimming -------------------------------------


@pytest.mark.pythons(*PYTHON_IDS)
def test_native_stack_trimmed_to_the_extension_and_marked(python, fixtures, tmp_path):
    run = run_extsan(python, fixtures, tmp_path, code=CAPSULE_DEFECT)
    assert run.returncode == 0, run.describe()
    (finding,) = run.findings()
    frames = finding["stack"]
    source, line = defect_sites()[("get_pointer_without_gil", "PyCapsule_GetPointer")]
    # JSON: every frame kept and marked; the fixture's true, the runtime's false.
    assert frames[0]["function"] == "get_pointer_without_gil" and frames[0]["in_extension"] is True
    runtime = [f for f in frames if NOT_EXTENSION.match(os.path.basename(f["module"] or ""))]
    assert runtime and all(f["in_extension"] is False for f in runtime), frames
    runtime_name = "python3.11" if python.id == DEBIAN_ID else "libpython%d.%d.so" % (3, python.minor)
    assert any(os.path.basename(f["module"]).startswith(runtime_name) for f in runtime), frames
    # The runtime and the report tools decide alike (the rule without the mark is Python's own).
    for frame in frames:
        unmarked = {k: v for k, v in frame.items() if k != "in_extension"}
        assert is_extension_frame(unmarked) == frame["in_extension"], frame

    (block,) = blocks(run.stderr)["capsule-without-gil"]
    assert block[0].endswith("; at get_pointer_without_gil %s:%d" % (source, line)), block[0]
    assert block[1].startswith("  HINT: "), block
    shown = stack_lines(block, "called at")
    assert "in get_pointer_without_gil " in shown[0] and shown[1].startswith("    #1 "), shown
    fold = FOLD.match(shown[2])
    assert fold and len(shown) == 3, shown
    folded = frames[2:]
    assert int(fold.group(1)) == len(folded), (shown, len(frames))
    assert fold.group(2) == ", ".join(first_appearance(
        os.path.basename(f["module"]) if f["module"] else "??" for f in folded)), shown
    assert runtime_name in fold.group(2)

    full = run_extsan(python, fixtures, tmp_path, code=CAPSULE_DEFECT, extsan_args=["--full-stacks"])
    assert full.returncode == 0, full.describe()
    (block,) = blocks(full.stderr)["capsule-without-gil"]
    shown = stack_lines(block, "called at")
    assert not any(FOLD.match(s) for s in shown) and len(shown) == len(full.findings()[0]["stack"]), shown


@SHAPE_PYTHONS
def test_report_tool_trims_as_the_runtime_does(python, fixtures, tmp_path):
    run = run_extsan(python, fixtures, tmp_path, code=CAPSULE_DEFECT)
    assert run.returncode == 0, run.describe()
    report = tmp_path / "report-0.json"
    runtime_block = blocks(run.stderr)["capsule-without-gil"][0]
    out = extsan("report", report)
    assert out.returncode == 0, out.stderr
    (block,) = blocks(out.stdout, prefix="extsan: ")["capsule-without-gil"]
    assert block[0].split("extsan: ", 1)[1] == runtime_block[0].split("extsan: ", 1)[1]
    hint = next(i for i, line in enumerate(block) if line.startswith("  HINT: "))
    assert hint < block.index("  called at:"), block
    assert stack_lines(block, "called at") == stack_lines(runtime_block, "called at")
    full = extsan("report", report, "--full-stacks")
    (block,) = blocks(full.stdout, prefix="extsan: ")["capsule-without-gil"]
    assert len(stack_lines(block, "called at")) == len(run.findings()[0]["stack"])


# ---- an allocation the runtime made -----------------------------------------------------------


@SHAPE_PYTHONS
def test_allocation_without_extension_frame_points_at_tp_init(python, fixtures, tmp_path):
    run = run_extsan(python, fixtures, tmp_path, code=GENERIC_DEFECT)
    assert run.returncode == 0, run.describe()
    for kind in ("hidden-reference", "leaked-cycle"):
        finding = one(run.findings(kind), run.describe())
        assert finding["type"] == "gc_defects.GenericHolder"
        assert finding["stack"] and not any(f["in_extension"] for f in finding["stack"]), finding["stack"]
        assert finding["tp_new"]["function"] == "PyType_GenericNew" and finding["tp_new"]["in_extension"] is False
        assert finding["tp_init"]["function"] == "generic_holder_init" and finding["tp_init"]["in_extension"]
        assert finding["tp_init"]["file"].endswith("gc_defects.c"), finding["tp_init"]
    report = tmp_path / "report-0.json"
    for text, prefix in ((run.stderr, r"==\d+==extsan: "), (extsan("report", report).stdout, "extsan: ")):
        for kind in ("hidden-reference", "leaked-cycle"):
            (block,) = blocks(text, prefix)[kind]
            (note,) = [line for line in block if line.startswith("  allocated at:")]
            assert re.match(r"  allocated at: no frame of an extension; tp_new: PyType_GenericNew .* \(the "
                            r"runtime's\); tp_init: generic_holder_init gc_defects\.c:\d+; the type was "
                            r"created at add_type gc_defects\.c:\d+$", note), note
            assert len(stack_lines(block, "allocated at")) <= 2, block
    full = extsan("report", report, "--full-stacks").stdout
    (block,) = blocks(full, "extsan: ")["leaked-cycle"]
    assert len(stack_lines(block, "allocated at")) == len(run.findings("leaked-cycle")[0]["stack"])


# ---- Python stacks: cut at the test harness ---------------------------------------------------

LEAK_TEST = """\
import gc_defects


def make_cycle():
    c = gc_defects.Holder()
    c.set_callback(lambda: c.touch())


def test_leak():
    make_cycle()
"""


@SHAPE_PYTHONS
def test_python_stack_cut_below_the_test_function(python, fixtures, tmp_path):
    project = write_project(tmp_path / "project", {"test_leak.py": LEAK_TEST})
    result = run_pytest(python, fixtures, project, ["-p", "extsan_pytest", "-q"])
    assert result.returncode == 0, result.describe()
    finding = one(result.findings("leaked-cycle"), result.describe())
    functions = [f["function"] for f in finding["python_stack"]]
    assert functions[:2] == ["make_cycle", "test_leak"] and len(functions) > 3, functions
    (block,) = blocks(result.stderr)["leaked-cycle"]
    shown = stack_lines(block, "allocated by Python code")
    assert [s.rsplit(" in ", 1)[1] for s in shown[:2]] == ["make_cycle", "test_leak"], shown
    fold = FOLD.match(shown[2])
    assert fold and len(shown) == 3, shown
    assert int(fold.group(1)) == len(functions) - 2
    assert fold.group(2).split(", ")[:2] == ["pytest", "pluggy"], shown
    out = extsan("report", project / "extsan.json")
    (block,) = blocks(out.stdout, "extsan: ")["leaked-cycle"]
    assert stack_lines(block, "allocated by Python code") == shown

    full = run_pytest(python, fixtures, project, ["-p", "extsan_pytest", "-q"], extsan_args=["--full-stacks"])
    (block,) = blocks(full.stderr)["leaked-cycle"]
    shown = stack_lines(block, "allocated by Python code")
    assert len(shown) == len(functions) and any("/_pytest/" in s for s in shown), shown


# ---- the demo: one screen per finding ---------------------------------------------------------


def check_blocks_fit(found, where):
    assert sorted(found) == ["capsule-without-gil", "hidden-reference", "leaked-cycle"], where
    assert sum(len(b) for b in found.values()) == 4, where
    for kind, kind_blocks in found.items():
        for block in kind_blocks:
            assert len(block) <= LINES_PER_FINDING, "%s: %d lines\n%s" % (kind, len(block), "\n".join(block))


@SHAPE_PYTHONS
def test_demo_fits_one_screen_per_finding(python, tmp_path):
    report = tmp_path / "demo.json"
    out = extsan("demo", "--python", python.path, "--json", report, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    found = blocks(out.stderr)
    check_blocks_fit(found, out.stderr)
    (table_head,) = [line for line in out.stderr.splitlines() if re.match(r"==\d+==extsan:   kind +subject +count +test$", line)]
    rows = out.stderr.splitlines()
    start = rows.index(table_head)
    assert len([r for r in rows[start + 1:] if re.match(r"==\d+==extsan:   [a-z-]+ ", r)]) == 4, out.stderr
    assert re.match(r"==\d+==extsan: SUMMARY: 4 findings", rows[start + 5]), out.stderr

    # A hidden reference leads with the member that holds it, the fix with its Py_VISIT.
    (hidden,) = found["hidden-reference"]
    assert re.search(r"; in HolderObject\.callback gc_defects\.c:\d+$", hidden[0]), hidden
    assert "  HINT: in tp_traverse: Py_VISIT(self->callback);" in hidden[:4], hidden

    text = extsan("report", report)
    assert text.returncode == 0, text.stderr
    check_blocks_fit(blocks(text.stdout, "extsan: "), text.stdout)
    (tool_hidden,) = blocks(text.stdout, "extsan: ")["hidden-reference"]
    assert tool_hidden[0].split("extsan: ", 1)[1] == hidden[0].split("extsan: ", 1)[1], tool_hidden
    assert "  HINT: in tp_traverse: Py_VISIT(self->callback);" in tool_hidden, tool_hidden

    full = extsan("demo", "--python", python.path, "--full-stacks", cwd=tmp_path)
    assert max(len(b) for bs in blocks(full.stderr).values() for b in bs) > LINES_PER_FINDING, full.stderr


@SHAPE_PYTHONS
def test_demo_html_has_summary_and_folded_stacks(python, tmp_path):
    report = tmp_path / "demo.json"
    out = extsan("demo", "--python", python.path, "--json", report, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    findings = add_fingerprints(json.loads(report.read_text()))["findings"]
    page_path = tmp_path / "demo.html"
    out = extsan("report", report, "--html", page_path)
    assert out.returncode == 0, out.stderr
    text = page_path.read_text()
    assert len(text.encode()) < DEMO_HTML_BYTES, len(text.encode())
    page = Page(text)
    (table, _), = page.elements("table", **{"class": "summary"})
    links = [a["href"] for a, around in page.elements("a") if any(t == "table" for t, _ in around)]
    assert links == ["#finding-%d" % i for i in range(1, len(findings) + 1)], links
    assert all(page.elements("section", id=link[1:]) for link in links)
    for finding in findings:
        assert finding["fingerprint"] in page.text_inside("table", **{"class": "summary"})
    folds = page.elements("details", **{"class": "stack-fold"})
    stacks = page.elements("ol", **{"class": "stack"})
    assert folds and len(folds) == len(stacks) and all("open" not in attrs for attrs, _ in folds)
    assert all(any(t == "details" for t, _ in around) for _, around in stacks), "a stack is not folded"
    summaries = page.text_inside("summary")
    assert "called at: get_pointer_without_gil" in summaries, summaries
    # Source lines only for the extension's frames: the runtime's sources never show.
    excerpts = [a.get("title", "") for a, _ in page.elements("pre", **{"class": "source"})]
    assert excerpts and all("/tests/fixtures/" in path for path in excerpts), excerpts
    # The full page is bigger: the folds are what kept it small.
    full_path = tmp_path / "full.html"
    assert extsan("report", report, "--html", full_path, "--full-stacks").returncode == 0
    assert len(full_path.read_bytes()) > len(text.encode())
