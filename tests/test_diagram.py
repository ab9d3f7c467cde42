"""`netc diagram`: the exact DOT text of a small net, LeNet-5's nodes and shapes against the report,
repetitions as clusters, hostile names escaped, the CLI's -o forms and the missing-dot message."""
import dataclasses
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from netc import diagram, ir, report
from netc.cli import main
from netc.lower import load_spec, lower
from netc.parse import parse_text
from netc.passes import analyze

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SMALL = """network small
input 1x8x8
conv(2, k=3) - maxpool(2) - fc(3) - softmax
"""
SMALL_DOT = r"""digraph netc {
  rankdir=TB;
  label="small";
  labelloc=t;
  fontname="Helvetica";
  node [shape=box, style="rounded,filled", fontname="Helvetica"];
  edge [fontname="Helvetica"];
  input [label="input", shape=ellipse, fillcolor="#ffffff"];
  L0 [label="conv1\nconv 2 3×3\n20 params", fillcolor="#a6cee3"];
  L1 [label="pool1\nmaxpool 2×2 s2", fillcolor="#b2df8a"];
  L2 [label="fc1\nfc 3\n57 params", fillcolor="#fdbf6f"];
  L3 [label="softmax1\nsoftmax", fillcolor="#fb9a99"];
  output [label="output", shape=ellipse, fillcolor="#ffffff"];
  input -> L0 [label="1×8×8"];
  L0 -> L1 [label="2×6×6"];
  L1 -> L2 [label="2×3×3"];
  L2 -> L3 [label="3"];
  L3 -> output [label="3"];
}
"""
QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')
DOT_MISSING = ("error: rendering .svg needs Graphviz's dot program: apt-get install graphviz "
               "(or brew install graphviz); netc diagram NET -o net.dot writes the DOT text "
               "without it\n")
needs_dot = pytest.mark.skipif(shutil.which("dot") is None,
                               reason="Graphviz's dot program is not installed here")


def dot_of(text: str, **overrides) -> str:
    net = lower(parse_text(text), overrides)
    return diagram.dot(net, analyze(net))


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def unquote(token: str) -> str:
    """What dot shows for a quoted string whose only escapes are \\\\, \\" and \\n."""
    return re.sub(r'\\(.)', lambda m: "\n" if m[1] == "n" else m[1], token[1:-1])


def test_small_net_is_exactly_this_dot_text():
    assert dot_of(SMALL) == SMALL_DOT


def test_lenet5_one_node_per_layer_and_the_reports_shapes_on_the_edges():
    net = load_spec(EXAMPLES / "lenet5.net", {})
    analysis = analyze(net)
    text = diagram.dot(net, analysis)
    rows = report.data(net, analysis, batch=32)["layers"]
    nodes = re.findall(r'^  (L\d+) \[label=("[^"]*")', text, re.M)
    assert len(net.layers) == 8  # softmax(10) is an fc and a softmax
    assert [n for n, _ in nodes] == [f"L{i}" for i in range(8)]
    assert [unquote(label).split("\n")[:2] for _, label in nodes] == \
        [[r["label"], r["summary"]] for r in rows]
    edges = re.findall(r"^  (\w+) -> (\w+) \[label=\"([^\"]*)\"\];", text, re.M)
    assert [(a, b) for a, b, _ in edges] == list(zip(["input", *(n for n, _ in nodes)],
                                                     [*(n for n, _ in nodes), "output"]))
    assert [shape for *_, shape in edges] == \
        [report.shape_text(rows[0]["in"])] + [report.shape_text(r["out"]) for r in rows]
    assert [s for *_, s in edges][:3] == ["1×32×32", "6×28×28", "6×14×14"]
    assert "c1\\nconv 6 5×5 tanh\\n156 params" in text


def test_every_layer_kind_has_a_fill_colour():
    assert set(diagram.FILL) == {kind.__name__.lower() for kind in ir.LAYER_KINDS}


def test_each_copy_of_a_repetition_is_a_cluster():
    text = dot_of("network r\ninput 1x16x16\nparam N = 1\n(conv(2, k=3, pad=1) - relu)*2 - "
                  "((c: conv(2, k=1))*2 - maxpool(2))*N - softmax\n", N=2)
    outline = [line.strip() for line in text.splitlines()
               if re.match(r"\s*(subgraph|label=\"copy|L\d+ \[|\})", line)]
    compact = " ".join(re.sub(r" \[.*|subgraph |label=|;", "", line) for line in outline)
    assert compact == (
        'cluster_0 { "copy 1 of 2" L0 L1 } cluster_1 { "copy 2 of 2" L2 L3 } '
        'cluster_2 { "copy 1 of 2" cluster_3 { "copy 1 of 2" L4 } '
        'cluster_4 { "copy 2 of 2" L5 } L6 } '
        'cluster_5 { "copy 2 of 2" cluster_6 { "copy 1 of 2" L7 } '
        'cluster_7 { "copy 2 of 2" L8 } L9 } L10 }')
    assert 'L7 [label="c_2_1\\n' in text  # the copy numbers in the label, as lowering makes them


def test_hostile_names_cannot_add_attributes_or_lines():
    net = load_spec(EXAMPLES / "lenet5.net", {})
    name = 'x" color=red\\"]; evil [label="\\l\x1b[31m\nü'
    first = dataclasses.replace(net.layers[0], label='c1"];\nevil -> input; a ["\\')
    hostile = dataclasses.replace(net, name=name, layers=(first, *net.layers[1:]))
    text = diagram.dot(hostile, analyze(net))
    assert len(text.splitlines()) == len(diagram.dot(net, analyze(net)).splitlines())
    skeleton = QUOTED.sub("Q", text)
    assert "evil" not in skeleton and "red" not in skeleton
    assert re.search(r"^  label=Q;$", skeleton, re.M)
    assert re.search(r"^  L0 \[label=Q, fillcolor=Q\];$", skeleton, re.M)
    tokens = QUOTED.findall(text)
    assert unquote(tokens[0]) == 'x" color=red\\"]; evil [label="\\l\\x1b[31m\\nü'
    assert unquote(next(t for t in tokens if t.startswith('"c1'))).split("\n")[0] == \
        'c1"];\\nevil -> input; a ["\\'


def test_quoted_doubles_backslashes_and_keeps_unicode():
    assert diagram.quoted('a\\nb"c', "ü×") == '"a\\\\nb\\"c\\nü×"'


def test_cli_prints_the_dot_text_and_writes_dot_files(capsys, tmp_path):
    spec = tmp_path / "small.net"
    spec.write_text(SMALL)
    assert run(capsys, "diagram", str(spec)) == (0, SMALL_DOT, "")
    code, out, err = run(capsys, "diagram", str(spec), "-o", str(tmp_path / "n.DOT"))
    assert (code, err) == (0, "") and out == f"wrote {tmp_path / 'n.DOT'}\n"
    assert (tmp_path / "n.DOT").read_text() == SMALL_DOT


def test_cli_refuses_other_suffixes_and_ranges(capsys, tmp_path):
    spec = tmp_path / "small.net"
    spec.write_text(SMALL)
    code, out, err = run(capsys, "diagram", str(spec), "-o", str(tmp_path / "n.pdf"))
    assert (code, out) == (2, "") and "-o: the file name must end in .dot, .svg, .png" in err
    assert not (tmp_path / "n.pdf").exists()
    code, _, err = run(capsys, "diagram", str(EXAMPLES / "design-rule.net"), "-D", "s=1..2")
    assert code == 2 and "diagram draws one network, but -D gives a range" in err


def test_missing_dot_says_what_to_install(tmp_path):
    spec = tmp_path / "small.net"
    spec.write_text(SMALL)
    empty = tmp_path / "bin"
    empty.mkdir()
    done = subprocess.run([sys.executable, "-m", "netc", "diagram", str(spec), "-o",
                           str(tmp_path / "n.svg")], capture_output=True, text=True,
                          env={**os.environ, "PATH": str(empty)}, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (2, "", DOT_MISSING)
    assert not (tmp_path / "n.svg").exists()


@needs_dot
def test_svg_holds_every_label_and_shape(capsys, tmp_path):
    out = tmp_path / "lenet5.svg"
    code, _, err = run(capsys, "diagram", str(EXAMPLES / "lenet5.net"), "-o", str(out))
    assert (code, err) == (0, "")
    texts = {t.text for t in ET.parse(out).iter("{http://www.w3.org/2000/svg}text")}
    net = load_spec(EXAMPLES / "lenet5.net", {})
    assert {layer.label for layer in net.layers} <= texts
    assert {"conv 6 5×5 tanh", "156 params", "6×28×28", "16×5×5", "lenet5"} <= texts


@needs_dot
def test_png_and_a_backslash_name_render_as_written(capsys, tmp_path):
    spec = tmp_path / "odd.net"
    spec.write_text('network "a\\l\\\\b ü"\ninput 1x8x8\nfc(2) - softmax\n')
    code, _, err = run(capsys, "diagram", str(spec), "-o", str(tmp_path / "odd.svg"))
    assert (code, err) == (0, "")
    texts = [t.text for t in ET.parse(tmp_path / "odd.svg").iter(
        "{http://www.w3.org/2000/svg}text")]
    assert "a\\l\\\\b ü" in texts
    code, _, err = run(capsys, "diagram", str(spec), "-o", str(tmp_path / "odd.png"))
    assert (code, err) == (0, "")
    assert (tmp_path / "odd.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
