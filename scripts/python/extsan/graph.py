"""The reference graph of a finding (a leaked cycle, or a type's hidden references) as Graphviz
text, as SVG when Graphviz's `dot` is installed, and as .dot files (`extsan report --dot DIR`)."""

import os
import re
import shutil
import subprocess
from typing import List, NamedTuple, Tuple

from .atomic import write_atomically
from .common import Failure, rel
from .findings import finding_chain

DOT_TIMEOUT = 30  # seconds for one graph; they have a handful of nodes
CHAIN_EDGE = re.compile(r" --(.+?)--> ")  # "A --label--> B": the runtime's chain notation
SVG_ID = re.compile(r'\sid="[^"]*"')


class Graph(NamedTuple):
    nodes: List[str]  # labels, by node index
    edges: List[Tuple[int, int, str, bool]]  # (from, to, label, hidden)
    cyclic: bool  # the last edge leads back to the first node


def is_hidden_edge(label):
    return label.startswith("hidden")


def chain_graph(chain):
    """The graph of a chain "A --l1--> B --l2--> A": one node per position, except that a
    chain ending with the type it started from is a cycle back to the first node."""
    parts = CHAIN_EDGE.split(chain)
    names, labels = parts[0::2], parts[1::2]
    cyclic = len(names) > 2 and names[-1] == names[0]
    nodes = names[:-1] if cyclic else names
    edges = []
    for i, label in enumerate(labels):
        target = 0 if cyclic and i == len(labels) - 1 else i + 1
        edges.append((i, target, label, is_hidden_edge(label)))
    return Graph(nodes, edges, cyclic)


def referents_graph(finding):
    """The type and what its instances hold that the collector does not see, from "referents"."""
    referents = [r for r in finding.get("referents") or () if isinstance(r, dict)]
    if not finding.get("type") or not referents:
        return None
    word = "hidden" if finding.get("kind") == "hidden-reference" else "not visited"
    nodes = [finding["type"]] + [str(r.get("type")) for r in referents]
    edges = [(0, i + 1, "%s @%s" % (word, r.get("path")), True) for i, r in enumerate(referents)]
    return Graph(nodes, edges, False)


def finding_graph(finding):
    """The finding's graph (chain first: it shows how the reference closes a cycle), or None."""
    chain = finding_chain(finding)
    if chain and CHAIN_EDGE.search(chain):
        return chain_graph(chain)
    return referents_graph(finding)


def dot_string(text):
    return '"%s"' % str(text).replace("\\", "\\\\").replace('"', '\\"')


def graph_dot(graph):
    lines = ["digraph extsan {", "  node [shape=box];"]
    lines += ["  n%d [label=%s];" % (i, dot_string(label)) for i, label in enumerate(graph.nodes)]
    for source, target, label, hidden in graph.edges:
        style = ", color=red, style=bold" if hidden else ""
        lines.append("  n%d -> n%d [label=%s%s];" % (source, target, dot_string(label), style))
    return "\n".join(lines + ["}"]) + "\n"


def finding_dot(finding):
    """Graphviz text of the finding: the runtime's own for a leaked cycle, else built from its
    chain or referents; None when the finding has no graph (capsule findings)."""
    if finding.get("dot"):
        return finding["dot"]
    graph = finding_graph(finding)
    return graph_dot(graph) if graph else None


def dot_program():
    return shutil.which("dot")


def render_svg(dot_text):
    """The SVG element Graphviz draws for dot_text, ready to inline in HTML (no XML prolog; no
    ids, which would repeat from one graph of the page to the next), or None when `dot` is not
    installed or fails on it."""
    program = dot_program()
    if not program:
        return None
    try:
        result = subprocess.run([program, "-Tsvg"], input=dot_text, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, universal_newlines=True, errors="backslashreplace",
                                timeout=DOT_TIMEOUT)
    except (OSError, subprocess.SubprocessError):
        return None
    start = result.stdout.find("<svg")
    if result.returncode != 0 or start < 0:
        return None
    return SVG_ID.sub("", result.stdout[start:])


def write_dot_files(findings, directory):
    """Writes each finding's graph to DIRECTORY/extsan-<fingerprint>.dot (or its index when it
    has no fingerprint); returns the paths written."""
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as e:
        raise Failure("--dot %s: cannot create it: %s" % (rel(directory), e.strerror or e))
    written = []
    for index, finding in enumerate(findings):
        text = finding_dot(finding)
        if text is None:
            continue
        name = "extsan-%s.dot" % (finding.get("fingerprint") or index)
        path = os.path.join(directory, name)
        write_atomically(path, text)
        written.append(path)
    return written
