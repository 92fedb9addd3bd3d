"""extsan report: a JSON report rendered for a person, as text and as one HTML page.

The reports come from real runs (`extsan run --json`) on a shared pyenv Python and Debian's
static 3.11: a capsule-without-gil defect (capsule_defects) and a leaked cycle through a hidden
reference (gc_defects through tests/fixtures/gc_workloads.py), merged with `extsan merge`. The
HTML page is parsed (html.parser): self-contained, every finding with its stacks and source
lines, and the reference graph as inline SVG when Graphviz's `dot` is on PATH, as the CSS
fallback when PATH has no `dot`.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from conftest import (
    BUILD,
    EXTSAN,
    EXTSAN_FAILURE_STATUS,
    FIXTURES_SRC,
    RUN_TIMEOUT,
    base_env,
    defect_sites,
    run_captured,
    run_extsan,
)

REPORT_PYTHONS = pytest.mark.pythons("3.12", "debian3.11")
WORKLOADS = FIXTURES_SRC / "gc_workloads.py"
CAPSULE_DEFECT = "import capsule_defects as m\nprint(m.get_pointer_without_gil(m.new_with_gil()))\n"
CHAIN = ("gc_defects.Holder --hidden @+16--> function --__closure__--> tuple --[0]--> cell "
         "--cell_contents--> gc_defects.Holder")
KINDS = ["capsule-without-gil", "hidden-reference", "leaked-cycle"]


@pytest.fixture(scope="session")
def report_cache():
    return {}


@pytest.fixture
def merged_report(python, fixtures, report_cache, tmp_path_factory):
    """A merged report of two processes (the capsule defect, the leaked cycle) for this Python;
    made once per Python and session."""
    if python.id not in report_cache:
        where = tmp_path_factory.mktemp("report-" + python.id)
        capsule = run_extsan(python, fixtures, where, code=CAPSULE_DEFECT, extsan_args=["--no-text-report"])
        cycle = run_extsan(python, fixtures, where, script=WORKLOADS, args=["holder", "garbage", "defect"],
                           extsan_args=["--no-text-report"])
        for run in (capsule, cycle):
            assert run.returncode == 0 and run.report["findings"], run.describe()
        merged = where / "merged.json"
        out = extsan("merge", merged, where / "report-0.json", where / "report-1.json")
        assert out.returncode == 0, out.stderr
        report_cache[python.id] = merged
    return report_cache[python.id]


def extsan(*args, env=None, cwd=None, python=None):
    """scripts/extsan ARGS (run by `python` when given: PATH then need not hold one)."""
    cli = ([python] if python else []) + [str(EXTSAN)] + [str(a) for a in args]
    return subprocess.run(cli, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=RUN_TIMEOUT,
                          env=env if env is not None else base_env(), cwd=cwd)


def path_without_dot(tmp_path):
    """A PATH on which there is no `dot` (nor anything else)."""
    empty = tmp_path / "empty-bin"
    empty.mkdir(exist_ok=True)
    return dict(base_env(), PATH=str(empty))


def require_dot():
    if shutil.which("dot") is None:
        pytest.fail("Graphviz's dot is not installed (scripts/install-deps installs the graphviz package)",
                    pytrace=False)


class Page(HTMLParser):
    """The parts of an HTML page the tests look at: every start tag with its attributes and the
    open elements around it, and the text inside each element by class."""

    def __init__(self, text):
        super().__init__(convert_charrefs=True)
        self.tags = []  # (tag, attrs, [enclosing (tag, attrs)])
        self.open = []
        self.text = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs, list(self.open)))
        if tag not in ("meta", "br", "img", "link", "input", "hr") and not self.get_starttag_text().endswith("/>"):
            self.open.append((tag, attrs))

    def handle_endtag(self, tag):
        for i in range(len(self.open) - 1, -1, -1):
            if self.open[i][0] == tag:
                del self.open[i:]
                break

    def handle_data(self, data):
        self.text.append((data, list(self.open)))

    def elements(self, tag, **attrs):
        return [(a, around) for t, a, around in self.tags
                if t == tag and all(a.get(k) == v for k, v in attrs.items())]

    def text_inside(self, tag, **attrs):
        """The text of all elements tag with attrs (and of their descendants)."""
        def inside(around):
            return any(t == tag and all(a.get(k) == v for k, v in attrs.items()) for t, a in around)

        return "".join(data for data, around in self.text if inside(around))


def check_self_contained(page, text):
    assert len(page.elements("html")) == 1 and page.elements("style"), text[:2000]
    assert not page.elements("script") and not page.elements("link") and not page.elements("img")
    for tag, attrs, _ in page.tags:  # no attribute that would load anything (xmlns only names)
        for name in ("src", "srcset", "href", "xlink:href", "data", "poster", "action"):
            assert name not in attrs or attrs[name].startswith("#"), (tag, name, attrs[name])
    assert "url(" not in text and "@import" not in text


def check_findings_and_sources(page, report):
    sections = page.elements("section")
    assert len(sections) == len(report["findings"]) == 3
    headings = page.text_inside("h2")
    for kind in KINDS:
        assert kind in headings
    source, line = defect_sites()[("get_pointer_without_gil", "PyCapsule_GetPointer")]
    defect_line = (FIXTURES_SRC / source).read_text().splitlines()[line - 1].strip()
    highlighted = page.text_inside("span", **{"class": "here"})
    assert defect_line in highlighted, "the defect's source line is not shown"
    excerpts = page.text_inside("pre", **{"class": "source"})
    context = (FIXTURES_SRC / source).read_text().splitlines()[line - 3].strip()
    assert context in excerpts, "the lines before the defect are not shown"
    assert "get_pointer_without_gil" in page.text_inside("ol", **{"class": "stack"})


# ---- text ---------------------------------------------------------------------------------------


@REPORT_PYTHONS
def test_text_report_shows_each_finding(merged_report):
    out = extsan("report", merged_report)
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    text = out.stdout
    source, line = defect_sites()[("get_pointer_without_gil", "PyCapsule_GetPointer")]
    for expected in ('extsan: capsule-without-gil: PyCapsule_GetPointer was called without the GIL '
                     '(capsule "capsule_defects.payload")',
                     "in get_pointer_without_gil ", "%s:%d" % (source, line),
                     "extsan: hidden-reference: gc_defects.Holder (C API) holds references the cyclic GC",
                     "extsan: leaked-cycle: 4 objects kept alive only by a hidden reference of gc_defects.Holder",
                     "cycle: " + CHAIN, 'in garbage_cycle', "HINT: set Py_TPFLAGS_HAVE_GC",
                     "fingerprint: "):
        assert expected in text, "%r not in:\n%s" % (expected, text[:6000])
    assert text.endswith("extsan: SUMMARY: 3 findings in 2 processes\n"), text[-500:]


@REPORT_PYTHONS
def test_text_report_of_one_process_report(python, fixtures, tmp_path):
    """A per-process extsan.PID.json renders as well as a merged report."""
    logs = tmp_path / "logs"
    run = run_extsan(python, fixtures, tmp_path, code=CAPSULE_DEFECT, json_report=False,
                     extsan_args=["--log-dir", str(logs), "--no-text-report"])
    assert run.returncode == 0, run.describe()
    (per_process,) = logs.glob("extsan.*.json")
    out = extsan("report", per_process)
    assert out.returncode == 0, out.stderr
    assert "PyCapsule_GetPointer was called without the GIL" in out.stdout
    assert out.stdout.endswith("SUMMARY: 1 finding in 1 process\n"), out.stdout[-300:]


# ---- HTML -----------------------------------------------------------------------------------------


def html_page(merged_report, tmp_path, **how):
    """`extsan report --html` of merged_report, parsed and checked for what every page has."""
    out_path = tmp_path / "report.html"
    out = extsan("report", merged_report, "--html", out_path, **how)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "" and out.stderr == ""
    text = out_path.read_text()
    page = Page(text)
    check_self_contained(page, text)
    check_findings_and_sources(page, json.loads(Path(merged_report).read_text()))
    return page


@REPORT_PYTHONS
def test_html_report_with_graphviz(merged_report, tmp_path):
    require_dot()
    page = html_page(merged_report, tmp_path)
    graphs = page.elements("div", **{"class": "graph"})
    assert [a.get("data-graph") for a, _ in graphs] == ["svg", "svg"], graphs
    svgs = page.elements("svg")
    assert len(svgs) == 2 and all(any(a.get("data-graph") == "svg" for _, a in around) for _, around in svgs)
    drawn = page.text_inside("svg")
    for label in ("gc_defects.Holder", "hidden @+16", "__closure__", "cell_contents"):
        assert label in drawn, "%r is not drawn" % label


@REPORT_PYTHONS
def test_html_report_without_graphviz(merged_report, tmp_path):
    page = html_page(merged_report, tmp_path, env=path_without_dot(tmp_path), python=sys.executable)
    assert not page.elements("svg")
    graphs = page.elements("div", **{"class": "graph"})
    assert [a.get("data-graph") for a, _ in graphs] == ["fallback", "fallback"], graphs
    cycle = page.text_inside("div", **{"data-graph": "fallback"})
    for label in ("gc_defects.Holder", "hidden @+16", "function", "__closure__", "tuple", "cell_contents"):
        assert label in cycle, "%r is not in the fallback graph" % label
    hidden_edges = page.elements("span", **{"class": "arrow hidden"})
    assert len(hidden_edges) == 2, hidden_edges  # one per graph
    assert page.elements("span", **{"class": "box back"}), "the cycle does not close on its first node"


@REPORT_PYTHONS
def test_dot_files(merged_report, tmp_path):
    require_dot()
    graphs = tmp_path / "graphs"
    out = extsan("report", merged_report, "--dot", graphs)
    assert out.returncode == 0, out.stderr
    assert "SUMMARY: 3 findings" in out.stdout
    files = sorted(graphs.iterdir())
    assert len(files) == 2 and all(re.fullmatch(r"extsan-[0-9a-f]{16}\.dot", f.name) for f in files), files
    for path in files:
        drawn = subprocess.run(["dot", "-Tsvg", str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, timeout=60)
        assert drawn.returncode == 0 and "<svg" in drawn.stdout, drawn.stderr


@REPORT_PYTHONS
def test_html_output_replaces_a_symlink(merged_report, tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("keep\n")
    out_path = tmp_path / "report.html"
    out_path.symlink_to(victim)
    out = extsan("report", merged_report, "--html", out_path)
    assert out.returncode == 0, out.stderr
    assert victim.read_text() == "keep\n"
    assert not out_path.is_symlink() and out_path.read_text().startswith("<!DOCTYPE html>")


# ---- bad input --------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, problem", [
    ("{", "not valid JSON"),
    ('{"extsan": 2, "findings": []}', 'not an extsan report of version 1'),
    ('{"extsan": 1, "findings": {}}', '"findings" is not a list of objects'),
], ids=["not-json", "version", "findings"])
def test_malformed_report_is_one_line_and_125(tmp_path, text, problem):
    path = tmp_path / "bad.json"
    path.write_text(text)
    out = extsan("report", path)
    assert out.returncode == EXTSAN_FAILURE_STATUS, out.stderr
    assert out.stdout == ""
    assert len(out.stderr.splitlines()) == 1 and out.stderr.startswith("extsan: %s: %s" % (path, problem)), out.stderr


def test_missing_report_and_unwritable_html(tmp_path):
    out = extsan("report", tmp_path / "missing.json")
    assert out.returncode == EXTSAN_FAILURE_STATUS
    assert out.stderr == "extsan: %s: cannot read it: No such file or directory\n" % (tmp_path / "missing.json")
    report = tmp_path / "empty.json"
    report.write_text('{"extsan": 1, "processes": [], "findings": []}')
    html_path = tmp_path / "no-such-dir" / "r.html"
    out = extsan("report", report, "--html", html_path)
    assert out.returncode == EXTSAN_FAILURE_STATUS
    assert out.stderr == "extsan: --html %s: directory %s does not exist\n" % (html_path, html_path.parent)
    assert os.listdir(tmp_path) == ["empty.json"]


# ---- the run's symbol cache -----------------------------------------------------------------------

HOLDER_DEFECT = "import gc_defects\nh = gc_defects.Holder()\nh.set_callback(h.touch)\n"


def preloaded_in(python, fixtures, tmp_path, logs, code):
    env = base_env(fixtures, {"LD_PRELOAD": str(BUILD / "libextsan.so"),
                              "EXTSAN_OPTIONS": "log_dir=%s:verbosity=1" % logs})
    out = run_captured([str(python.path), "-c", code], env, tmp_path)
    assert out.returncode == 0, out.stderr
    return out


def report_lines(out):
    """The text report's lines without the process id and the frames' addresses (which ASLR
    moves), and extsan's counts of symbols."""
    lines = [re.sub(r"^==\d+==|#\d+ 0x[0-9a-f]+ ", "", line) for line in out.stderr.splitlines()]
    report = [line for line in lines if not line.startswith("extsan: ")]
    counts = re.findall(r"symbols: (\d+) call sites from the run's cache, (\d+) described", out.stderr)
    return report, [(int(a), int(b)) for a, b in counts]


def test_processes_of_a_run_share_their_symbols(python, fixtures, tmp_path, shim_libraries):
    """Processes writing into one log_dir describe each call site once: the second process finds
    every frame of its report in the run's cache (log_dir/extsan-symbols.tsv), and its report is
    the first one's. A torn line (a process killed mid-write) and a line of another object
    version are skipped, not believed."""
    logs = tmp_path / "logs"
    first, first_counts = report_lines(preloaded_in(python, fixtures, tmp_path, logs, HOLDER_DEFECT))
    cache = logs / "extsan-symbols.tsv"
    lines = cache.read_text().splitlines()
    assert first_counts and first_counts[0][1] == len(lines) > 0, first_counts
    assert any("gc_defects.c" in line for line in lines), lines
    with open(cache, "a") as f:  # another build of the same object, then a torn line
        module, size, mtime, offset, *_ = lines[0].split("\t")
        f.write("\t".join([module, size, str(int(mtime) + 1), offset, "wrong", "wrong.c", "1"]) + "\n")
        f.write(module + "\t12")
    second, second_counts = report_lines(preloaded_in(python, fixtures, tmp_path, logs, HOLDER_DEFECT))
    assert second == first, "\n".join(second)
    assert second_counts[0][0] > 0 and second_counts[0][1] == 0, second_counts
    assert "wrong" not in "\n".join(second)


def test_a_planted_symbol_cache_is_not_used(python, fixtures, tmp_path, shim_libraries):
    """A link in log_dir where the cache would be is not followed: the process describes its
    frames itself and says why it did not use the cache."""
    logs = tmp_path / "logs"
    logs.mkdir()
    planted = tmp_path / "planted.tsv"
    planted.write_text("")
    (logs / "extsan-symbols.tsv").symlink_to(planted)
    out = preloaded_in(python, fixtures, tmp_path, logs, HOLDER_DEFECT)
    assert "extsan-symbols.tsv is not this user's regular file; not used" in out.stderr, out.stderr
    assert planted.read_text() == ""
    assert "gc_defects.c" in out.stderr, out.stderr
