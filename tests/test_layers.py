"""Every layer kind, proven: the numpy reference against the seed's worked examples and against
finite differences, then the generated C against the reference (float32 forward) and against
finite differences (float64 gradients of every parameter and the input)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import netc
from netc import ir
from netc.errors import InputError
from netc.gradcheck import gradcheck
import reference as ref

X34 = np.array([[1, 2, 3, 1], [4, 5, 6, 1], [7, 8, 9, 1]], dtype=float)
X66 = np.array([[1, 3, 2, 4, 5, -1], [7, -6, -3, -2, -6, -3], [2, 0, 9, 3, 8, 6],
                [0, 1, 2, 4, -1, -3], [-2, 0, 1, 1, -4, -1], [-3, 4, 0, -1, -5, -2]],
               dtype=float)
MAX66 = [[7, 4, 5], [2, 9, 8], [4, 1, -1]]
AVG66 = [[1.25, 0.25, -1.25], [0.75, 4.5, 2.5], [-0.25, 0.25, -3]]
# Overlapping 2×2/1 max pool of X34 with output gradients 1..6: the 9 at (2, 2) is the max of
# windows (1, 1) and (1, 2) so it receives 5 + 6; the 6 at (1, 2) receives 2 + 3.
OVERLAP_DY = [[1, 2, 3], [4, 5, 6]]
OVERLAP_DX = [[0, 0, 0, 0], [0, 1, 5, 0], [0, 4, 11, 0]]

# LeNet-5 (1998) S2 -> C3: rows are S2 maps, columns C3 maps.
LENET_TABLE = ir.Table("C3", tuple(tuple(ch == "X" for ch in row) for row in (
    "X...XXX..XXXX.XX", "XX...XXX..XXXX.X", "XXX...XXX..X.XXX",
    ".XXX..XXXX..X.XX", "..XXX..XXXX.XX.X", "...XXX..XXXX.XXX")))
SMALL_TABLE = ir.Table("t", tuple(tuple(ch == "X" for ch in row) for row in (
    "X.XX", "XX.X", ".XXX")))


def _img(a):
    return np.asarray(a, dtype=float)[None, None]


# ---------------------------------------------------------------------------------------------
# the reference on the seed's worked examples

def test_reference_conv_worked_example():
    y = ref.conv_forward(_img(X34), np.ones((1, 1, 2, 2)), None)
    np.testing.assert_array_equal(y[0, 0], [[12, 16, 11], [24, 28, 17]])


def test_reference_pools_worked_example():
    np.testing.assert_array_equal(ref.maxpool_forward(_img(X66), (2, 2), (2, 2))[0, 0], MAX66)
    np.testing.assert_array_equal(ref.avgpool_forward(_img(X66), (2, 2), (2, 2))[0, 0], AVG66)


def test_reference_overlapping_maxpool_backward():
    dx = ref.maxpool_backward(_img(OVERLAP_DY), _img(X34), (2, 2), (1, 1))
    np.testing.assert_array_equal(dx[0, 0], OVERLAP_DX)


def test_reference_table_weight_layout():
    # 60 connections in C3, output-major: C3 map 0 sees S2 maps 0, 1, 2; map 15 sees all six.
    w = np.arange(60 * 25, dtype=float).reshape(60, 5, 5)
    dense = ref.dense_weight(w, 6, table=LENET_TABLE)
    assert dense.shape == (16, 6, 5, 5)
    np.testing.assert_array_equal(dense[0, :3], w[:3])
    assert not dense[0, 3:].any()
    np.testing.assert_array_equal(dense[15], w[-6:])
    np.testing.assert_array_equal(ref.sparse_weight(dense, table=LENET_TABLE), w)


def test_reference_groups_weight_layout():
    w = np.arange(4 * 3, dtype=float).reshape(4, 3, 1, 1)  # 6 in, 4 out, 2 groups
    dense = ref.dense_weight(w, 6, groups=2)[:, :, 0, 0]
    np.testing.assert_array_equal(dense[1], [3, 4, 5, 0, 0, 0])
    np.testing.assert_array_equal(dense[2], [0, 0, 0, 6, 7, 8])
    np.testing.assert_array_equal(ref.sparse_weight(dense[:, :, None, None], groups=2), w)


def test_reference_dropout_and_batchnorm_inference():
    x = np.arange(8, dtype=float).reshape(1, 2, 2, 2)
    mask = np.array([1, 0, 1, 1, 0, 0, 1, 1], dtype=float).reshape(x.shape)
    np.testing.assert_array_equal(ref.dropout_forward(x, mask, 0.5).ravel(),
                                  [0, 0, 4, 6, 0, 0, 12, 14])
    y = ref.batchnorm_forward_infer(x, np.array([2.0, 1.0]), np.array([0.0, 1.0]),
                                    np.array([1.0, 4.0]), np.array([4.0, 1.0]), eps=0.0)
    np.testing.assert_array_equal(y.ravel(), [-1, 0, 1, 2, 1, 2, 3, 4])


# ---------------------------------------------------------------------------------------------
# the reference's backward against its own forward, by central differences

def _relu():
    return ir.Activation("relu")


def _tanh():
    return ir.Activation("tanh", 1.7159, 2 / 3)


def _sig():
    return ir.Activation("sigmoid", 1.5)


def _net(shape, *layers, loss="cross_entropy"):
    return ir.Net("t", shape, tuple(layers), loss=loss)


def _head(units=3):
    return (ir.FC(label="out", units=units), ir.Softmax(label="sm"))


REFERENCE_NETS = {
    "conv-stride-pad-nonsquare": _net(
        (2, 7, 6), ir.Conv(label="c", out_channels=3, kernel=(3, 2), stride=(2, 1), pad=(1, 2),
                           act=_tanh()), *_head()),
    "conv-groups-nobias": _net(
        (4, 5, 5), ir.Conv(label="c", out_channels=6, kernel=(3, 3), groups=2, bias=False,
                           act=_sig()), *_head()),
    "conv-table": _net(
        (3, 5, 5), ir.Conv(label="c", out_channels=4, kernel=(2, 2), table=SMALL_TABLE),
        ir.Act(label="a", fn=_tanh()), *_head()),
    "maxpool-overlap-pad": _net(
        (2, 6, 5), ir.Pool(label="p", mode="max", kernel=(3, 3), stride=(2, 2), pad=(1, 1)),
        *_head()),
    "avgpool-overlap-pad": _net(
        (2, 6, 5), ir.Pool(label="p", mode="avg", kernel=(3, 2), stride=(2, 1), pad=(1, 1)),
        *_head()),
    "subsample-gap": _net(
        (2, 6, 6), ir.Subsample(label="s", kernel=(2, 2), stride=(2, 2), act=_sig()),
        ir.GlobalAvgPool(label="g"), *_head()),
    "fc-relu-dropout": _net(
        (5, 1, 1), ir.FC(label="f", units=6, act=_relu()), ir.Dropout(label="d", p=0.25),
        ir.FC(label="o", units=2, bias=False), loss="mse"),
    "batchnorm-conv": _net(
        (2, 4, 3), ir.Conv(label="c", out_channels=3, kernel=(2, 2)),
        ir.BatchNorm(label="bn"), ir.Flatten(label="fl"), ir.BatchNorm(label="bn2"), *_head()),
    "softmax-mse": _net((4, 1, 1), ir.FC(label="f", units=3), ir.Softmax(label="sm"),
                        loss="mse"),
    # a residual over a conv and a concat of it with the input: a tensor read by three layers
    "graph-add-concat": _net(
        (2, 4, 4), ir.Conv(label="c", out_channels=2, kernel=(3, 3), pad=(1, 1), act=_tanh()),
        ir.Add(label="r", inputs=(ir.INPUT, 0)), ir.Concat(label="j", inputs=(1, ir.INPUT, 0)),
        ir.BatchNorm(label="bn"), *_head()),
}


def _targets(net, n, rng):
    out, _ = ref.run_net(net, ref.init_params(net)[0], np.zeros((n, *net.input)),
                         buffers=ref.init_params(net)[1])
    if net.loss == "mse":
        return rng.normal(size=out.shape)
    return rng.integers(0, out[0].size, n)


def _numeric(f, arr, h=1e-6):
    g = np.zeros_like(arr)
    for i in np.ndindex(arr.shape):
        old = arr[i]
        arr[i] = old + h
        up = f()
        arr[i] = old - h
        down = f()
        arr[i] = old
        g[i] = (up - down) / (2 * h)
    return g


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("name", sorted(REFERENCE_NETS))
def test_reference_backward_matches_finite_differences(name, train):
    net = REFERENCE_NETS[name]
    rng = np.random.default_rng(1)
    params, buffers = ref.init_params(net, seed=2)
    x = rng.normal(size=(3, *net.input))
    y = _targets(net, 3, rng)
    masks = {layer.label: rng.random((3, 6, 1, 1)) > 0.25
             for layer in net.layers if isinstance(layer, ir.Dropout)}

    def loss():
        out, _ = ref.run_net(net, params, x, train=train, buffers=buffers, masks=masks)
        return ref.net_loss(net, out, y)

    _, grads, dx = ref.loss_and_grad(net, params, x, y, train=train, buffers=buffers,
                                     masks=masks)
    assert sorted(grads) == sorted(params)
    for key in params:
        np.testing.assert_allclose(grads[key], _numeric(loss, params[key]), rtol=1e-6,
                                   atol=1e-8, err_msg=key)
    np.testing.assert_allclose(dx, _numeric(loss, x), rtol=1e-6, atol=1e-8, err_msg="input")


def test_reference_batchnorm_running_statistics():
    net = _net((2, 2, 2), ir.BatchNorm(label="bn", momentum=0.25), loss="mse")
    x = np.arange(16, dtype=float).reshape(2, 2, 2, 2)
    _, tape = ref.run_net(net, {"bn.weight": np.ones(2), "bn.bias": np.zeros(2)}, x, train=True,
                          buffers={"bn.running_mean": np.zeros(2),
                                   "bn.running_var": np.ones(2)})
    # channel 0 holds 0..3 and 8..11: mean 5.5, unbiased variance 138/7 (same for channel 1)
    np.testing.assert_allclose(tape["buffers"]["bn.running_mean"], [0.25 * 5.5, 0.25 * 9.5])
    np.testing.assert_allclose(tape["buffers"]["bn.running_var"], [0.75 + 0.25 * 138 / 7] * 2)


# ---------------------------------------------------------------------------------------------
# the generated C. Each spec is compiled once per dtype for the module (light flags, tmp cache).

FLAGS = ["-O1"]
BATCH = 4  # compiled; calls use it, 3 (odd, smaller than compiled) and 1

LAYER_SPECS = {
    "conv-stride-pad-nonsquare": """input 2x7x6
        conv(3, k=3x2, stride=2x1, pad=1x2, act=tanh(1.7159, 2/3)) - softmax(3)""",
    "conv-groups-nobias": """input 4x5x5
        conv(6, k=3, groups=2, bias=off, act=sigmoid(1.5)) - softmax(3)""",
    "conv-table": """input 3x5x5
        table t {
          X.XX
          XX.X
          .XXX
        }
        conv(4, k=2, table=t) - tanh - softmax(3)""",
    "conv-1x1-and-strided-1x1": """input 3x5x5
        conv(4, k=1, act=relu) - conv(2, k=1, stride=2) - softmax(3)""",
    # stride-1 convs by rows (schedule.conv_by_rows): forward and ∂W by rows, full blocks of 8
    # output channels and the edges; then forward by rows with ∂W through im2col, edges only
    "conv-by-rows": """input 2x5x16
        conv(10, k=3, pad=1, act=relu) - conv(3, k=3, pad=1, bias=off) - softmax(3)""",
    "conv-by-rows-unpadded": """input 1x4x24
        conv(5, k=3, bias=off, act=tanh(1.7159, 2/3)) - softmax(2)""",
    # a long inner dimension (CI·KK = 72) by rows: forward only, ∂W and ∂X through im2col
    "conv-by-rows-long": """input 8x6x20
        conv(5, k=3, pad=1, act=relu) - softmax(2)""",
    "maxpool-overlap-pad": """input 2x6x5
        maxpool(3, stride=2, pad=1) - softmax(3)""",
    "maxpool-after-relu": """input 2x6x6
        conv(3, k=3, pad=1, act=relu) - maxpool(2, stride=1) - softmax(3)""",
    "avgpool-overlap-pad": """input 2x6x5
        avgpool(3x2, stride=2x1, pad=1) - softmax(3)""",
    "subsample-gap": """input 2x6x6
        subsample(2, act=sigmoid(1.5)) - gap - softmax(3)""",
    "subsample-overlap-nonsquare": """input 2x6x6
        subsample(3x2, stride=1x2, act=tanh(1.7159, 2/3)) - softmax(4)""",
    "fc-relu-dropout-mse": """input 5
        loss mse
        fc(6, act=relu) - dropout(0.25) - fc(2, bias=off)""",
    "batchnorm-conv-and-fc": """input 2x4x3
        conv(3, k=2) - bn - flatten - bn(eps=0.001, momentum=0.3) - softmax(3)""",
    "activations": """input 6
        tanh(1.7159, 0.6667) - relu - sigmoid(2) - fc(3) - softmax""",
    "fc-softmax-xent": "input 3\nfc(3) - softmax",
    "softmax-mse": """input 4
        loss mse
        fc(3) - softmax""",
    "dropout-only": """input 1000
        loss mse
        dropout(0.3)""",
    "batchnorm-only": """input 2x2x2
        loss mse
        bn""",
    # the seed's worked examples: nets without parameters or with one 2×2 kernel
    "seed-conv": "input 1x3x4\nconv(1, k=2)",
    "seed-maxpool": "input 1x6x6\nmaxpool(2)",
    "seed-avgpool": "input 1x6x6\navgpool(2)",
    "seed-overlap": "input 1x3x4\nmaxpool(2, stride=1)",
    # the layer kinds of AlexNet and VGG-16 at a size a test can afford
    "alexnet-mini": """input 3x31x31
        default pool = maxpool(3, stride=2)
        conv(8, k=5, stride=2, act=relu) - pool - conv(8, k=3, pad=1, groups=2, act=relu) -
        pool - conv(8, k=3, pad=1, act=relu) - conv(8, k=3, pad=1, groups=2, act=relu) -
        fc(16, act=relu) - dropout(0.5) - fc(16, act=relu) - dropout(0.5) - softmax(5)""",
    "vgg-mini": """input 3x8x8
        default conv = conv(4, k=3, pad=1, act=relu)
        default pool = pool(max, 2)
        conv - conv - pool - conv - conv - pool -
        fc(16, act=relu) - dropout(0.5) - fc(16, act=relu) - dropout(0.5) - softmax(5)""",
}
# graphs: identity and projection residuals in repeated blocks, a 4-way concat with a nested
# add, a reference skip over three layers whose target fans out to three readers (so the
# conv-to-conv fusion of its activation must not apply), the input read by two layers
GRAPH_SPECS = {
    "graph-residuals": """input 3x6x6
        block res(c) = add[ conv(c, k=3, pad=1, act=relu) - conv(c, k=3, pad=1) - bn | ] - relu
        block proj(c) = add[ conv(c, k=3, stride=2, pad=1) - bn - relu - conv(c, k=3, pad=1)
                           | conv(c, k=1, stride=2, bias=off) - bn ] - relu
        conv(4, k=3, pad=1) - (res(4))*2 - proj(6) - gap - softmax(3)""",
    "graph-concat-nested": """input 3x6x6
        concat[ conv(2, k=1) | conv(2, k=1, act=relu) - conv(3, k=3, pad=1) |
                add[ conv(3, k=1) | conv(3, k=3, pad=1, act=tanh) ] |
                maxpool(3, stride=1, pad=1) - conv(2, k=1) ] - flatten - fc(3) - softmax""",
    "graph-skip-fanout": """input 2x6x6
        c1: conv(3, k=3, pad=1, act=tanh) - conv(3, k=3, pad=1, act=relu) - conv(3, k=3, pad=1) -
        concat[ | @c1 | @c1 - avgpool(3, stride=1, pad=1) ] - fc(4) - softmax""",
    "graph-input-fanout": """input 2x5x5
        add[ conv(2, k=3, pad=1, act=sigmoid) | ] - add[ | ] - fc(3, act=relu) - softmax""",
    # examples/googlenet.net's blocks at a size a test can afford
    "googlenet-mini": """input 3x8x8
        block unit(c, k=1) = conv(c, k=k, pad=(k - 1)/2, bias=off) - bn(eps=0.001) - relu
        block inception(c1, c3r, c3, c5r, c5, cp) = concat[ unit(c1) | unit(c3r) - unit(c3, k=3)
            | unit(c5r) - unit(c5, k=5) | maxpool(3, stride=1, pad=1) - unit(cp) ]
        unit(4, k=3) - inception(2, 2, 3, 1, 2, 2) - maxpool(2) - inception(3, 2, 2, 1, 2, 1) -
        gap - dropout(0.2) - softmax(5)""",
}
LAYER_SPECS.update(GRAPH_SPECS)
# The examples small enough to test whole (VGG-16 and AlexNet are covered by the minis above).
EXAMPLES = {
    "xor": ("xor.net", {}), "cs231n": ("cs231n.net", {}), "lenet5": ("lenet5.net", {}),
    "lenet5-1998": ("lenet5-1998.net", {}), "mcn-base": ("mcn-base.net", {}),
    "mcn-bn": ("mcn-bn.net", {}), "mcn-sk-0.5": ("mcn-sk.net", {"s": 0.5}),
    "design-rule": ("design-rule.net", {"N": 1, "M": 2, "K": 2}),
    "resnet20-n1": ("resnet20.net", {"n": 1}),
}
EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"
ALL = sorted(LAYER_SPECS) + sorted(EXAMPLES)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """compiled(name, dtype, optimizer="sgd") -> Model, built once per module in a private
    cache."""
    models = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NETC_CACHE", str(tmp_path_factory.mktemp("netc-cache")))

        def get(name, dtype, optimizer="sgd"):
            key = name, dtype, optimizer
            if key not in models:
                models[key] = network(name).compile(batch=BATCH, dtype=dtype, flags=FLAGS,
                                                    optimizer=optimizer)
            return models[key]
        yield get


def network(name):
    if name in LAYER_SPECS:
        return netc.load(LAYER_SPECS[name])
    file, params = EXAMPLES[name]
    return netc.load(EXAMPLES_DIR / file, **params)


def randomize(model, seed):
    """Initialise, then move every parameter off its initial value (biases off 0, scales off 1)
    and give batchnorm random running statistics. -> float64 copies for the reference."""
    rng = np.random.default_rng(seed)
    model.init(seed)
    for p in model.params.values():
        p += rng.normal(0.0, 0.2 * max(float(p.std()), 0.1), p.shape).astype(p.dtype)
    for name, b in model.buffers.items():
        var = name.endswith("running_var")
        b[...] = rng.uniform(0.5, 2, b.shape) if var else rng.normal(0, 0.5, b.shape)
    return ({k: v.astype(np.float64) for k, v in model.params.items()},
            {k: v.astype(np.float64) for k, v in model.buffers.items()})


def data(model, n, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, *model.net.input)).astype(model.dtype)
    out_size = int(np.prod(model.shapes.outputs[-1]))
    if model.net.loss == "cross_entropy":
        return x, rng.integers(0, out_size, n).astype(np.int32)
    return x, rng.normal(size=(n, out_size)).astype(model.dtype)


def dropout_masks(model, n):
    """The keep masks the C drew in its last training forward (its mask buffer: 0 or 1/(1-p))."""
    masks = {}
    for layer in model.net.layers:
        if isinstance(layer, ir.Dropout):
            buf = model.plan.buffer(f"{layer.label}.mask")
            masks[layer.label] = model.mem[buf.offset:buf.offset + buf.size].reshape(
                buf.shape)[:n] != 0
    return masks


def one_value_per_channel(model, n):
    """Does a batchnorm see a single value per channel (batch 1 after an fc)? Its batch variance
    is 0: netc refuses training mode there, as PyTorch does (tests/test_batchnorm_checks.py)."""
    return any(isinstance(layer, ir.BatchNorm) and n * h * w == 1
               for layer, (_, h, w) in zip(model.net.layers, model.shapes.inputs))


def rel_err(got, want, floor=1e-30):
    """max |got - want| relative to the largest |want| (the tensor's scale), floored: a gradient
    that is exactly zero in theory (a bias before batch normalisation) is rounding noise."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.size == want.size
    scale = max(float(np.abs(want).max()), floor)
    return float(np.abs(got.reshape(want.shape) - want).max()) / scale


@pytest.mark.parametrize("n", [BATCH, 3, 1])
@pytest.mark.parametrize("name", ALL)
def test_float32_forward_matches_reference(compiled, name, n):
    model = compiled(name, "float32")
    params, buffers = randomize(model, seed=n)
    x, _ = data(model, n, seed=10 + n)
    want = ref.forward_net(model.net, params, x, buffers=buffers)
    assert rel_err(model.forward(x), want) < 1e-5
    if one_value_per_channel(model, n):
        with pytest.raises(InputError):
            model.forward(x, train=True)
        return
    # training mode: batch statistics, the C's own dropout masks, updated running statistics
    got = model.forward(x, train=True)
    want, tape = ref.run_net(model.net, params, x, train=True, buffers=buffers,
                             masks=dropout_masks(model, n))
    assert rel_err(got, want) < 1e-5
    for key, value in tape["buffers"].items():
        assert rel_err(model.buffers[key], value) < 1e-5, key


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("n", [BATCH, 3, 1])
@pytest.mark.parametrize("name", ALL)
def test_float64_gradients_match_reference(compiled, name, n, train):
    model = compiled(name, "float64")
    params, buffers = randomize(model, seed=20 + n)
    x, y = data(model, n, seed=30 + n)
    if train and one_value_per_channel(model, n):  # refused, as PyTorch does
        with pytest.raises(InputError):
            model.loss_and_grad(x, y, input_grad=True, train=True)
        return
    loss = model.loss_and_grad(x, y, input_grad=True, train=train)
    want_loss, want_grads, want_dx = ref.loss_and_grad(
        model.net, params, x, y, train=train, buffers=buffers, masks=dropout_masks(model, n))
    assert loss == pytest.approx(want_loss, rel=1e-10)
    assert sorted(model.grads) == sorted(want_grads)
    for key, want in want_grads.items():
        assert rel_err(model.grads[key], want, floor=1e-4) < 1e-9, key
    assert rel_err(model.input_grad, want_dx, floor=1e-4) < 1e-9


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("name", ["lenet5-1998", "batchnorm-conv-and-fc", "alexnet-mini",
                                  "conv-groups-nobias"])
def test_float64_train_step_matches_reference(compiled, name, optimizer):
    """Two fused steps (so momentum and Adam's moments matter): decay on the weights only, the
    running statistics updated, the loss before the update returned."""
    model = compiled(name, "float64", optimizer)
    net = model.net
    params, buffers = randomize(model, seed=5)
    hyper = dict(lr=0.05, momentum=0.9, weight_decay=0.01, beta1=0.8, beta2=0.9, eps=1e-4)
    velocity, m, v = {}, {}, {}
    for t in (1, 2):
        x, y = data(model, 3, seed=40 + t)
        loss = model.train_step(x, y, **hyper)
        out, tape = ref.run_net(net, params, x, train=True, buffers=buffers,
                                masks=dropout_masks(model, 3))
        grads, _ = ref.backward_net(net, params, tape, y)
        buffers = tape["buffers"]
        if optimizer == "sgd":
            params, velocity = ref.sgd_step(net, params, grads, velocity, hyper["lr"],
                                            hyper["momentum"], hyper["weight_decay"])
        else:
            params, m, v = ref.adam_step(net, params, grads, m, v, t, hyper["lr"],
                                         hyper["beta1"], hyper["beta2"], hyper["eps"],
                                         hyper["weight_decay"])
        assert loss == pytest.approx(ref.net_loss(net, out, y), rel=1e-10)
        for key, want in params.items():
            # floored: Adam scales a gradient that is rounding noise (a bias before batch
            # normalisation) up to lr·noise/eps
            assert rel_err(model.params[key], want, floor=0.1) < 1e-9, (t, key)
        for key, want in buffers.items():
            assert rel_err(model.buffers[key], want) < 1e-9, (t, key)


# ResNet-20 (n = 1) costs 100 s at the usual size; its gradients match the reference exactly above
LIGHT_CHECK = {"resnet20-n1": dict(batch=1, coords=3)}


@pytest.mark.parametrize("name", ALL)
def test_float64_gradients_match_finite_differences(compiled, name):
    size = LIGHT_CHECK.get(name, dict(batch=3, coords=16))
    report = gradcheck(compiled(name, "float64"), seed=3, tol=1e-6, **size)
    assert report.ok, "\n" + report.format()
    assert {t.name for t in report.tensors} >= {"input"}


# ---------------------------------------------------------------------------------------------
# the seed's worked examples and the train/inference behaviour, in the generated C

def test_c_conv_worked_example(compiled):
    model = compiled("seed-conv", "float32")
    model.params["conv1.weight"][...] = 1
    model.params["conv1.bias"][...] = 0
    out = model.forward(X34.reshape(1, 1, 3, 4).astype(np.float32))
    np.testing.assert_array_equal(out[0, 0], [[12, 16, 11], [24, 28, 17]])


@pytest.mark.parametrize("mode, want", [("max", MAX66), ("avg", AVG66)])
def test_c_pool_worked_examples(compiled, mode, want):
    model = compiled(f"seed-{mode}pool", "float32")
    out = model.forward(X66.reshape(1, 1, 6, 6).astype(np.float32))
    np.testing.assert_array_equal(out[0, 0], want)


def test_c_overlapping_maxpool_backward_sums(compiled):
    model = compiled("seed-overlap", "float64")
    x = X34.reshape(1, 1, 3, 4)
    out = model.forward(x)
    np.testing.assert_array_equal(out[0, 0], [[5, 6, 6], [8, 9, 9]])
    # mse over a batch of one: d loss / d out = out - t, so t = out - dy feeds dy = 1..6 back
    model.loss_and_grad(x, (out - _img(OVERLAP_DY)).reshape(1, -1), input_grad=True)
    np.testing.assert_array_equal(model.input_grad[0, 0], OVERLAP_DX)


def test_c_batchnorm_inference_uses_running_statistics(compiled):
    model = compiled("batchnorm-only", "float64")
    eps = model.net.layers[0].eps
    model.params["bn1.weight"][...] = [2, 1]
    model.params["bn1.bias"][...] = [0, 1]
    model.buffers["bn1.running_mean"][...] = [1, 4]
    model.buffers["bn1.running_var"][...] = [4 - eps, 1 - eps]
    x = np.arange(8, dtype=float).reshape(1, 2, 2, 2)
    np.testing.assert_allclose(model.forward(x).ravel(), [-1, 0, 1, 2, 1, 2, 3, 4], rtol=1e-12)
    assert model.buffers["bn1.running_mean"].tolist() == [1, 4]  # inference leaves them alone
    # training normalises with the batch: each channel comes out with mean = bias
    x = np.random.default_rng(0).normal(size=(BATCH, 2, 2, 2))
    y = model.forward(x, train=True)
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), [0, 1], atol=1e-12)
    assert model.buffers["bn1.running_mean"].tolist() != [1, 4]


def test_c_dropout_train_and_inference(compiled):
    model = compiled("dropout-only", "float32")
    x = np.ones((BATCH, 1000), np.float32)
    np.testing.assert_array_equal(model.forward(x), x)  # inference: the identity
    model.seed(7)
    y = model.forward(x, train=True)
    kept = y != 0
    np.testing.assert_allclose(y[kept], 1 / 0.7, rtol=1e-6)  # inverted: kept units scaled
    assert abs(1 - kept.mean() - 0.3) < 0.04  # 4000 draws: σ ≈ 0.007
    model.seed(7)
    np.testing.assert_array_equal(model.forward(x, train=True), y)  # a seed fixes the masks
    assert (model.forward(x, train=True) != y).any()  # and the generator moves on


def test_c_cross_entropy_is_stable_for_huge_logits(compiled):
    # logits (1000, -1000, 500): the true class's probability underflows to 0 in any float, yet
    # the loss from log-sum-exp is 2000 and the logits' gradient (p - onehot) / B stays finite
    model = compiled("fc-softmax-xent", "float32")
    model.params["fc1.weight"][...] = 1000 * np.eye(3)
    model.params["fc1.bias"][...] = 0
    x, y = np.array([[1, -1, 0.5]], np.float32), np.array([1], np.int32)
    loss = model.loss_and_grad(x, y, input_grad=True)
    assert loss == pytest.approx(ref.cross_entropy(np.array([[1000.0, -1000, 500]]), y))
    assert loss == pytest.approx(2000)
    np.testing.assert_allclose(model.grads["fc1.bias"], [1, -1, 0], atol=1e-6)
    assert np.isfinite(model.input_grad).all()
