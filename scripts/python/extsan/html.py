"""The HTML rendering of a report (`extsan report FILE.json --html OUT.html`): one
self-contained page (inline CSS, inline SVG, no script, nothing fetched) that opens with a
summary table linking to each finding; each finding leads with its headline and fix, then its
reference graph (drawn by Graphviz when `dot` is installed, as boxes and arrows in CSS when it is
not) and its stacks, each folded in <details> whose summary line names the extension's frames,
trimmed as the text is, with the source lines around each frame of an extension whose file is on
this machine."""

import html

from .common import plural
from .findings import Fold, allocation_note, finding_stacks, harness_package, is_extension_frame, \
    resolve_source, trimmed_frames
from .graph import finding_dot, finding_graph, render_svg
from .text import SUMMARY_COLUMNS, finding_evidence, finding_hint, finding_identity, finding_title, member_visits, \
    native_frame_line, python_frame_line, summary_rows

SOURCE_CONTEXT = 2  # lines shown before and after a frame's line

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 72em; color: #1d1d1d; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin: 0 0 .4em; }
h3 { font-size: 1em; margin: 1em 0 .3em; }
code, pre { font: 12px/1.4 ui-monospace, monospace; }
.finding { border: 1px solid #ccc; border-left: 6px solid #b00020; border-radius: 4px;
           padding: 1em 1.2em; margin: 1.2em 0; }
.finding.status-suppressed, .finding.status-baselined { border-left-color: #888; }
.kind { color: #b00020; font-weight: 600; }
.status { display: inline-block; padding: 0 .5em; border-radius: 3px; background: #eee;
          font-size: .85em; margin-left: .5em; }
.details { margin: .3em 0; padding-left: 1.2em; color: #444; }
table.summary { border-collapse: collapse; margin: 1em 0; }
table.summary th, table.summary td { border-bottom: 1px solid #ddd; padding: .2em .6em; text-align: left; }
details.stack-fold { margin: .4em 0; } details.stack-fold summary { cursor: pointer; }
.fold { color: #666; }
.stack { list-style: none; padding-left: 0; margin: 0; }
.stack li { margin: .15em 0; }
.source { background: #f6f6f6; border: 1px solid #e2e2e2; margin: .2em 0 .5em 2em; padding: .3em .6em;
          overflow-x: auto; }
.source .here { background: #ffe3e3; display: block; }
.hint { background: #eef6ee; border-left: 3px solid #3a7a3a; padding: .4em .8em; }
div.graph { margin: .8em 0; overflow-x: auto; }
/* The fallback drawing's classes are its own: Graphviz's SVG uses node, edge and graph. */
.graph-row { display: flex; flex-wrap: wrap; align-items: center; gap: .3em; margin: .3em 0; }
.box { border: 1px solid #333; border-radius: 3px; padding: .2em .6em; background: #fff; }
.arrow { display: inline-flex; flex-direction: column; align-items: center; font-size: .85em;
         color: #333; padding: 0 .2em; }
.arrow::after { content: "\\2192"; font-size: 1.4em; line-height: 1; }
.arrow.hidden { color: #b00020; font-weight: 600; }
.box.back { border-style: dashed; }
"""


def source_excerpt(frame, cache):
    """<pre> with the lines around the frame's line, or '' when the file is not here."""
    line = frame.get("line")
    path = resolve_source(frame) if isinstance(line, int) and line > 0 else None
    if not path:
        return ""
    if path not in cache:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                cache[path] = f.read().splitlines()
        except OSError:
            cache[path] = None
    lines = cache[path]
    if not lines or line > len(lines):
        return ""
    first, last = max(1, line - SOURCE_CONTEXT), min(len(lines), line + SOURCE_CONTEXT)
    rows = []
    for number in range(first, last + 1):
        text = html.escape("%5d  %s" % (number, lines[number - 1]))
        rows.append('<span class="here">%s</span>' % text if number == line else text + "\n")
    return '<pre class="source" title="%s">%s</pre>' % (html.escape(path), "".join(rows))


SUMMARY_FRAMES = 3  # frames named on a folded stack's summary line


def stack_summary(stack):
    """The line a folded stack shows: its title and its first frames of the user's code (the
    extension's native frames, the Python frames outside the test harness)."""
    if stack.is_python:
        mine = [f for f in stack.frames if not harness_package(f.get("file"))]
    else:
        mine = [f for f in stack.frames if is_extension_frame(f)]
    names = [f.get("function") or "??" for f in mine[:SUMMARY_FRAMES]]
    more = ", ..." if len(mine) > SUMMARY_FRAMES else ""
    return "%s: %s" % (stack.title, ", ".join(names) + more if names else "no frame of the user's code")


def stack_html(finding, stack, cache, full=False):
    items = []
    for item in trimmed_frames(stack, full):
        if isinstance(item, Fold):
            items.append('<li class="fold">%s</li>' % html.escape(item.text()))
            continue
        index, frame = item
        line = python_frame_line(frame) if stack.is_python else native_frame_line(index, frame)
        source = source_excerpt(frame, cache) if not stack.is_python and is_extension_frame(frame) else ""
        items.append("<li><code>%s</code>%s</li>" % (html.escape(line), source))
    note = allocation_note(finding, stack)
    return ('<details class="stack-fold"><summary>%s</summary>\n%s<ol class="stack">%s</ol></details>'
            % (html.escape(stack_summary(stack)), "<p>%s</p>" % html.escape(note) if note else "",
               "\n".join(items)))


def summary_html(findings):
    """The findings summary table, each row linking to its finding."""
    head = "".join("<th>%s</th>" % html.escape(column) for column in SUMMARY_COLUMNS)
    rows = []
    for row in summary_rows(findings):
        cells = ['<td><a href="#finding-%s">%s</a></td>' % (row[0], row[0])]
        cells += ["<td>%s</td>" % html.escape(cell) for cell in row[1:]]
        rows.append("<tr>%s</tr>" % "".join(cells))
    return '<table class="summary"><tr>%s</tr>\n%s</table>' % (head, "\n".join(rows))


def fallback_graph_html(graph):
    """Boxes and arrows: one row per path of the graph (a chain is one row, ending with a
    dashed box for the node it returns to; a type's referents are one row each)."""
    rows, row, current = [], [], None
    for source, target, label, hidden in graph.edges:
        if source != current:
            if row:
                rows.append(row)
            row = ['<span class="box">%s</span>' % html.escape(graph.nodes[source])]
        back = graph.cyclic and target == 0
        row.append('<span class="arrow%s">%s</span>' % (" hidden" if hidden else "", html.escape(label)))
        row.append('<span class="box%s">%s</span>' % (" back" if back else "", html.escape(graph.nodes[target])))
        current = target
    if row:
        rows.append(row)
    return "".join('<div class="graph-row">%s</div>' % "".join(r) for r in rows)


def graph_html(finding):
    """The finding's graph as inline SVG (Graphviz), else the CSS fallback; '' without one."""
    dot = finding_dot(finding)
    if dot is None:
        return ""
    svg = render_svg(dot)
    if svg is not None:
        return '<h3>reference graph</h3>\n<div class="graph" data-graph="svg">%s</div>' % svg
    graph = finding_graph(finding)
    if graph is None:
        return '<h3>reference graph</h3>\n<pre class="graph" data-graph="dot">%s</pre>' % html.escape(dot)
    return '<h3>reference graph</h3>\n<div class="graph" data-graph="fallback">%s</div>' % fallback_graph_html(graph)


def html_list(lines):
    return '<ul class="details">%s</ul>' % "".join("<li>%s</li>" % html.escape(line) for line in lines) if lines else ""


def finding_html(index, finding, cache, full=False):
    status = finding.get("status")
    parts = ['<section class="finding%s" id="finding-%d">' % (" status-" + status if status else "", index),
             '<h2><span class="kind">%s</span> %s%s</h2>' % (
                 html.escape(str(finding.get("kind"))), html.escape(finding_title(finding)),
                 '<span class="status">%s</span>' % html.escape(status) if status else ""),
             html_list(finding_identity(finding))]
    hint = finding_hint(finding)
    if hint:
        parts.append('<p class="hint"><b>Fix:</b> %s</p>' % html.escape(hint))
    visits = member_visits(finding)
    if visits:
        parts.append('<p class="hint"><code>%s</code></p>' % html.escape(visits))
    parts.append(html_list(finding_evidence(finding)))
    parts.append(graph_html(finding))
    parts += [stack_html(finding, stack, cache, full) for stack in finding_stacks(finding)]
    parts.append("</section>")
    return "\n".join(p for p in parts if p)


def render_html(document, title="extsan report", full=False):
    findings = document.get("findings", [])
    processes = document.get("processes", [])
    cache = {}
    summary = "%s in %s" % (plural(len(findings), "finding"), plural(len(processes), "process", "processes"))
    statuses = [f.get("status") for f in findings if f.get("status")]
    if statuses:
        summary += " (%s)" % ", ".join("%d %s" % (statuses.count(s), s)
                                       for s in ("new", "suppressed", "baselined") if s in statuses)
    body = [finding_html(i, f, cache, full) for i, f in enumerate(findings, 1)]
    table = summary_html(findings) if findings else ""
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<title>%s</title>\n<style>%s</style>\n</head>\n<body>\n<h1>%s</h1>\n<p>%s</p>\n%s\n%s\n"
            "</body>\n</html>\n" % (html.escape(title), STYLE, html.escape(title), html.escape(summary), table,
                                    "\n".join(body) or "<p>No findings.</p>"))
