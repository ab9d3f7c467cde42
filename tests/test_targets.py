"""The inference target (issue 11 §3): a plan with training=False and the C the same templates
emit for it, the forward alone. Its outputs equal the training build's bit for bit on the same
weights, it compiles without a warning, and it plans no gradient, optimizer or saved state."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import netc
from netc.build import build
from netc.codegen import INFERENCE_CDEF

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
FAST = ["-O1"]
# every layer kind, conv's variants (rows, im2col, 1×1, strided, table, groups, as fc), max pool's
# arg-max (which an inference build does not keep), dropout and batchnorm in inference mode,
# fc's transposed chunks (batch 20), a graph
SPECS = {
    "kinds": """input 3x12x12
        table t {
          X.XX
          XX.X
          .XXX
        }
        conv(3, k=3, pad=1, act=relu) - conv(4, k=2, table=t, act=tanh) - bn -
        maxpool(3, stride=2, pad=1) - conv(6, k=1, groups=2, bias=off) - sigmoid(1.5) -
        subsample(2, act=relu) - avgpool(2, stride=1, pad=1) - dropout(0.3) - flatten -
        fc(12, act=relu) - bn - softmax(5)""",
    "graph": """input 3x8x8
        block res(c) = add[ conv(c, k=3, pad=1, act=relu) - conv(c, k=3, pad=1) - bn | ] - relu
        c1: conv(4, k=3, pad=1) - res(4) - concat[ | @c1 | maxpool(3, stride=1, pad=1) ] - gap -
        softmax(3)""",
}


def _pair(spec, batch, tmp_path):
    """A training build (Model) and an inference build (library and plan) of one net."""
    network = netc.load(spec)
    model = network.compile(batch=batch, flags=FAST, cache_dir=tmp_path)
    plan = network.plan(batch, training=False)
    src = network.emit(batch, training=False)
    lib = build(src.text, src.cdef, name=src.name, flags=FAST, cache_dir=tmp_path)
    return network, model, plan, src, lib


@pytest.mark.parametrize("name", SPECS)
@pytest.mark.parametrize("batch", [20, 1])
def test_inference_build_gives_the_training_builds_outputs(name, batch, tmp_path):
    network, model, plan, src, lib = _pair(SPECS[name], batch, tmp_path)
    assert src.cdef == INFERENCE_CDEF and lib.warnings == ""
    assert lib.lib.netc_mem_size() == plan.mem_size
    rng = np.random.default_rng(batch)
    model.init(3)
    for b in model.buffers.values():  # running statistics that are not the identity
        b[...] = rng.uniform(0.5, 2, b.shape)
    mem = np.zeros(plan.mem_size, np.float32)
    imem = np.zeros(plan.imem_size, np.int32)
    for name_, arr in {**model.params, **model.buffers}.items():
        buf = plan.buffer(name_)
        mem[buf.offset:buf.offset + buf.size] = arr.ravel()
    ffi = lib.ffi
    x = rng.normal(size=(batch, *network.net.input)).astype(np.float32)
    for threads in (1, 2):
        lib.lib.netc_set_threads(ffi.from_buffer("int[]", imem), threads)
        lib.lib.netc_forward(ffi.from_buffer(mem), ffi.from_buffer("int[]", imem),
                             ffi.from_buffer(x), batch, 1)  # train is ignored: inference
        out = plan.buffer(f"{network.net.layers[-1].label}.out")
        got = mem[out.offset:out.offset + out.size].reshape(batch, -1)
        np.testing.assert_array_equal(got, model.forward(x).reshape(batch, -1))


def test_inference_plan_holds_only_the_forward():
    network = netc.load(EXAMPLES / "resnet20.net")
    train, infer = network.plan(64), network.plan(64, training=False)
    roles = infer.bytes_by_role()
    for role in ("grads", "optimizer", "act_grads", "saved", "io"):
        assert roles[role] == 0, role
    assert roles["params"] == train.bytes_by_role()["params"]
    assert roles["activations"] == train.bytes_by_role()["activations"]
    assert 0 < roles["workspace"] < train.bytes_by_role()["workspace"]
    assert infer.total_bytes < train.total_bytes / 2
    assert not [b for b in infer.buffers if b.name.endswith((".grad", ".argmax", ".mask"))]


def test_inference_build_of_every_example_compiles_without_warnings(tmp_path):
    for path in sorted(EXAMPLES.glob("*.net")):
        if path.stem in ("vgg16", "alexnet", "googlenet", "resnet18"):
            continue  # the large ones cost minutes at -O1; their kinds are covered above
        src = netc.load(path).emit(batch=2, training=False)
        assert build(src.text, src.cdef, name=src.name, flags=FAST,
                     cache_dir=tmp_path).warnings == "", path.stem
