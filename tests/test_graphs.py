"""Networks as graphs (issue 11): add[ ], concat[ ], blocks and @references through lowering,
the passes, the report, the diagram and the generated C. The gradients of graph nets against the
numpy reference and finite differences are in tests/test_layers.py (GRAPH_SPECS); the generated C
under sanitizers in tests/test_sanitizers.py ("graph")."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

import netc
import reference as ref
from netc import cli, diagram, ir, report
from netc.codegen.views import net_view
from netc.lower import load_spec
from netc.passes import analyze
from netc.passes.receptive import rf_from
from test_spec_errors import check, fails

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
FAST = ["-O1"]
RELU = ir.Activation("relu")


def graph(net: ir.Net) -> list[tuple[str, str, tuple[str, ...]]]:
    """(label, kind, what it reads) per layer: the graph, readable in an assertion."""
    return [(layer.label, layer.kind, tuple(net.input_label(j) for j in net.inputs_of(i)))
            for i, layer in enumerate(net.layers)]


# ---- the language

def test_a_residual_block_lowers_to_an_add_of_its_branches():
    net = load_spec("input 3x8x8\nconv(4, k=3, pad=1) - add[ conv(4, k=3, pad=1) - bn | ] - "
                    "relu\n")
    assert graph(net) == [("conv1", "conv", ("input",)), ("conv2", "conv", ("conv1",)),
                          ("bn1", "batchnorm", ("conv2",)), ("add1", "add", ("bn1", "conv1")),
                          ("relu1", "act", ("add1",))]


def test_a_chain_lowers_to_the_same_ir_as_before_graphs():
    # every layer of a chain keeps inputs None: equal to a net built without them
    net = load_spec(EXAMPLES / "lenet5.net")
    assert net.is_chain and all(layer.inputs is None for layer in net.layers)
    explicit = tuple(dataclasses.replace(layer, inputs=(i - 1,))
                     for i, layer in enumerate(net.layers))
    assert ir.Net(net.name, net.input, explicit, net.loss, net.params) == net


def test_concat_with_a_reference_and_blocks_with_scoped_labels():
    net = load_spec("""input 3x8x8
        block unit(c, k=1) = conv: conv(c, k=k, pad=(k - 1)/2) - relu
        c1: conv(4, k=3, pad=1) - u: unit(6, k=3) - unit(5) -
        concat[ | @c1 - conv(2, k=1) | @u | maxpool(3, stride=1, pad=1) ]
        """)
    assert graph(net) == [
        ("c1", "conv", ("input",)), ("u.conv", "conv", ("c1",)), ("u.relu1", "act", ("u.conv",)),
        ("unit1.conv", "conv", ("u.relu1",)), ("unit1.relu1", "act", ("unit1.conv",)),
        ("conv2", "conv", ("c1",)), ("pool1", "pool", ("unit1.relu1",)),
        ("concat1", "concat", ("unit1.relu1", "conv2", "u.relu1", "pool1"))]
    conv = net.layer("u.conv")
    assert (conv.out_channels, conv.kernel, conv.pad) == (6, (3, 3), (1, 1))
    assert analyze(net).shapes.outputs[-1] == (5 + 2 + 6 + 5, 8, 8)


def test_blocks_repeat_and_references_find_their_own_copy():
    net = load_spec("""input 2x4x4
        block twice(c) = a: conv(c, k=1) - add[ relu | @a ]
        (t: twice(3))*2 - (b: conv(3, k=1) - add[ | @b ])*2
        """)
    assert graph(net) == [
        ("t_1.a", "conv", ("input",)), ("t_1.relu1", "act", ("t_1.a",)),
        ("t_1.add1", "add", ("t_1.relu1", "t_1.a")),
        ("t_2.a", "conv", ("t_1.add1",)), ("t_2.relu1", "act", ("t_2.a",)),
        ("t_2.add1", "add", ("t_2.relu1", "t_2.a")),
        ("b_1", "conv", ("t_2.add1",)), ("add1", "add", ("b_1", "b_1")),
        ("b_2", "conv", ("add1",)), ("add2", "add", ("b_2", "b_2"))]


def test_a_block_call_label_names_its_output_for_references():
    net = load_spec("input 4\nblock two = fc(4) - fc(4)\nx: two - add[ fc(4) | @x | @input ]\n")
    assert graph(net)[-1] == ("add1", "add", ("fc1", "x.fc2", "input"))


def test_merges_nest_and_repeat():
    net = load_spec("input 2x4x4\nadd[ add[ relu | ] | concat[ | ] - conv(2, k=1) ]*2\n")
    kinds = [layer.kind for layer in net.layers]
    assert kinds == ["act", "add", "concat", "conv", "add"] * 2
    assert [layer.origin for layer in net.layers] == [(1,)] * 5 + [(2,)] * 5


@pytest.mark.parametrize("where, caret, text, message", [
    ("2:23", "^" * 21, "input 2x8x8\nconv(4, k=3, pad=1) - add[ conv(8, k=1) | ]\n",
     "add1: the branches of add[ ] must have one shape, but branch 1 gives 8×8×8 and branch 2 "
     "gives 4×8×8"),
    ("2:1", "^" * 29, "input 2x8x8\nconcat[ conv(4, k=3) | relu ]\n",
     "concat1: the branches of concat[ ] must have one height and width, but branch 1 gives "
     "4×6×6 and branch 2 gives 2×8×8"),
])
def test_merge_shape_errors_name_both_shapes(where, caret, text, message):
    with pytest.raises(netc.SpecError) as info:
        analyze(load_spec(text))
    check(info.value, text, where, caret, message)


@pytest.mark.parametrize("name, where, caret, text, message", [
    ("unknown_reference", "2:19", "^^^", "input 2x8x8\nc1: relu - add[ | @c2 ]\n",
     "@c2: no earlier layer is labelled 'c2'"),
    ("later_reference", "2:8", "^^^", "input 2x8x8\nadd[ | @c2 ] - c2: relu\n",
     "@c2: 'c2' labels a later layer (line 2); a reference can only name an earlier one"),
    ("too_many_arguments", "3:13", "^", "input 2x8x8\nblock b(c) = conv(c, k=1)\nrelu - b(2, 3)\n",
     "block b takes at most 1 positional argument (c)"),
    ("unknown_argument", "3:6", "^^^^^^", "input 2x8x8\nblock b(c) = conv(c, k=1)\nb(2, size=3)\n",
     "block b has no argument 'size'"),
    ("missing_argument", "3:1", "^^^^", "input 2x8x8\nblock b(c, k) = conv(c, k=k)\nb(2)\n",
     "block b needs the argument 'k'"),
    ("keyword_argument", "3:3", "^^^^^^^", "input 2x8x8\nblock b(c) = conv(c, k=1)\nb(relu(2))\n",
     "block b: argument 'c' must be a number"),
    ("recursion", "3:18", "^", "input 2x8x8\nblock a = relu - b\nblock b = relu - a\nrelu - a\n",
     "block 'a' calls itself (a → b → a)"),
    ("one_branch", "2:1", "^" * 11, "input 2x8x8\nadd[ relu ]\n",
     "add[ ] needs two or more branches, separated by '|'"),
    ("unknown_merge", "2:1", "^^^", "input 2x8x8\nsum[ relu | ]\n",
     "unknown merge 'sum'"),
    ("block_named_like_a_layer", "2:1", "^" * 17, "input 2x8x8\nblock conv = relu\nrelu\n",
     "a block cannot be named 'conv': that is a built-in layer"),
    ("block_twice", "3:1", "^" * 14, "input 4\nblock b = relu\nblock b = tanh\nb\n",
     "block 'b' is already defined on line 2"),
    ("block_and_default", "3:1", "^" * 17, "input 4\nblock u = relu\ndefault u = fc(3)\nu\n",
     "'u' is both a block and a default (lines 2 and 3)"),
    ("block_parameter_twice", "2:12", "^", "input 4\nblock b(c, c) = relu\nb(1, 2)\n",
     "block b: parameter 'c' is declared twice"),
    ("unused_output", "2:1", "^^^^", "input 4\nrelu - add[ @input | @input ]\n",
     "the output of relu1 is never used: the branches after it all start from a reference"),
    ("label_clashes_with_block_scope", "3:5", "^^", "input 4\nblock b = relu\nb - b1: relu\n",
     "label 'b1' is already the automatic name of a block call, which has no label of its own"),
])
def test_graph_errors_are_located(name, where, caret, text, message):
    check(fails(text), text, where, caret, message)


# ---- the passes

def test_the_receptive_field_of_a_residual_sum_is_its_longer_branch():
    net = load_spec("input 1x32x32\nadd[ conv(1, k=3, pad=1) - conv(1, k=5, pad=2) | "
                    "conv(1, k=1) ]\n")
    a = analyze(net)
    longer = a.rf[1]  # the 3x3 then 5x5 branch: 7x7
    assert longer.size == (7, 7) and a.rf[2].size == (1, 1)
    assert a.rf[-1] == longer
    reach = rf_from(net, a.shapes, "add1")
    assert reach.inputs == ((7, 7), (5, 5), (1, 1), (1, 1))
    assert reach.outputs == ((5, 5), (1, 1), (1, 1), (1, 1))


def test_rf_from_skips_layers_on_no_path_and_keeps_the_largest_where_paths_meet():
    net = load_spec("input 1x16x16\nc: conv(1, k=3, pad=1) - concat[ conv(1, k=3, pad=1) | "
                    "conv(1, k=1) ] - side: conv(1, k=5, pad=2) - add[ | @c ]\n")
    a = analyze(net)
    reach = rf_from(net, a.shapes, "conv2")  # the first branch: c, then conv2
    assert reach.inputs == ((5, 5), (3, 3))
    reach = rf_from(net, a.shapes, "add1")
    # c is read by conv2, conv3 and the add; its output extent is the largest of theirs
    assert reach.outputs[0] == (7, 7) and reach.inputs[0] == (9, 9)


@pytest.mark.parametrize("name, overrides, params", [
    ("resnet18", {}, 11_689_512), ("resnet20", {}, 272_474), ("resnet20", {"n": 9}, 855_770),
    ("googlenet", {}, 7_005_832), ("googlenet", {"k5": 3}, 6_624_904),
    ("resnet-mnist", {}, 77_754)])
def test_example_parameters_match_the_papers(name, overrides, params):
    net = load_spec(EXAMPLES / f"{name}.net", overrides)
    a = analyze(net)
    assert a.params.total == params
    assert a.shapes.warnings == ()


def test_resnet18_and_googlenet_shapes():
    a = analyze(load_spec(EXAMPLES / "resnet18.net"))
    net = load_spec(EXAMPLES / "resnet18.net")
    assert a.shapes.outputs[net.index("layer4_1.relu2")] == (512, 7, 7)
    g = load_spec(EXAMPLES / "googlenet.net")
    ga = analyze(g)
    assert ga.shapes.outputs[g.index("inception3a.concat1")] == (256, 28, 28)
    assert ga.shapes.outputs[g.index("inception5b.concat1")] == (1024, 7, 7)


# ---- the report and the diagram

def test_the_report_numbers_rows_and_shows_what_a_graph_layer_reads(capsys, tmp_path):
    spec = tmp_path / "res.net"
    spec.write_text("network res\ninput 2x8x8\nc: conv(4, k=3, pad=1) - add[ conv(4, k=3, pad=1) "
                    "- bn | ] - relu\n")
    assert cli.main(["report", str(spec)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].split()[:4] == ["#", "layer", "reads", "type"]
    rows = {line.split()[1]: line.split() for line in lines[4:9]}
    assert rows["add1"][:4] == ["4", "add1", "#3,", "#1"]
    assert rows["relu1"][2] == "relu"  # the row above: nothing in the reads column
    assert cli.main(["report", str(spec), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert [r["inputs"] for r in d["layers"]] == [["input"], ["c"], ["conv2"], ["bn1", "c"],
                                                   ["add1"]]


def test_a_chain_report_has_no_graph_columns(capsys):
    assert cli.main(["report", str(EXAMPLES / "lenet5.net")]) == 0
    assert capsys.readouterr().out.splitlines()[2].split()[0] == "layer"


def test_the_diagram_draws_each_input_as_an_edge():
    net = load_spec("input 2x8x8\nc: conv(4, k=1) - add[ | ] - concat[ | @c ]\n")
    text = diagram.dot(net, analyze(net))
    assert text.count("L0 -> L1") == 2  # add[ | ] reads c twice
    assert 'L0 -> L2 [label="4×8×8"];' in text and 'L1 -> L2 [label="4×8×8"];' in text
    assert 'L2 -> output [label="8×8×8"];' in text


def test_training_memory_equals_the_model(tmp_path):
    net = netc.load(EXAMPLES / "resnet20.net", n=1)
    d = report.data(net.net, analyze(net.net), batch=8)
    model = net.compile(batch=8, flags=FAST, cache_dir=tmp_path)
    assert model.nbytes == d["training"]["bytes"]


# ---- the generated C: exact small checks, threads

@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("netc-cache")


def test_add_of_two_identities_doubles_its_input_and_gradient(cache):
    model = netc.load("input 5\nloss mse\nadd[ | ]").compile(batch=3, dtype="float64",
                                                            flags=FAST, cache_dir=cache)
    rng = np.random.default_rng(0)
    x, t = rng.normal(size=(3, 5)), rng.normal(size=(3, 5))
    out = model.forward(x)
    np.testing.assert_array_equal(out.reshape(3, 5), 2 * x)
    model.loss_and_grad(x, t, input_grad=True)
    dout = ref.mse_backward(2 * x.reshape(3, 5, 1, 1), t)
    np.testing.assert_array_equal(model.input_grad.reshape(3, 5), 2 * dout.reshape(3, 5))


def test_a_residual_block_with_zero_branch_weights_is_the_identity(cache):
    model = netc.load("input 3x6x6\nloss mse\nadd[ conv(3, k=3, pad=1) - relu - "
                      "conv(3, k=3, pad=1) | ]").compile(batch=2, flags=FAST, cache_dir=cache)
    model.init(1)
    model.params["conv2.weight"][...] = 0
    model.params["conv2.bias"][...] = 0
    x = np.random.default_rng(2).normal(size=(2, 3, 6, 6)).astype(np.float32)
    np.testing.assert_array_equal(model.forward(x), x)


GRAPH = """input 3x8x8
    block res(c) = add[ conv(c, k=3, pad=1, act=relu) - conv(c, k=3, pad=1) - bn | ] - relu
    c1: conv(4, k=3, pad=1, act=relu) - res(4) - concat[ | @c1 | conv(2, k=1) - dropout(0.2) ] -
    maxpool(2) - gap - softmax(3)"""


def _train(model, steps=3):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(11, 3, 8, 8)).astype(np.float32)
    y = rng.integers(0, 3, 11).astype(np.int32)
    model.init(7)
    losses = [model.train_step(x, y, lr=0.05, momentum=0.9) for _ in range(steps)]
    return losses, np.concatenate([p.ravel() for p in model.params.values()])


def test_a_deterministic_graph_gives_the_same_bits_for_any_thread_count(cache):
    model = netc.load(GRAPH).compile(batch=11, deterministic=True, flags=FAST, cache_dir=cache)
    runs = []
    for threads in (1, 2):
        model.threads = threads
        runs.append(_train(model))
    assert runs[0][0] == runs[1][0] and np.array_equal(runs[0][1], runs[1][1])


def test_two_threads_give_the_gradients_of_one(cache):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(11, 3, 8, 8))
    y = rng.integers(0, 3, 11).astype(np.int32)
    grads = []
    for threads in (1, 2):
        model = netc.load(GRAPH).compile(batch=11, dtype="float64", threads=threads, flags=FAST,
                                         cache_dir=cache)
        model.init(3)
        model.loss_and_grad(x, y, input_grad=True, train=False)
        grads.append(({k: g.copy() for k, g in model.grads.items()}, model.input_grad.copy()))
    for name in grads[0][0]:
        np.testing.assert_allclose(grads[1][0][name], grads[0][0][name], rtol=1e-12,
                                   err_msg=name)
    np.testing.assert_array_equal(grads[1][1], grads[0][1])


def test_the_conv_to_conv_fusion_applies_only_to_a_single_reader():
    # c1's relu output is read by the next conv and by the concat: that conv must not apply c1's
    # derivative to its input gradient (it would scale the concat's share too); inside the
    # residual branch the first conv's output has one reader, and the fusion applies
    network = netc.load(GRAPH)
    view = net_view(network.net, network.shapes, network.plan(4))
    c1, first, second = (view["layers"][network.net.index(label)]
                         for label in ("c1", "res1.conv1", "res1.conv2"))
    assert (c1["dz_ready"], first["dx_act"]) == (0, None)
    assert first["dz_ready"] == 1 and second["dx_act"] is not None


def test_netc_gradcheck_passes_on_the_mnist_resnet(capsys, tmp_path, monkeypatch):
    # the smallest new example whole; ResNet-20 (n = 1) and GoogLeNet's blocks are checked in
    # tests/test_layers.py, ResNet-18's blocks are ResNet-20's
    monkeypatch.setenv("NETC_CACHE", str(tmp_path))
    code = cli.main(["gradcheck", str(EXAMPLES / "resnet-mnist.net"), "--batch", "1",
                     "--coords", "2"])
    out = capsys.readouterr().out
    assert code == 0, out
    rows = {line.split()[0] for line in out.splitlines()[1:-1]}
    assert {"stage2_0.shortcut", "stage3_0.conv2", "fc", "input"} <= rows
    assert out.splitlines()[-1].startswith("worst relative error")


def test_nesting_through_blocks_is_bounded_before_python_s_stack():
    # each block nests 60 levels, and 32 blocks call each other: 1,920 levels in all
    lines = ["input 4"] + [f"block b{i} = " + "(" * 60 + f"b{i + 1}" + ")" * 60 for i in range(31)]
    text = "\n".join(lines + ["block b31 = relu", "b0"]) + "\n"
    e = fails(text)
    assert e.message == ("groups, branches and block calls are nested more than 128 levels deep "
                         "here")
    # 127 levels, through two blocks, are fine
    text = ("input 4\nblock a = " + "add[ " * 63 + "b" + " | ]" * 63 + "\nblock b = " +
            "add[ " * 63 + "relu" + " | ]" * 63 + "\na\n")
    assert len(load_spec(text).layers) == 127
