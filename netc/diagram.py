"""`netc diagram`: a network as Graphviz DOT text, one node per layer, drawn top to bottom.

    dot(lenet5, analyze(lenet5)) -> lines 'digraph netc {', ..., 'input -> L0 [label="1×32×32"];',
                                    'L0 -> L1 [label="6×28×28"];', ..., '}'

Each node shows the layer's label, the report's type-and-arguments text and its parameters; each
edge the shape that flows on it, as the report writes shapes; each copy of a `( )*N` repetition is
a dashed box. dot() is pure; image() runs Graphviz's `dot` for .svg and .png. Every text from the
spec reaches the DOT through quoted(). Conventions: docs/diagram.md.
"""
from __future__ import annotations

import itertools
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field

from . import ir
from .errors import NetcError
from .passes import Analysis
from .report import shape_text
from .report import summary
from .span import escape

# Fill colour per layer kind (ColorBrewer "Paired", light shades): weights in blue, windows in
# green, fully connected in orange, nonlinearities in red, normalisation in yellow, the rest grey.
FILL = {
    "conv": "#a6cee3", "subsample": "#cab2d6", "pool": "#b2df8a", "globalavgpool": "#b2df8a",
    "fc": "#fdbf6f", "act": "#fb9a99", "softmax": "#fb9a99", "batchnorm": "#ffffb3",
    "dropout": "#d9d9d9", "flatten": "#d9d9d9", "add": "#e5d8bd", "concat": "#e5d8bd",
}
ENDS_FILL = "#ffffff"  # the input and output nodes
FORMATS = (".dot", ".svg", ".png")
# The largest net lowering allows (256 layers, 144 nested copies) took dot 0.1 s as SVG and
# 0.8 s as PNG: a minute means a stuck program.
RENDER_SECONDS = 60


def dot(net: ir.Net, analysis: Analysis) -> str:
    """The DOT text of `net` (lowering refuses a net without layers): the same net gives the
    same bytes."""
    last = len(net.layers) - 1
    lines = [
        "digraph netc {",
        "  rankdir=TB;",
        f"  label={quoted(net.name)};",
        "  labelloc=t;",
        '  fontname="Helvetica";',
        '  node [shape=box, style="rounded,filled", fontname="Helvetica"];',
        '  edge [fontname="Helvetica"];',
        f'  input [label="input", shape=ellipse, fillcolor="{ENDS_FILL}"];',
        *_copies(net, analysis, _repetitions(net), "  ", itertools.count()),
        f'  output [label="output", shape=ellipse, fillcolor="{ENDS_FILL}"];',
    ]
    for i in range(len(net.layers)):
        lines += [f"  {source} -> L{i} [label={quoted(shape_text(list(shape)))}];"
                  for source, shape in _inputs(net, analysis, i)]
    lines += [f"  L{last} -> output "
              f"[label={quoted(shape_text(list(analysis.shapes.outputs[last])))}];", "}"]
    return "\n".join(lines) + "\n"


def quoted(*lines: str) -> str:
    """A DOT quoted string that shows `lines` as given, one below the other: control characters
    as visible escapes (\\x1b), backslashes doubled (dot reads \\n, \\l, \\N as commands),
    double quotes escaped. Other characters stay as they are: DOT text is UTF-8."""
    def one(line: str) -> str:
        return escape(line).replace("\\", "\\\\").replace('"', '\\"')
    return '"' + "\\n".join(map(one, lines)) + '"'


def image(text: str, suffix: str) -> bytes:
    """The bytes of a diagram file: the DOT text itself for .dot, else what `dot -T<format>`
    makes of it. NetcError when `dot` is missing, fails or hangs."""
    if suffix == ".dot":
        return text.encode()
    program = shutil.which("dot")
    if program is None:
        raise NetcError(f"rendering {suffix} needs Graphviz's dot program: apt-get install "
                        f"graphviz (or brew install graphviz); netc diagram NET -o net.dot "
                        f"writes the DOT text without it")
    try:
        done = subprocess.run([program, f"-T{suffix[1:]}"], input=text.encode(),
                              capture_output=True, timeout=RENDER_SECONDS)
    except subprocess.TimeoutExpired:
        raise NetcError(f"dot did not finish rendering {suffix} in {RENDER_SECONDS} s") from None
    if done.returncode != 0:
        said = done.stderr.decode(errors="replace").strip().splitlines()
        raise NetcError(f"dot failed to render {suffix} (status {done.returncode})"
                        + (f": {said[0]}" if said else ""))
    return done.stdout


# ---- helpers

def _inputs(net: ir.Net, analysis: Analysis, i: int) -> list[tuple[str, ir.Shape]]:
    """The nodes layer i reads, in order, and the shape on each edge (an add[ | ] reads its
    input twice: two edges)."""
    return [("input" if j == ir.INPUT else f"L{j}", shape)
            for j, shape in zip(net.inputs_of(i), analysis.shapes.sources[i])]


@dataclass
class _Copy:
    """One copy of a `( )*N` group: the layers (indices) and nested copies it holds, in order."""

    origin: tuple[int, ...]  # as ir.Layer.origin: the copy number at each level of nesting
    items: list[int | _Copy] = field(default_factory=list)
    of: int = 0  # N, the group's number of copies


def _repetitions(net: ir.Net) -> list[int | _Copy]:
    """The layers nested in the copies their `origin` records. A copy is a run of consecutive
    layers that share an origin prefix; the copies of one group are adjacent and numbered 1, 2,
    ... N. Two adjacent groups repeated once each, `(a)*1 - (b)*1`, read as one copy: the IR
    keeps no other trace of where a group ends."""
    root: list[int | _Copy] = []
    stack: list[tuple[tuple[int, ...], list]] = [((), root)]
    for i, layer in enumerate(net.layers):
        while layer.origin[:len(stack[-1][0])] != stack[-1][0]:
            stack.pop()
        for depth in range(len(stack[-1][0]), len(layer.origin)):
            copy = _Copy(layer.origin[:depth + 1])
            stack[-1][1].append(copy)
            stack.append((copy.origin, copy.items))
        stack[-1][1].append(i)
    _count(root)
    return root


def _count(items: list[int | _Copy]) -> None:
    """Sets each copy's `of`: a group is a run of adjacent copies numbered 1, 2, ..."""
    group: list[_Copy] = []
    for item in [*items, None]:
        if isinstance(item, _Copy):
            _count(item.items)
            if group and item.origin[-1] == group[-1].origin[-1] + 1:
                group.append(item)
                continue
        for copy in group:
            copy.of = len(group)
        group = [item] if isinstance(item, _Copy) else []


def _copies(net: ir.Net, analysis: Analysis, items: list[int | _Copy], indent: str,
            clusters: Iterator[int]) -> list[str]:
    """The node lines of `items`, each copy a dashed cluster (numbered in order of appearance)."""
    lines = []
    for item in items:
        if isinstance(item, int):
            lines.append(indent + _node(net.layers[item], analysis.params.layers[item].total,
                                        item))
            continue
        lines += [f"{indent}subgraph cluster_{next(clusters)} {{",
                  f"{indent}  label={quoted(f'copy {item.origin[-1]} of {item.of}')};",
                  f"{indent}  style=dashed;"]
        lines += _copies(net, analysis, item.items, indent + "  ", clusters)
        lines.append(f"{indent}}}")
    return lines


def _node(layer: ir.AnyLayer, params: int, i: int) -> str:
    owns = [f"{params:,} params"] if params else []
    return (f"L{i} [label={quoted(layer.label, summary(layer), *owns)}, "
            f'fillcolor="{FILL[layer.kind]}"];')
