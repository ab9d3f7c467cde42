"""lower: syntax -> ir.Net. Before (spec text) / Expected (IR) for expansion, defaults,
parameters, rounding, labels and every layer's arguments."""
from __future__ import annotations

from pathlib import Path

import pytest

from netc import ir
from netc.lower import declared_params, load_spec

RELU = ir.Activation("relu")


def layers(text: str, **overrides) -> tuple:
    return load_spec(text, overrides).layers


def test_design_rule_expands_with_labels_and_origins():
    net = load_spec("input 3x32x32\nparam N = 2\nparam M = 2\nparam K = 1\n"
                    "default conv = conv(8, k=3, pad=1, act=relu)\n"
                    "default pool = pool(max, 2)\ndefault fc = fc(16, act=relu)\n"
                    "default softmax = softmax(10)\n"
                    "((CONV)*N-POOL)*M-(FC)*K-SOFTMAX\n")
    conv = dict(out_channels=8, kernel=(3, 3), pad=(1, 1), act=RELU)
    pool = dict(mode="max", kernel=(2, 2), stride=(2, 2))
    assert net.layers == (
        ir.Conv(label="conv1", **conv), ir.Conv(label="conv2", **conv),
        ir.Pool(label="pool1", **pool),
        ir.Conv(label="conv3", **conv), ir.Conv(label="conv4", **conv),
        ir.Pool(label="pool2", **pool),
        ir.FC(label="fc1", units=16, act=RELU),
        ir.FC(label="fc2", units=10), ir.Softmax(label="softmax1"),
    )
    # copy numbers are 1-based, outermost repetition first
    assert [layer.origin for layer in net.layers] == [
        (1, 1), (1, 2), (1,), (2, 1), (2, 2), (2,), (1,), (), ()]
    assert net.loss == "cross_entropy"
    assert net.params == (("N", 2.0), ("M", 2.0), ("K", 1.0))


def test_overrides_change_repetitions_and_zero_repeats_vanish():
    text = "input 3x32x32\nparam N = 2\nparam K = 2\n(conv(4, k=3))*N - (fc(8))*K - softmax(2)\n"
    assert [x.label for x in layers(text, N=3, K=0)] == \
        ["conv1", "conv2", "conv3", "fc1", "softmax1"]
    assert load_spec(text, {"n": 1}).params == (("N", 1.0), ("K", 2.0))  # names ignore case


def test_parameters_depend_on_earlier_ones_and_overrides_propagate():
    text = "input 1x28x28\nparam s = 1\nparam w = 20*s\nconv(w, k=3) - conv(w/2, k=3)\n"
    assert [x.out_channels for x in layers(text)] == [20, 10]
    assert [x.out_channels for x in layers(text, s=1.5)] == [30, 15]
    assert [x.out_channels for x in layers(text, w=7)] == [7, 4]  # 3.5 rounds up


@pytest.mark.parametrize("s, widths", [
    (2, [40, 100]), (1.5, [30, 75]), (1, [20, 50]), (0.5, [10, 25]), (0.2, [4, 10]),
    (0.125, [3, 6]),  # 2.5 -> 3 and 6.25 -> 6: half away from zero
    (0.025, [1, 1]),  # 0.5 -> 1 and 1.25 -> 1
])
def test_counts_round_half_away_from_zero(s, widths):
    text = "input 1x28x28\nparam s = 1\nconv(20*s, k=3) - fc(50*s)\n"
    conv, fc = layers(text, s=s)
    assert [conv.out_channels, fc.units] == widths


def test_whole_numbers_tolerate_float_noise():
    (conv,) = layers("input 1x28x28\nconv(4, k=0.1*3/0.1, stride=20*0.2/4)\n")
    assert (conv.kernel, conv.stride) == ((3, 3), (1, 1))


def test_default_arguments_merge_with_the_call():
    text = ("input 3x32x32\ndefault conv = conv(32, k=3, pad=1, act=relu)\n"
            "conv - conv(64) - conv(16, k=5, pad=2, act=none) - CONV(out=8, K=1, pad=0)\n")
    assert [(x.out_channels, x.kernel, x.pad, x.act) for x in layers(text)] == [
        (32, (3, 3), (1, 1), RELU), (64, (3, 3), (1, 1), RELU), (16, (5, 5), (2, 2), None),
        (8, (1, 1), (0, 0), RELU)]


def test_a_default_may_name_a_new_layer_or_a_different_one():
    text = ("input 3x32x32\ndefault unit = conv(8, k=3, pad=same)\n"
            "default pool = maxpool(3, stride=2)\n"
            "unit - pool - unit(16) - pool(2)\n")
    assert layers(text) == (
        ir.Conv(label="conv1", out_channels=8, kernel=(3, 3), pad=(1, 1)),
        ir.Pool(label="pool1", mode="max", kernel=(3, 3), stride=(2, 2)),
        ir.Conv(label="conv2", out_channels=16, kernel=(3, 3), pad=(1, 1)),
        ir.Pool(label="pool2", mode="max", kernel=(2, 2), stride=(2, 2)),
    )


def test_conv_arguments():
    text = ("input 6x32x32\ntable t {\n  XX\n  X.\n  .X\n  XX\n  X.\n  .X\n}\n"
            "conv(4, 3x5, stride=2, pad=1x2, bias=off, groups=2, act=sigmoid(2)) -\n"
            "conv(k=5, table=t, act=tanh(1.7159, 2/3)) - conv(3, k=5, pad=same, bias=on)\n")
    table = ir.Table("t", ((True, True), (True, False), (False, True),
                           (True, True), (True, False), (False, True)))
    assert layers(text) == (
        ir.Conv(label="conv1", out_channels=4, kernel=(3, 5), stride=(2, 2), pad=(1, 2),
                bias=False, groups=2, act=ir.Activation("sigmoid", 2.0)),
        ir.Conv(label="conv2", out_channels=2, kernel=(5, 5), table=table,  # out from table
                act=ir.Activation("tanh", 1.7159, 2 / 3)),
        ir.Conv(label="conv3", out_channels=3, kernel=(5, 5), pad=(2, 2)),
    )


def test_pooling_forms():
    text = ("input 3x64x64\npool(max, 2) - pool(avg, 3, 2) - maxpool(3, stride=2) -\n"
            "avgpool(2x1) - pool(max, k=3, stride=1, pad=1) - subsample(2, act=tanh) - gap\n")
    assert layers(text) == (
        ir.Pool(label="pool1", mode="max", kernel=(2, 2), stride=(2, 2)),
        ir.Pool(label="pool2", mode="avg", kernel=(3, 3), stride=(2, 2)),
        ir.Pool(label="pool3", mode="max", kernel=(3, 3), stride=(2, 2)),
        ir.Pool(label="pool4", mode="avg", kernel=(2, 1), stride=(2, 1)),
        ir.Pool(label="pool5", mode="max", kernel=(3, 3), stride=(1, 1), pad=(1, 1)),
        ir.Subsample(label="subsample1", kernel=(2, 2), stride=(2, 2),
                     act=ir.Activation("tanh")),
        ir.GlobalAvgPool(label="gap1"),
    )


def test_other_layers_and_their_automatic_labels():
    text = ("input 784\nflatten - fc(100, bias=off, act=relu) - bn - batchnorm(eps=1e-3, "
            "momentum=0.01) - relu - sigmoid - sigmoid(a=0.5) - tanh(1.7159, 2/3) - dropout -\n"
            "dropout(0.2) - globalavgpool - softmax\n")
    assert layers(text) == (
        ir.Flatten(label="flatten1"),
        ir.FC(label="fc1", units=100, bias=False, act=RELU),
        ir.BatchNorm(label="bn1"), ir.BatchNorm(label="bn2", eps=1e-3, momentum=0.01),
        ir.Act(label="relu1", fn=RELU),
        ir.Act(label="sigmoid1", fn=ir.Activation("sigmoid")),
        ir.Act(label="sigmoid2", fn=ir.Activation("sigmoid", 0.5)),
        ir.Act(label="tanh1", fn=ir.Activation("tanh", 1.7159, 2 / 3)),
        ir.Dropout(label="dropout1", p=0.5), ir.Dropout(label="dropout2", p=0.2),
        ir.GlobalAvgPool(label="gap1"), ir.Softmax(label="softmax1"),
    )


def test_softmax_with_units_is_the_classifier_and_the_label_goes_on_its_weights():
    assert layers("input 84\nout: softmax(10)\n") == (
        ir.FC(label="out", units=10), ir.Softmax(label="softmax1"))


def test_labels_inside_repetitions_get_copy_numbers():
    text = "input 1x64x64\n((c: conv(4, k=3) - relu)*2 - p: maxpool(2))*2 - gap\n"
    assert [x.label for x in layers(text)] == [
        "c_1_1", "relu1", "c_1_2", "relu2", "p_1", "c_2_1", "relu3", "c_2_2", "relu4", "p_2",
        "gap1"]


def test_a_user_label_may_equal_its_own_automatic_label():
    assert [x.label for x in layers("input 2\nrelu1: relu - relu\n")] == ["relu1", "relu2"]


def test_spans_point_at_the_call_even_when_repeated():
    net = load_spec("input 1x28x28\n(conv(4, k=3) -\n relu)*2\n")
    assert [(x.span.line, x.span.col, x.span.end_col) for x in net.layers] == \
        [(2, 2, 14), (3, 2, 6)] * 2
    assert [x.origin for x in net.layers] == [(1,), (1,), (2,), (2,)]


def test_loss_defaults_and_explicit_mse():
    assert load_spec("input 2\nfc(1)\n").loss == "mse"
    assert load_spec("input 2\nsoftmax(2)\n").loss == "cross_entropy"
    assert load_spec("input 2\nsoftmax(2)\nLOSS MSE\n").loss == "mse"


def test_input_vector_and_image():
    assert load_spec("input 784\nrelu\n").input == (784, 1, 1)
    assert load_spec("input 3x224x224\nrelu\n").input == (3, 224, 224)


def test_net_name_and_source(tmp_path):
    text = "input 2\nrelu\n"
    path = tmp_path / "tiny-net.net"
    path.write_text(text)
    assert load_spec(text).name == "net"
    assert load_spec("network xor\n" + text).name == "xor"
    for source in (path, str(path)):
        net = load_spec(source)
        assert (net.name, net.source) == ("tiny-net", text)
        assert str(net.layers[0].span) == f"{path}:2:1"


def test_a_string_is_text_unless_it_names_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("relu").write_text("input 3\nsigmoid\n")
    assert load_spec("relu").layers[0].kind == "act"  # an existing file wins
    assert load_spec("input 3\nrelu").layers[0].fn == RELU


def test_spelling_does_not_change_the_net():
    a = load_spec("input 2\nfc(4, act=relu) - softmax(2)\n")
    b = load_spec("# same net\nINPUT 2\ndefault FC = fc(4, ACT=RELU)\n\nFC -\n  SoftMax(2)\n")
    assert a == b


def test_declared_params():
    text = "input 2\nparam N = 3\nparam w = 2*N + 0.5\n(fc(w))*N\n"
    assert declared_params(text) == {"N": 3.0, "w": 6.5}
    assert declared_params("input 2\nrelu\n") == {}
