"""The inference target (issue 11 §3): a plan with training=False and the C the same templates
emit for it, the forward alone. Its outputs equal the training build's bit for bit on the same
weights, it compiles without a warning, and it plans no gradient, optimizer or saved state."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import netc
from netc.build import build
from netc.codegen import INFERENCE_CDEF
from netc.passes import memory

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
    # column matrices in tiles of rows (schedule.TILE_BUDGET), the last one shorter: 3 of 38
    # rows, then 5 of 18 with stride 2 and groups
    "tiles": """input 9x36x29
        conv(6, k=3, pad=2, act=relu) - conv(8, k=5, stride=2, pad=1, groups=2) - gap -
        softmax(8)""",
    "graph": """input 3x8x8
        block res(c) = add[ conv(c, k=3, pad=1, act=relu) - conv(c, k=3, pad=1) - bn | ] - relu
        c1: conv(4, k=3, pad=1) - res(4) - concat[ | @c1 | maxpool(3, stride=1, pad=1) ] - gap -
        softmax(3)""",
}


def _pair(spec, batch, tmp_path, parts=1):
    """A training build (Model) and an inference build (library and plan) of one net, both in
    `parts` batch chunks (the chunk size picks kernels)."""
    network = netc.load(spec)
    model = network.compile(batch=batch, flags=FAST, cache_dir=tmp_path, threads=parts)
    plan = network.plan(batch, training=False, threads=parts)
    src = network.emit(batch, training=False, threads=parts)
    lib = build(src.text, src.cdef, name=src.name, flags=FAST, cache_dir=tmp_path)
    return network, model, plan, src, lib


# parts 3: chunks that run ahead of each other while activations share memory (Plan.waits)
@pytest.mark.parametrize("name", SPECS)
@pytest.mark.parametrize("batch, parts", [(20, 1), (1, 1), (20, 3)])
def test_inference_build_gives_the_training_builds_outputs(name, batch, parts, tmp_path):
    network, model, plan, src, lib = _pair(SPECS[name], batch, tmp_path, parts)
    assert any(plan.waits) == (parts > 1)
    if name == "tiles":
        assert [k.tile_rows for k in plan.schedule.kernels[:2]] == [3, 5]
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
    # by liveness, with each layer's scratch (one chunk): under a twelfth of the training
    # plan's activations, one buffer each
    assert roles["activations"] == 12_730_880 < train.bytes_by_role()["activations"] / 13
    assert roles["workspace"] == 0
    two = network.plan(64, training=False, threads=2).bytes_by_role()  # two chunks: a workspace
    assert two["activations"] == 12_582_912
    # each chunk's: column matrices in tiles (schedule.TILE_BUDGET) or padded rows, a fraction
    # of training's
    assert two["workspace"] == 2 * 147_968 < train.bytes_by_role()["workspace"] / 2
    assert infer.total_bytes < train.total_bytes / 2
    assert not [b for b in infer.buffers if b.name.endswith((".grad", ".argmax", ".mask"))]


def _live_together(net, plan, standalone):
    """(buffer, buffer) pairs of layer outputs, their scratch (and a library's input) alive at
    one step."""
    names = [f"{layer.label}.out" for layer in net.layers] + (["input"] if standalone else [])
    lives = [(i, max(net.consumers(i), default=len(net.layers))) for i in range(len(net.layers))]
    lives += [(-1, max(net.consumers(-1)))] if standalone else []
    for i, layer in enumerate(net.layers):  # a layer's scratch lives while it runs
        if plan.find(f"{layer.label}.scratch"):
            names.append(f"{layer.label}.scratch")
            lives.append((i, i))
    bufs = [plan.buffer(n) for n in names]
    return [(a, b) for i, a in enumerate(bufs) for j, b in enumerate(bufs[:i])
            if lives[i][0] <= lives[j][1] and lives[j][0] <= lives[i][1]]


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.net")), ids=lambda p: p.stem)
def test_activations_alive_together_never_share_memory(path):
    network = netc.load(path)
    for standalone in (False, True):
        plan = network.plan(3, training=False) if not standalone else memory.plan(
            network.net, network.shapes, 3, training=False, standalone=True)
        pairs = _live_together(network.net, plan, standalone)
        assert pairs or (len(network.net.layers) == 1 and not standalone), path.stem
        for a, b in pairs:
            assert a.offset >= b.offset + b.size or b.offset >= a.offset + a.size, (a, b)
        start, end = plan.region("activations")
        assert all(start <= b.offset and b.offset + b.size <= end
                   for b in plan.by_role("activations"))


def test_a_chains_pool_is_what_its_busiest_layer_needs():
    # the least any plan can do: a layer's input, its output and its scratch exist at once
    network = netc.load(EXAMPLES / "lenet5.net")
    plan = network.plan(1, training=False)
    outs = [-(-math.prod(o) // 16) * 16 for o in network.shapes.outputs]
    scratch = [k.forward_workspace for k in plan.schedule.kernels]
    need = [outs[i] + (outs[i - 1] if i else 0) + scratch[i] for i in range(len(outs))]
    start, end = plan.region("activations")
    # c3: its input, its output and its column matrix in tiles of 7 of its 10 rows
    assert max(need) == 1184 + 1600 + 6 * 25 * 7 * 10
    assert max(need) <= end - start <= 1.03 * max(need)  # greedy placement: within 3%



def test_inference_build_of_every_example_compiles_without_warnings(tmp_path):
    for path in sorted(EXAMPLES.glob("*.net")):
        if path.stem in ("vgg16", "alexnet", "googlenet", "resnet18"):
            continue  # the large ones cost minutes at -O1; their kinds are covered above
        src = netc.load(path).emit(batch=2, training=False)
        assert build(src.text, src.cdef, name=src.name, flags=FAST,
                     cache_dir=tmp_path).warnings == "", path.stem
