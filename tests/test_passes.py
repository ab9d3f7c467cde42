"""The analysis passes against published numbers, on nets built by hand in the IR.

Oracles: LeCun et al. 1998 Sec. II-B (LeNet-5 1998), the course (modern LeNet-5, cs231n, VGG-16
table 15.2), Krizhevsky et al. 2012 (AlexNet, two groups). Expected values are literals.
"""
from pathlib import Path

import pytest

from netc import ir
from netc.errors import SpecError
from netc.lower import load_spec
from netc.passes import analyze
from netc.passes.cost import count_cost
from netc.passes.params import count_params
from netc.passes.receptive import feature_index, receptive_fields, rf_from
from netc.passes.shapes import infer_shapes
from netc.span import Source, Span

RELU = ir.Activation("relu")
TANH = ir.Activation("tanh", 1.7159, 2 / 3)

# LeNet-5 (1998) S2 -> C3: row = S2 map, column = C3 map, X = connected
C3_TABLE = ir.Table("c3", tuple(tuple(c == "X" for c in row) for row in (
    "X...XXX..XXXX.XX",
    "XX...XXX..XXXX.X",
    "XXX...XXX..X.XXX",
    ".XXX..XXXX..X.XX",
    "..XXX..XXXX.XX.X",
    "...XXX..XXXX.XXX",
)))


def conv(label, c, k, **kw):
    return ir.Conv(label=label, out_channels=c, kernel=(k, k), **kw)


def pool(label, k=2, s=2, mode="max"):
    return ir.Pool(label=label, mode=mode, kernel=(k, k), stride=(s, s))


def lenet5():
    """The course's modern LeNet-5 (file 003)."""
    return ir.Net("lenet5", (1, 32, 32), (
        conv("c1", 6, 5, act=TANH), pool("s2"), conv("c3", 16, 5, act=TANH), pool("s4"),
        ir.FC(label="f5", units=120, act=TANH), ir.FC(label="f6", units=84, act=TANH),
        ir.FC(label="f7", units=10), ir.Softmax(label="prob")))


def lenet5_1998():
    sub = dict(kernel=(2, 2), stride=(2, 2), act=TANH)
    return ir.Net("lenet5-1998", (1, 32, 32), (
        conv("c1", 6, 5, act=TANH), ir.Subsample(label="s2", **sub),
        conv("c3", 16, 5, table=C3_TABLE, act=TANH), ir.Subsample(label="s4", **sub),
        conv("c5", 120, 5, act=TANH), ir.FC(label="f6", units=84, act=TANH),
        ir.FC(label="out", units=10), ir.Softmax(label="prob")))


def vgg16(fused=True):
    """Table 15.2; fused=False writes each ReLU as its own layer, as the table does."""
    layers = []
    for b, (n, c) in enumerate([(2, 64), (2, 128), (3, 256), (3, 512), (3, 512)], 1):
        for i in range(1, n + 1):
            layers.append(conv(f"conv{b}_{i}", c, 3, pad=(1, 1), act=RELU if fused else None))
            if not fused:
                layers.append(ir.Act(label=f"relu{b}_{i}", fn=RELU))
        layers.append(pool(f"pool{b}"))
    layers += [ir.FC(label="fc6", units=4096, act=RELU), ir.Dropout(label="drop6", p=0.5),
               ir.FC(label="fc7", units=4096, act=RELU), ir.Dropout(label="drop7", p=0.5),
               ir.FC(label="fc8", units=1000), ir.Softmax(label="prob")]
    return ir.Net("vgg16", (3, 224, 224), tuple(layers))


def alexnet():
    """The original two-GPU AlexNet: conv2, conv4 and conv5 in two groups (LRN left out)."""
    return ir.Net("alexnet", (3, 227, 227), (
        conv("conv1", 96, 11, stride=(4, 4), act=RELU), pool("pool1", 3, 2),
        conv("conv2", 256, 5, pad=(2, 2), groups=2, act=RELU), pool("pool2", 3, 2),
        conv("conv3", 384, 3, pad=(1, 1), act=RELU),
        conv("conv4", 384, 3, pad=(1, 1), groups=2, act=RELU),
        conv("conv5", 256, 3, pad=(1, 1), groups=2, act=RELU), pool("pool5", 3, 2),
        ir.FC(label="fc6", units=4096, act=RELU), ir.FC(label="fc7", units=4096, act=RELU),
        ir.FC(label="fc8", units=1000), ir.Softmax(label="prob")))


def cs231n():
    return ir.Net("cs231n", (3, 32, 32), (conv("conv", 10, 5, pad=(2, 2)),))


def per_layer(net, values):
    return dict(zip((layer.label for layer in net.layers), values))


# ---- params and connections

def test_lenet5_1998_matches_lecun_section_2b():
    net = lenet5_1998()
    a = analyze(net)
    got = per_layer(net, ((p.total, p.connections) for p in a.params.layers))
    assert got["c1"] == (156, 122_304)
    assert got["s2"] == (12, 5_880)
    assert got["c3"] == (1_516, 151_600)
    assert got["s4"] == (32, 2_000)
    assert got["c5"] == (48_120, 48_120)
    assert got["f6"] == (10_164, 10_164)
    assert sum(got[k][0] for k in ("c1", "s2", "c3", "s4", "c5", "f6")) == 60_000


def test_lenet5_modern():
    net = lenet5()
    a = analyze(net)
    assert a.shapes.outputs[:4] == ((6, 28, 28), (6, 14, 14), (16, 10, 10), (16, 5, 5))
    assert per_layer(net, (p.total for p in a.params.layers))["f5"] == 48_120
    assert a.params.total == 61_706
    assert (a.params.weights, a.params.biases, a.params.buffers) == (61_470, 236, 0)


def test_vgg16_parameters():
    a = analyze(vgg16())
    assert a.params.total == 138_357_544
    assert sum(p.total for p, layer in zip(a.params.layers, vgg16().layers)
               if isinstance(layer, ir.Conv)) == 14_714_688


def test_vgg16_fused_and_separate_relu_agree():
    fused, separate = analyze(vgg16(True)), analyze(vgg16(False))
    assert fused.params.total == separate.params.total
    assert fused.cost.macs == separate.cost.macs
    assert fused.rf[-1] == separate.rf[-1]


def test_cs231n():
    a = analyze(cs231n())
    assert a.shapes.outputs == ((10, 32, 32),)
    assert a.params.total == 760


def test_alexnet_grouped():
    a = analyze(alexnet())
    assert a.shapes.outputs[0] == (96, 55, 55)
    assert a.shapes.outputs[7] == (256, 6, 6)
    assert a.params.total == 60_965_224


def test_groups_table_batchnorm_and_bias():
    net = ir.Net("t", (4, 6, 6), (
        conv("g", 8, 3, groups=2, bias=False), ir.BatchNorm(label="bn"),
        ir.Subsample(label="s", kernel=(2, 2), stride=(2, 2)),
        ir.FC(label="fc", units=3, bias=False)))
    p = analyze(net).params.layers
    assert (p[0].weights, p[0].biases, p[0].connections) == (144, 0, 16 * 144)
    assert (p[1].weights, p[1].biases, p[1].buffers, p[1].connections) == (8, 8, 16, 256)
    assert (p[2].total, p[2].connections) == (16, 8 * 2 * 2 * 5)
    assert (p[3].total, p[3].connections) == (96, 96)


# ---- receptive fields

VGG16_TABLE_15_2 = (212, 210, 210, 208, 208, 104, 102, 102, 100, 100, 50, 48, 48, 46, 46, 44,
                    44, 22, 20, 20, 18, 18, 16, 16, 8, 6, 6, 4, 4, 2, 2)


def test_vgg16_rf_from_pool5_is_table_15_2():
    """Separate ReLU layers, as the table lists them: rows 1..31, then 1 at the first fc."""
    net = vgg16(fused=False)
    reach = rf_from(net, infer_shapes(net), "pool5")
    assert reach.label == "pool5"
    assert tuple(h for h, w in reach.inputs) == VGG16_TABLE_15_2
    assert all(h == w for h, w in reach.inputs)


def test_vgg16_rf_from_pool5_fused_relu_drops_the_relu_rows():
    net = vgg16(fused=True)
    reach = rf_from(net, infer_shapes(net), "pool5")
    assert tuple(h for h, w in reach.inputs) == (
        212, 210, 208, 104, 102, 100, 50, 48, 46, 44, 22, 20, 18, 16, 8, 6, 4, 2)


def test_rf_from_an_fc_covers_its_whole_input():
    net = vgg16()
    reach = rf_from(net, infer_shapes(net), "fc6")
    assert reach.inputs[-2:] == ((14, 14), (7, 7))
    assert reach.inputs[0] == (404, 404)


def test_rf_from_unknown_layer():
    net = lenet5()
    with pytest.raises(KeyError):
        rf_from(net, infer_shapes(net), "nope")


def test_vgg16_forward_fields():
    net = vgg16()
    f = per_layer(net, receptive_fields(net, infer_shapes(net)))
    assert f["conv1_1"].size == (3, 3)
    assert (f["pool1"].size, f["pool1"].jump, f["pool1"].start) == ((6, 6), (2, 2), (0.5, 0.5))
    assert f["conv5_3"].size == (196, 196)
    assert (f["pool5"].size, f["pool5"].jump, f["pool5"].start) == ((212, 212), (32, 32),
                                                                     (15.5, 15.5))
    # an fc sees its whole input: pool5's 7 fields, 32 apart, centred on the image
    assert (f["fc6"].size, f["fc6"].start) == ((404, 404), (111.5, 111.5))
    assert f["prob"] == f["fc6"]


def test_lenet5_fields_and_the_feature_map_the_classifier_sees():
    for net in (lenet5(), lenet5_1998()):
        shapes = infer_shapes(net)
        f = receptive_fields(net, shapes)
        assert [x.size[0] for x in f[:4]] == [5, 6, 14, 16]
        assert [x.start[0] for x in f[:4]] == [2.0, 2.5, 6.5, 7.5]
        assert feature_index(net, shapes) == 3  # s4; f5/c5 covers its whole 5×5 input


def test_padding_shifts_start_and_non_square_kernels():
    net = ir.Net("t", (1, 9, 9), (
        ir.Conv(label="a", out_channels=1, kernel=(3, 5), pad=(0, 2), stride=(1, 2)),
        ir.Pool(label="p", mode="avg", kernel=(3, 3), stride=(2, 2), pad=(1, 1))))
    a, p = receptive_fields(net, infer_shapes(net))
    assert (a.size, a.jump, a.start) == ((3, 5), (1, 2), (1.0, 0.0))
    assert (p.size, p.jump, p.start) == ((5, 9), (2, 4), (1.0, 0.0))


def test_feature_index_of_an_mlp_is_the_input():
    net = ir.Net("xor", (2, 1, 1), (ir.FC(label="h", units=2), ir.FC(label="o", units=1)))
    assert feature_index(net, infer_shapes(net)) == -1


# ---- cost

def test_vgg16_macs():
    a = analyze(vgg16())
    assert a.cost.macs == 15_470_264_320  # ≈ 15.5 G
    assert a.cost.flops == 30_940_528_640
    assert a.cost.train_macs == 3 * 15_470_264_320
    assert a.cost.param_bytes == 4 * 138_357_544


def test_lenet5_cost():
    net = lenet5()
    c = per_layer(net, analyze(net).cost.layers)
    assert (c["c1"].macs, c["c3"].macs, c["f5"].macs) == (117_600, 240_000, 48_000)
    assert c["c1"].flops == 235_200
    assert c["c1"].act_bytes == 6 * 28 * 28 * 4
    assert (c["s2"].macs, c["prob"].macs) == (0, 0)
    assert analyze(net).cost.macs == 416_520
    assert analyze(net).cost.act_bytes == 4 * (4704 + 1176 + 1600 + 400 + 120 + 84 + 10 + 10)


def test_subsample_and_batchnorm_macs_and_float64():
    net = lenet5_1998()
    shapes = infer_shapes(net)
    params = count_params(net, shapes)
    cost = count_cost(net, shapes, params, "float64")
    assert cost.layers[1].macs == 6 * 14 * 14 * 4
    assert cost.layers[0].param_bytes == 156 * 8
    bn = ir.Net("t", (3, 4, 4), (ir.BatchNorm(label="bn"),))
    c = analyze(bn).cost
    assert (c.macs, c.param_bytes, c.buffer_bytes) == (48, 24, 24)


# ---- absurd sizes are refused at the layer

def _at(text):
    return Span(Source("big.net", text), 1, 1, 1, len(text) + 1)


@pytest.mark.parametrize("layer, what", [
    (ir.Conv(label="huge", out_channels=2**20, kernel=(1, 1), span=_at("huge: conv(1048576)")),
     "output 1048576×2048×2048: 4,398,046,511,104 elements"),
    (ir.FC(label="huge", units=2**20, span=_at("huge: fc(1048576)")),
     "weight tensor: 4,398,046,511,104 elements"),
])
def test_absurd_layer_is_refused_at_its_span(layer, what):
    net = ir.Net("big", (1, 2048, 2048), (layer,))
    with pytest.raises(SpecError) as e:
        analyze(net)
    assert e.value.span is layer.span
    assert f"huge: {what}, more than netc's limit of 2,147,483,647" in e.value.message
    assert e.value.format().startswith("big.net:1:1: error: huge:")


def test_the_element_limit_is_the_largest_c_int():
    """2**31 elements no longer fit the C int that counts them; 2**31 - 1 still do."""
    fits = ir.Net("edge", (2**31 - 1, 1, 1), (ir.FC(label="w", units=1),))
    assert analyze(fits).shapes.outputs == ((1, 1, 1),)
    over = ir.Net("edge", (2, 2**15, 2**15), (ir.Act(label="r", fn=RELU, span=_at("r")),))
    with pytest.raises(SpecError) as e:
        analyze(over)
    assert e.value.message.startswith("r: output 2×32768×32768: 2,147,483,648 elements")
    weights = ir.Net("edge", (2**16, 1, 1), (ir.FC(label="w", units=2**15),))
    with pytest.raises(SpecError) as e:
        analyze(weights)
    assert e.value.message.startswith("w: weight tensor: 2,147,483,648 elements")


def test_a_batch_whose_buffers_pass_the_element_limit_is_refused():
    """The C takes the batch as an int and indexes each buffer with one: batch × a layer's
    output must fit too, not only the per-sample shapes."""
    from netc.errors import InputError
    from netc.passes.memory import plan
    net = ir.Net("edge", (2**10, 1, 1), (ir.Act(label="r", fn=RELU),))
    shapes = analyze(net).shapes
    assert plan(net, shapes, 2**21 - 1).batch == 2**21 - 1  # 2**31 - 2**10 elements per buffer
    with pytest.raises(InputError, match=r"batch 2,097,152 is too large .* 2,147,483,648 elem"):
        plan(net, shapes, 2**21)
    with pytest.raises(InputError, match="batch 1,099,511,627,776 is too large"):
        plan(net, shapes, 2**40)


def test_absurd_total_is_refused_at_the_layer_that_crosses_it():
    layers = [ir.FC(label=f"fc{i}", units=2**15, span=_at(f"fc{i}")) for i in range(3)]
    net = ir.Net("big", (2**15, 1, 1), tuple(layers))
    with pytest.raises(SpecError) as e:
        analyze(net)
    # 2**30 weights each: the second layer brings the total to 2**31, one over the limit
    assert e.value.message.startswith("fc1: weights up to this layer: 2,147,483,648 elements")


def test_not_tiling_warns():
    net = ir.Net("t", (1, 7, 7), (pool("p"),))
    (w,) = analyze(net).shapes.warnings
    assert "the last 1 row(s) and 1 column(s) are never seen" in w.message


def test_not_tiling_only_the_padding_does_not_warn():
    # ResNet's stem: 7x7 stride 2 pad 3 on 224 leaves one row unseen, and it is padding
    stem = ir.Conv(label="c", out_channels=1, kernel=(7, 7), stride=(2, 2), pad=(3, 3))
    assert analyze(ir.Net("t", (1, 224, 224), (stem,))).shapes.warnings == ()
    # 3 rows past the last window of a 5x5 stride 4 pad 1 on 10: one of them is padding
    wide = ir.Conv(label="c", out_channels=1, kernel=(5, 5), stride=(4, 4), pad=(1, 1))
    (w,) = analyze(ir.Net("t", (1, 10, 10), (wide,))).shapes.warnings
    assert "the last 2 row(s) and 2 column(s) are never seen" in w.message
    # a 1x1 stride-2 projection (ResNet's shortcut) skips every other row anyway
    skip = ir.Conv(label="c", out_channels=1, kernel=(1, 1), stride=(2, 2))
    assert analyze(ir.Net("t", (1, 56, 56), (skip,))).shapes.warnings == ()


# ---- every layer kind goes through every pass

SAMPLES = {
    ir.Conv: conv("x", 4, 3),
    ir.Pool: pool("x"),
    ir.Subsample: ir.Subsample(label="x", kernel=(2, 2), stride=(2, 2)),
    ir.GlobalAvgPool: ir.GlobalAvgPool(label="x"),
    ir.FC: ir.FC(label="x", units=3),
    ir.Act: ir.Act(label="x", fn=TANH),
    ir.Softmax: ir.Softmax(label="x"),
    ir.Dropout: ir.Dropout(label="x", p=0.5),
    ir.BatchNorm: ir.BatchNorm(label="x"),
    ir.Flatten: ir.Flatten(label="x"),
    ir.Add: ir.Add(label="x", inputs=(ir.INPUT, ir.INPUT)),
    ir.Concat: ir.Concat(label="x", inputs=(ir.INPUT, ir.INPUT)),
}

PASSES = {
    "shapes": lambda net: infer_shapes(net).outputs,
    "params": lambda net: count_params(net, infer_shapes(net)).layers,
    "rf": lambda net: receptive_fields(net, infer_shapes(net)),
    "cost": lambda net: analyze(net).cost.layers,
    "rf_from": lambda net: rf_from(net, infer_shapes(net), "x").inputs,
}


def test_every_layer_kind_has_a_sample():
    assert set(SAMPLES) == set(ir.LAYER_KINDS)


@pytest.mark.parametrize("kind", ir.LAYER_KINDS, ids=lambda k: k.__name__)
@pytest.mark.parametrize("name", PASSES)
def test_every_kind_goes_through_every_pass(kind, name):
    net = ir.Net("t", (2, 6, 6), (SAMPLES[kind],))
    assert len(PASSES[name](net)) == 1


# ---- the same numbers through the language: examples/*.net

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def example(name, **overrides):
    net = load_spec(EXAMPLES / f"{name}.net", overrides)
    return net, analyze(net)


def test_example_lenet5_1998():
    net, a = example("lenet5-1998")
    got = per_layer(net, ((p.total, p.connections) for p in a.params.layers))
    assert [got[k] for k in ("C1", "S2", "C3", "S4", "C5", "F6")] == [
        (156, 122_304), (12, 5_880), (1_516, 151_600), (32, 2_000), (48_120, 48_120),
        (10_164, 10_164)]
    assert sum(p.total for p in a.params.layers[:6]) == 60_000


def test_example_lenet5():
    net, a = example("lenet5")
    assert a.shapes.outputs[:2] == ((6, 28, 28), (6, 14, 14))
    assert per_layer(net, a.params.layers)["f5"].total == 48_120
    assert a.params.total == 61_706


@pytest.mark.parametrize("name, params", [("vgg16", 138_357_544), ("alexnet", 60_965_224),
                                          ("cs231n", 760)])
def test_example_param_totals(name, params):
    assert example(name)[1].params.total == params


def test_example_cs231n_shape():
    assert example("cs231n")[1].shapes.outputs[0] == (10, 32, 32)


def test_example_vgg16_fields():
    net, a = example("vgg16")
    f = per_layer(net, a.rf)
    assert (f["conv5_3"].size, f["pool5"].size) == ((196, 196), (212, 212))
    assert a.cost.macs == 15_470_264_320
    reach = rf_from(net, a.shapes, "pool5")
    assert tuple(h for h, _ in reach.inputs) == (
        212, 210, 208, 104, 102, 100, 50, 48, 46, 44, 22, 20, 18, 16, 8, 6, 4, 2)


def test_every_example_analyzes():
    for path in sorted(EXAMPLES.glob("*.net")):
        net = load_spec(path)
        a = analyze(net)
        assert len(a.shapes.outputs) == len(a.params.layers) == len(a.rf) == len(net.layers)


def test_feature_index_skips_a_padded_conv_as_wide_as_its_input():
    net = ir.Net("t", (1, 3, 3), (conv("same", 2, 3, pad=(1, 1)), ir.GlobalAvgPool(label="gap")))
    assert feature_index(net, infer_shapes(net)) == 0
