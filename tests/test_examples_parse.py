"""Every example loads; each has the structure its comment promises (counts are test_passes')."""
from __future__ import annotations

from pathlib import Path

import pytest

from netc import ir
from netc.lower import declared_params, load_spec
from netc.passes.shapes import infer_shapes

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
NAMES = ["alexnet", "cs231n", "design-rule", "googlenet", "lenet5", "lenet5-1998", "mcn-base",
         "mcn-bn", "mcn-sk", "resnet-mnist", "resnet18", "resnet20", "vgg16", "xor"]


def kinds(net: ir.Net) -> list[str]:
    return [layer.kind for layer in net.layers]


def test_the_examples_are_the_ones_listed():
    assert sorted(p.stem for p in EXAMPLES.glob("*.net")) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_example_loads_with_shapes_and_no_warnings(name):
    net = load_spec(EXAMPLES / f"{name}.net")
    assert net.name == name.replace("-", "_")
    assert infer_shapes(net).warnings == ()


def test_lenet5():
    net = load_spec(EXAMPLES / "lenet5.net")
    assert net.input == (1, 32, 32) and net.loss == "cross_entropy"
    assert [x.label for x in net.layers] == ["c1", "s2", "c3", "s4", "f5", "f6", "out",
                                             "softmax1"]
    assert kinds(net) == ["conv", "pool", "conv", "pool", "fc", "fc", "fc", "softmax"]
    tanh = ir.Activation("tanh")
    assert [getattr(x, "act", None) for x in net.layers] == \
        [tanh, None, tanh, None, tanh, tanh, None, None]
    assert infer_shapes(net).outputs[:2] == ((6, 28, 28), (6, 14, 14))


def test_lenet5_1998_has_the_papers_table_and_squashing():
    net = load_spec(EXAMPLES / "lenet5-1998.net")
    assert kinds(net) == ["conv", "subsample", "conv", "subsample", "conv", "fc", "fc",
                          "softmax"]
    squash = ir.Activation("tanh", 1.7159, 2 / 3)
    assert all(x.act == squash for x in net.layers[:6])
    table = net.layer("C3").table
    assert ["".join("X" if c else "." for c in row) for row in table.rows] == [
        "X...XXX..XXXX.XX",
        "XX...XXX..XXXX.X",
        "XXX...XXX..X.XXX",
        ".XXX..XXXX..X.XX",
        "..XXX..XXXX.XX.X",
        "...XXX..XXXX.XXX",
    ]
    assert sum(map(sum, table.rows)) == 60
    assert infer_shapes(net).outputs[4] == (120, 1, 1)  # C5


def test_vgg16():
    net = load_spec(EXAMPLES / "vgg16.net")
    convs = [x for x in net.layers if isinstance(x, ir.Conv)]
    assert [c.out_channels for c in convs] == [64] * 2 + [128] * 2 + [256] * 3 + [512] * 6
    assert {(c.kernel, c.pad, c.act) for c in convs} == {((3, 3), (1, 1), ir.Activation("relu"))}
    assert [x.label for x in net.layers if isinstance(x, ir.Pool)] == \
        ["pool1", "pool2", "pool3", "pool4", "pool5"]
    assert [x.p for x in net.layers if isinstance(x, ir.Dropout)] == [0.5, 0.5]
    assert [x.label for x in net.layers[-6:]] == \
        ["fc6", "dropout1", "fc7", "dropout2", "fc8", "softmax1"]
    assert infer_shapes(net).outputs[net.layers.index(net.layer("pool5"))] == (512, 7, 7)


def test_alexnet_two_groups():
    net = load_spec(EXAMPLES / "alexnet.net")
    convs = [x for x in net.layers if isinstance(x, ir.Conv)]
    assert [(c.out_channels, c.kernel[0], c.stride[0], c.pad[0], c.groups) for c in convs] == [
        (96, 11, 4, 0, 1), (256, 5, 1, 2, 2), (384, 3, 1, 1, 1), (384, 3, 1, 1, 2),
        (256, 3, 1, 1, 2)]
    pools = [x for x in net.layers if isinstance(x, ir.Pool)]
    assert {(p.mode, p.kernel, p.stride) for p in pools} == {("max", (3, 3), (2, 2))}
    shapes = infer_shapes(net).outputs
    assert shapes[0] == (96, 55, 55) and shapes[net.layers.index(net.layer("pool5"))] == \
        (256, 6, 6)


def test_mcn_base_and_bn():
    base = load_spec(EXAMPLES / "mcn-base.net")
    assert kinds(base) == ["conv", "pool", "conv", "pool", "conv", "act", "conv", "softmax"]
    assert [(c.out_channels, c.kernel[0]) for c in base.layers if isinstance(c, ir.Conv)] == \
        [(20, 5), (50, 5), (500, 4), (10, 1)]
    assert infer_shapes(base).outputs[4] == (500, 1, 1)
    bn = load_spec(EXAMPLES / "mcn-bn.net")
    assert kinds(bn) == ["conv", "batchnorm", "pool", "conv", "batchnorm", "pool", "conv",
                         "batchnorm", "act", "conv", "softmax"]


@pytest.mark.parametrize("s, widths", [
    (2, [40, 40, 100, 1000, 10]), (1.5, [30, 30, 75, 750, 10]), (1, [20, 20, 50, 500, 10]),
    (0.5, [10, 10, 25, 250, 10]), (0.2, [4, 4, 10, 100, 10])])
def test_mcn_sk_s(s, widths):
    net = load_spec(EXAMPLES / "mcn-sk.net", {"s": s})
    assert [c.out_channels for c in net.layers if isinstance(c, ir.Conv)] == widths
    assert kinds(net)[:7] == ["conv", "batchnorm", "act", "conv", "batchnorm", "act", "pool"]
    assert infer_shapes(net).outputs[-1] == (10, 1, 1)


def test_xor():
    net = load_spec(EXAMPLES / "xor.net")
    sigmoid = ir.Activation("sigmoid")
    assert (net.input, net.loss) == ((2, 1, 1), "mse")
    assert net.layers == (ir.FC(label="hidden", units=2, act=sigmoid),
                          ir.FC(label="output", units=1, act=sigmoid))


@pytest.mark.parametrize("n, m, k", [(1, 1, 0), (2, 3, 2), (3, 2, 3)])
def test_design_rule_family(n, m, k):
    path = EXAMPLES / "design-rule.net"
    assert declared_params(path) == {"N": 2.0, "M": 3.0, "K": 2.0}
    net = load_spec(path, {"N": n, "M": m, "K": k})
    assert kinds(net) == (["conv"] * n + ["pool"]) * m + ["fc"] * k + ["fc", "softmax"]


def test_cs231n():
    net = load_spec(EXAMPLES / "cs231n.net")
    assert net.layers == (ir.Conv(label="conv1", out_channels=10, kernel=(5, 5), pad=(2, 2)),)
    assert infer_shapes(net).outputs == ((10, 32, 32),)
