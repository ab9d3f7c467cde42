"""Code generation, the memory plan and the Python runtime: deterministic C that compiles without a
warning for every layer kind and example, one plan for the report and the allocation, zero-copy
parameters, validation before C, partial batches, training, save/load. Layer-by-layer numerics
against the numpy reference live in test_layers.py."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jinja2
import numpy as np
import pytest

import netc
from netc import ir
from netc.build import build
from netc.codegen import emit
from netc.codegen.env import environment
from netc.passes import memory
from netc.passes.shapes import infer_shapes
from netc.resources import templates_dir

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.net"))
FAST = ["-O1"]  # the suite compiles many nets; speed is tested elsewhere
RELU, TANH = ir.Activation("relu"), ir.Activation("tanh", 1.7159, 2 / 3)
TABLE = ir.Table("t", tuple(tuple(ch == "X" for ch in row) for row in ("X.XX", "XX.X", ".XXX")))


def _net(shape, *layers, loss="cross_entropy", name="t"):
    return ir.Net(name, shape, tuple(layers), loss=loss)


# Every layer kind at least once, with stride, padding, groups, a table, overlapping pools, and
# a fan-out to three readers.
ALL_KINDS = _net(
    (3, 9, 8),
    ir.Conv(label="c1", out_channels=4, kernel=(3, 2), stride=(1, 2), pad=(1, 1), table=TABLE,
            act=TANH),
    ir.BatchNorm(label="bn1"),
    ir.Pool(label="p1", mode="max", kernel=(3, 3), stride=(2, 2), pad=(1, 1)),
    ir.Conv(label="c2", out_channels=6, kernel=(1, 1), groups=2, bias=False),
    ir.Act(label="a2", fn=ir.Activation("sigmoid", 1.5)),
    ir.Add(label="r2", inputs=(3, 4)),  # a residual around a2: c2's output read three times
    ir.Concat(label="j2", inputs=(5, 3)),
    ir.Subsample(label="s2", kernel=(2, 2), stride=(1, 1), act=RELU),
    ir.Pool(label="p2", mode="avg", kernel=(2, 2), stride=(1, 1), pad=(1, 1)),
    ir.GlobalAvgPool(label="g"),
    ir.Flatten(label="fl"),
    ir.FC(label="f1", units=7, act=RELU),
    ir.Dropout(label="d1", p=0.3),
    ir.FC(label="f2", units=5),
    ir.Softmax(label="sm"),
)
TINY = _net((1, 6, 6), ir.Conv(label="c", out_channels=3, kernel=(3, 3), act=RELU),
            ir.Pool(label="p", mode="max", kernel=(2, 2), stride=(2, 2)),
            ir.FC(label="f", units=4), ir.Softmax(label="sm"))
SMALL_CNN = _net((2, 8, 8), ir.Conv(label="c", out_channels=6, kernel=(3, 3), pad=(1, 1)),
                 ir.BatchNorm(label="bn"), ir.Act(label="r", fn=RELU),
                 ir.Pool(label="p", mode="max", kernel=(2, 2), stride=(2, 2)),
                 ir.FC(label="f", units=16, act=TANH), ir.Dropout(label="d", p=0.2),
                 ir.FC(label="o", units=5), ir.Softmax(label="sm"))
MLP_MSE = _net((3, 1, 1), ir.FC(label="h", units=5, act=TANH), ir.FC(label="o", units=2),
               loss="mse")


def _compile(net, batch=4, **kw):
    return netc.Network(net).compile(batch=batch, flags=FAST, **kw)


@pytest.fixture(scope="module")
def tiny():
    return _compile(TINY, batch=8)


def _x(model, n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, *model.input_shape)).astype(model.dtype)


# ---- codegen


def test_every_layer_kind_has_a_template():
    kinds = {k.__name__.lower() for k in ir.LAYER_KINDS}
    assert kinds <= {p.name.removesuffix(".c.j2") for p in (templates_dir() / "layers").iterdir()}
    assert {type(layer) for layer in ALL_KINDS.layers} == set(ir.LAYER_KINDS)


def test_emit_is_deterministic_across_processes():
    shapes = infer_shapes(ALL_KINDS)
    src = emit(ALL_KINDS, shapes, memory.plan(ALL_KINDS, shapes, 4))
    assert src == emit(ALL_KINDS, shapes, memory.plan(ALL_KINDS, shapes, 4))
    code = ("import sys, netc; n = netc.load(sys.argv[1]); "
            "sys.stdout.write(n.emit(batch=4).text)")
    for seed in ("1", "2"):
        out = subprocess.run([sys.executable, "-c", code, str(ROOT / "examples/lenet5.net")],
                             capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONHASHSEED": seed}).stdout
        assert out == netc.load(ROOT / "examples/lenet5.net").emit(batch=4).text


def test_templates_refuse_missing_fields():
    with pytest.raises(jinja2.UndefinedError):
        environment().get_template("layers/conv.c.j2").render(l={"index": 0})


def test_generated_c_carries_labels_shapes_and_constants():
    text = netc.Network(TINY).emit(batch=8).text
    assert "// L0 c: conv 3 3x3 stride 1x1 pad 0x0, relu: (1, 6, 6) -> (3, 4, 4)" in text
    assert "enum { CI = 1, HI = 6, WI = 6, CO = 3, HO = 4, WO = 4 };" in text
    assert "#define MAX_BATCH 8" in text and "typedef float real;" in text


@pytest.mark.parametrize("dtype, optimizer", [("float32", "adam"), ("float64", "sgd")])
def test_every_layer_kind_compiles_without_warnings(dtype, optimizer):
    src = netc.Network(ALL_KINDS).emit(batch=3, dtype=dtype, optimizer=optimizer)
    lib = build(src.text, src.cdef, name=src.name, flags=["-O2"])
    assert lib.warnings == ""


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_examples_compile_without_warnings(path):
    src = netc.load(path).emit(batch=2)
    assert build(src.text, src.cdef, name=src.name, flags=["-O2"]).warnings == ""


# ---- the memory plan


@pytest.mark.parametrize("optimizer", memory.OPTIMIZERS)
@pytest.mark.parametrize("dtype", sorted(memory.DTYPES))
def test_plan_layout_invariants(dtype, optimizer):
    shapes = infer_shapes(ALL_KINDS)
    p = memory.plan(ALL_KINDS, shapes, 5, dtype, optimizer)
    align = memory.ALIGN_BYTES // p.real_bytes
    for arena, size in (("mem", p.mem_size), ("imem", p.imem_size)):
        spans = sorted((b.offset, b.offset + b.size) for b in p.buffers if b.arena == arena)
        assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:]))
        assert spans[-1][1] <= size
    assert [r for r, _, _ in p.regions] == list(memory.ROLES)
    assert p.regions[0][1] == 0 and all(a[2] == b[1] for a, b in zip(p.regions, p.regions[1:]))
    assert sum(p.bytes_by_role().values()) == p.total_bytes
    for b in p.by_role("params"):
        assert p.buffer(b.name + ".grad").offset == b.offset + p.param_count
        assert b.offset % align == 0
        assert (b.offset < p.decay_count) == (b.name.endswith(".weight")
                                              and b.layer != "bn1")
    assert p.bytes_by_role()["optimizer"] >= p.param_count * p.real_bytes * (
        1 if optimizer == "sgd" else 2)
    assert p.buffer("c1.out").shape == (5, *shapes.outputs[0])
    assert p.find("sm.out.grad") is None  # the fused softmax/cross-entropy needs no dout
    assert p.buffer("p1.argmax").arena == "imem"


def test_model_allocates_exactly_the_plan_and_the_report(tiny):
    assert tiny.nbytes == tiny.plan.total_bytes
    assert tiny.mem.size == tiny.lib.netc_mem_size() == tiny.plan.mem_size
    from netc import report
    network = netc.Network(TINY)
    assert report.data(TINY, network.analysis, 8)["training"]["bytes"] == tiny.nbytes


# ---- the runtime


def test_params_are_zero_copy_views(tiny):
    assert list(tiny.params) == ["c.weight", "c.bias", "f.weight", "f.bias"]
    assert tiny.params["c.weight"].shape == (3, 1, 3, 3)
    assert tiny.params["f.weight"].shape == (4, 12)
    for name, p in tiny.params.items():
        assert np.shares_memory(p, tiny.mem) and np.shares_memory(tiny.grads[name], tiny.mem)
    x = _x(tiny, 2)
    before = tiny.forward(x)
    tiny.params["f.bias"][:] = [5, 0, 0, 0]
    after = tiny.forward(x)
    assert (after[:, 0] > before[:, 0]).all()
    with pytest.raises(TypeError):
        tiny.params["f.bias"] = np.zeros(4, np.float32)
    tiny.init(0)


def test_table_conv_weight_is_connections_by_kernel():
    m = _compile(ALL_KINDS, batch=2)
    assert m.params["c1.weight"].shape == (9, 3, 2)
    assert m.params["c2.weight"].shape == (6, 2, 1, 1)
    assert m.params["s2.weight"].shape == (12,) and m.buffers["bn1.running_var"].shape == (4,)
    assert (m.buffers["bn1.running_var"] == 1).all() and (m.params["bn1.weight"] == 1).all()


@pytest.mark.parametrize("bad, message", [
    (lambda m: [[0.0] * 36], "numpy array"),
    (lambda m: _x(m, 2).astype(np.float64), "dtype"),
    (lambda m: _x(m, 2).reshape(2, 36), "shape"),
    (lambda m: _x(m, 0), "batch of 0"),
    (lambda m: _x(m, 9), "batch of 9"),
    (lambda m: np.asfortranarray(_x(m, 3)[:, :, :, ::-1].copy().transpose(0, 1, 3, 2)),
     "contiguous"),
])
def test_bad_inputs_raise_before_c(tiny, bad, message):
    x = bad(tiny)
    with pytest.raises(netc.InputError, match=message):
        tiny.forward(x)
    with pytest.raises(ValueError):  # InputError is a ValueError too
        tiny.loss_and_grad(x, np.zeros(2, np.int64))


@pytest.mark.parametrize("y, message", [
    (np.array([0, 4]), "out of range"),
    (np.array([-1, 0]), "out of range"),
    (np.array([0, 1, 2]), "shape"),
    (np.array([0.0, 1.0]), "integer class labels"),
])
def test_bad_labels_raise_before_c(tiny, y, message):
    with pytest.raises(netc.InputError, match=message):
        tiny.train_step(_x(tiny, 2), y)
    with pytest.raises(netc.InputError, match="lr"):
        tiny.train_step(_x(tiny, 2), np.array([0, 1]), lr=float("nan"))


def test_mse_targets_and_labels():
    m = _compile(MLP_MSE)
    x = _x(m, 3).reshape(3, 3)  # a vector input may drop its 1x1 spatial dims
    onehot = np.eye(2, dtype=np.float32)[[0, 1, 1]]
    assert m.loss_and_grad(x, onehot) == pytest.approx(m.loss_and_grad(x, np.array([0, 1, 1])))
    out = m.forward(x)
    assert out.shape == (3, 2)
    expected = 0.5 * ((out - onehot) ** 2).sum(1).mean()  # batch mean of 1/2 |out - t|^2
    assert m.loss_and_grad(x, onehot) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(netc.InputError, match="NaN"):
        m.loss_and_grad(x, np.full((3, 2), np.nan, np.float32))
    with pytest.raises(netc.InputError, match="shape"):
        m.loss_and_grad(x, np.zeros((3, 3), np.float32))


def test_smaller_last_batch_equals_the_samples_run_alone():
    net = _net((2, 5, 5), ir.Conv(label="c", out_channels=3, kernel=(3, 3)),
               ir.BatchNorm(label="bn"), ir.Act(label="r", fn=RELU),
               ir.FC(label="f", units=3), ir.Softmax(label="sm"))
    big, small = _compile(net, batch=8, dtype="float64"), _compile(net, batch=3, dtype="float64")
    x, y = _x(big, 8), np.array([0, 1, 2, 0, 1, 2, 0, 1])
    np.testing.assert_allclose(big.forward(x)[:3], big.forward(x[:3]), rtol=1e-12)
    loss_big = big.loss_and_grad(x[:3], y[:3], input_grad=True)
    assert loss_big == pytest.approx(small.loss_and_grad(x[:3], y[:3], input_grad=True),
                                     rel=1e-12)
    for name in big.grads:
        np.testing.assert_allclose(big.grads[name], small.grads[name], rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(big.input_grad, small.input_grad, rtol=1e-10, atol=1e-14)
    for name in big.buffers:
        np.testing.assert_allclose(big.buffers[name], small.buffers[name], rtol=1e-12)


@pytest.mark.parametrize("optimizer, hyper", [("sgd", dict(lr=0.1, momentum=0.9)),
                                              ("adam", dict(lr=0.01))])
def test_train_step_decreases_the_loss(optimizer, hyper):
    m = _compile(SMALL_CNN, batch=8, optimizer=optimizer)
    x, y = _x(m, 8), np.arange(8) % 5
    m.init(1)
    losses = [m.train_step(x, y, weight_decay=1e-4, **hyper) for _ in range(60)]
    assert losses[-1] < 0.2 * losses[0]
    assert int(m.optimizer_state["step"][0]) == 60
    assert set(m.optimizer_state) == ({"momentum", "step"} if optimizer == "sgd"
                                      else {"m", "v", "step"})


def test_init_and_dropout_are_seeded():
    m = _compile(ALL_KINDS, batch=4)
    x = _x(m, 4)
    m.init(3)
    w, a = m.params["f1.weight"].copy(), m.forward(x, train=True)
    m.init(3)
    np.testing.assert_array_equal(m.params["f1.weight"], w)
    np.testing.assert_array_equal(m.forward(x, train=True), a)  # same generator state
    assert not np.array_equal(m.forward(x, train=True), a)  # the generator moved on
    np.testing.assert_array_equal(m.forward(x), m.forward(x))  # inference: no dropout
    m.init(4)
    assert not np.array_equal(m.params["f1.weight"], w)
    assert (m.params["f1.bias"] == 0).all()


def test_init_scale_matches_the_activation():
    net = _net((400, 1, 1), ir.FC(label="r", units=300, act=RELU),
               ir.FC(label="t", units=200), ir.Act(label="a", fn=TANH),
               ir.FC(label="o", units=10), ir.Softmax(label="sm"))
    m = _compile(net)
    assert m.params["r.weight"].std() == pytest.approx(np.sqrt(2 / 400), rel=0.05)  # He
    assert m.params["t.weight"].std() == pytest.approx(np.sqrt(2 / 500), rel=0.05)  # Glorot
    assert m.params["o.weight"].std() == pytest.approx(np.sqrt(1 / 200), rel=0.1)  # LeCun


def test_save_load_round_trip(tiny, tmp_path):
    tiny.init(7)
    tiny.train_step(_x(tiny, 8), np.arange(8) % 4, lr=0.1)
    saved = {k: v.copy() for k, v in tiny.params.items()}
    path = tmp_path / "w.npz"
    tiny.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["w.npz"]  # no temp file left behind
    tiny.init(8)
    tiny.load(path)
    for k, v in saved.items():
        np.testing.assert_array_equal(tiny.params[k], v)
    other = _compile(MLP_MSE)
    with pytest.raises(netc.DataError, match="does not match"):
        other.load(path)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(netc.DataError):
        tiny.load(tmp_path / "bad.npz")


def test_input_gradient_on_request(tiny):
    x, y = _x(tiny, 3), np.array([0, 1, 2])
    tiny.loss_and_grad(x, y)
    assert tiny.input_grad is None
    tiny.loss_and_grad(x, y, input_grad=True)
    assert tiny.input_grad.shape == x.shape and np.abs(tiny.input_grad).max() > 0


def test_plan_of_the_docstring_example():
    net = _net((3, 1, 1), ir.FC(label="fc", units=2), loss="mse")
    p = memory.plan(net, infer_shapes(net), 4)
    assert [(b.name, b.offset) for b in p.buffers] == [
        ("fc.weight", 0), ("fc.bias", 16), ("fc.weight.grad", 32), ("fc.bias.grad", 48),
        ("optimizer.momentum", 64), ("fc.out", 96), ("fc.out.grad", 112), ("input.grad", 128),
        ("rng.state", 0), ("threads", 4), ("optimizer.step", 16)]
    assert (p.mem_size, p.imem_size, p.total_bytes) == (144, 32, 704)
    assert (p.param_count, p.decay_count) == (32, 16)


# ---- netc compile


def test_cli_compile_writes_source_header_and_library(tmp_path, capsys):
    from netc.cli import main
    out = tmp_path / "out"
    assert main(["compile", str(ROOT / "examples/lenet5.net"), "-o", str(out), "--batch", "4",
                 "--dtype", "float64"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["lenet5.c", "lenet5.h", "lenet5.so"]
    assert "typedef double real;" in (out / "lenet5.c").read_text()
    assert "double netc_train_step(" in (out / "lenet5.h").read_text()
    assert "batch 1 to 4" in capsys.readouterr().out
    assert main(["compile", str(ROOT / "examples/lenet5.net"), "--emit-c"]) == 0
    assert capsys.readouterr().out == netc.load(ROOT / "examples/lenet5.net").emit().text


# ---- the large-chunk paths: chunks of >= 16 samples run the fc forward as out^T = W inp^T
# (samples along the vector lanes, padded); the layer tests compile batch 4 and never reach it


LARGE = """input 3x8x8
    conv(8, k=3, pad=1, act=relu) - maxpool(2) - conv(6, k=3, act=tanh) - fc(20, act=tanh) -
    softmax(5)"""


ROWS = """input 2x17x17
    conv(10, k=2, act=relu) - conv(3, k=1) - conv(9, k=3, pad=1, act=tanh) - maxpool(2) -
    softmax(5)"""


@pytest.mark.parametrize("threads", [1, 2])
def test_weight_gradients_by_rows_match_the_reference(tmp_path, threads):
    # every conv takes the ∂W-by-rows path: the first (no input gradient) and the third (a direct
    # one) with edge blocks in both output channels (10, 9) and weight columns (8, 27), the 1×1
    # one with fewer output channels (3) than a block
    import reference as ref
    network = netc.load(ROWS)
    kernels = network.plan(6).schedule.kernels
    rows = [k.dw_rows for k, layer in zip(kernels, network.net.layers)
            if isinstance(layer, ir.Conv)]
    assert rows == [True, True, True]
    rng = np.random.default_rng(threads)
    model = network.compile(batch=6, dtype="float64", threads=threads, flags=["-O1"],
                            cache_dir=tmp_path)
    model.init(1)
    params = {k: v.astype(np.float64) for k, v in model.params.items()}
    for n in (6, 5):
        x = rng.normal(size=(n, 2, 17, 17))
        y = rng.integers(0, 5, n).astype(np.int32)
        loss = model.loss_and_grad(x, y, input_grad=True)
        want_loss, want_grads, want_dx = ref.loss_and_grad(model.net, params, x, y)
        assert loss == pytest.approx(want_loss, rel=1e-10)
        for key, g in want_grads.items():
            err = np.abs(model.grads[key].reshape(g.shape) - g).max()
            assert err <= 1e-9 * max(np.abs(g).max(), 1e-4), key
        dx = model.input_grad.reshape(want_dx.shape)
        assert np.abs(dx - want_dx).max() <= 1e-9 * np.abs(want_dx).max()


def test_resnet20_runs_its_long_inner_dimensions_by_rows_where_the_input_fits_l2():
    # stride-1 3x3 convs on 16x32x32 and 32x16x16 (padded inputs of 18,496 and 10,368 reals, under
    # schedule.ROWS_BUDGET) go by rows with 2 extra columns in 32 and 16; on 64x8x8 the 2 in 8 cost
    # more than the column matrix; ∂W by rows only for the first conv (CI·KK = 27)
    network = netc.load(ROOT / "examples/resnet20.net")
    convs = [(layer.label, kernel) for kernel, layer
             in zip(network.plan(1, training=False).schedule.kernels, network.net.layers)
             if isinstance(layer, ir.Conv)]
    by_rows = {label for label, kernel in convs if kernel.fwd_rows}
    assert by_rows == {label for label, _ in convs if label == "conv1"
                       or label.startswith(("stage1", "stage2")) and label != "stage2_0.conv1"
                       and not label.endswith("shortcut")}
    assert {label for label, kernel in convs if kernel.dw_rows} == {"conv1"}


@pytest.mark.parametrize("threads", [1, 2])
def test_large_chunks_match_the_reference(tmp_path, threads):
    import reference as ref
    network = netc.load(LARGE)
    plan = network.plan(40, "float64", threads=threads)
    assert all(k.fc_transposed for k in plan.schedule.kernels if k.template == "fc")
    rng = np.random.default_rng(threads)
    for dtype, tol in (("float64", 1e-9), ("float32", 1e-5)):
        model = network.compile(batch=40, dtype=dtype, threads=threads, flags=["-O1"],
                                cache_dir=tmp_path)
        model.init(1)
        params = {k: v.astype(np.float64) for k, v in model.params.items()}
        for n in (40, 37, 5):  # full, partial (padded lanes), below one vector (dot products)
            x = rng.normal(size=(n, 3, 8, 8)).astype(dtype)
            y = rng.integers(0, 5, n).astype(np.int32)
            want = ref.forward_net(model.net, params, x).reshape(n, 5)
            got = model.forward(x)
            assert np.abs(got - want).max() <= tol * np.abs(want).max()
            if dtype == "float32":
                continue
            loss = model.loss_and_grad(x, y, input_grad=True)
            want_loss, want_grads, want_dx = ref.loss_and_grad(model.net, params, x, y)
            assert loss == pytest.approx(want_loss, rel=1e-10)
            for key, g in want_grads.items():
                err = np.abs(model.grads[key].reshape(g.shape) - g).max()
                assert err <= tol * max(np.abs(g).max(), 1e-4), key
            dx = model.input_grad.reshape(want_dx.shape)
            assert np.abs(dx - want_dx).max() <= tol * np.abs(want_dx).max()
