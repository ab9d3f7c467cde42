"""Threads (issue 5, issue 4 §4): the batch runs in the plan's fixed chunks, each with its own
gradient copy, added in chunk order. Same threads → same results; a deterministic plan → the same
bits whatever the thread count; multithreaded gradients equal single-threaded ones to rounding;
the arenas are exactly the plan, chunk copies included."""
from __future__ import annotations

import numpy as np
import pytest

import netc
from netc.errors import InputError
from netc.passes import memory

FAST = ["-O1"]
# every batch-parallel kind plus the two that run whole (batchnorm, dropout)
SPEC = """input 2x10x10
    conv(6, k=3, pad=1, act=tanh) - maxpool(2) - conv(8, k=3, act=relu) - bn -
    flatten - fc(12, act=tanh) - dropout(0.2) - softmax(4)"""
BATCH = 13  # not a multiple of the chunk counts: uneven and empty chunks


def _data(seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((BATCH, 2, 10, 10)).astype(np.float32),
            rng.integers(0, 4, BATCH).astype(np.int32))


def _train(model, steps=4):
    x, y = _data()
    model.init(7)
    losses = [model.train_step(x, y, lr=0.05, momentum=0.9) for _ in range(steps)]
    return losses, np.concatenate([p.ravel() for p in model.params.values()])


@pytest.fixture(scope="module")
def net():
    return netc.load(SPEC)


def test_same_threads_give_identical_results(net, tmp_path):
    a = net.compile(batch=BATCH, threads=2, flags=FAST, cache_dir=tmp_path)
    b = net.compile(batch=BATCH, threads=2, flags=FAST, cache_dir=tmp_path)
    la, pa = _train(a)
    lb, pb = _train(b)
    assert la == lb and np.array_equal(pa, pb)


def test_deterministic_is_bitwise_identical_for_any_thread_count(net, tmp_path):
    model = net.compile(batch=BATCH, threads=1, deterministic=True, flags=FAST,
                        cache_dir=tmp_path)
    assert model.plan.parts == memory.DETERMINISTIC_PARTS
    runs = []
    for threads in (1, 2, 3):
        model.threads = threads
        assert model.threads == threads
        runs.append(_train(model))
    for losses, params in runs[1:]:
        assert losses == runs[0][0] and np.array_equal(params, runs[0][1])


def test_threaded_gradients_match_single_threaded(net, tmp_path):
    x, y = _data(1)
    grads = []
    for threads in (1, 2):
        model = net.compile(batch=BATCH, threads=threads, flags=FAST, cache_dir=tmp_path)
        model.init(3)
        model.loss_and_grad(x, y, input_grad=True)
        grads.append(({k: g.copy() for k, g in model.grads.items()}, model.input_grad.copy()))
    (g1, dx1), (g2, dx2) = grads
    for name in g1:
        np.testing.assert_allclose(g2[name], g1[name], rtol=1e-4, atol=1e-6, err_msg=name)
    np.testing.assert_array_equal(dx2, dx1)  # per sample: no reduction across chunks


@pytest.mark.parametrize("threads, deterministic", [(2, False), (3, False), (1, True)])
def test_arenas_are_exactly_the_plan_with_chunk_copies(net, tmp_path, threads, deterministic):
    model = net.compile(batch=BATCH, threads=threads, deterministic=deterministic, flags=FAST,
                        cache_dir=tmp_path)
    plan = model.plan
    single = net.plan(BATCH)
    parts = memory.DETERMINISTIC_PARTS if deterministic else threads
    assert plan.parts == parts == model.lib.netc_parts()
    assert model.nbytes == plan.total_bytes
    assert plan.total_bytes > single.total_bytes
    copies = [b for b in plan.buffers if b.name.startswith("grads.part")]
    assert len(copies) == parts - 1 and all(b.size == plan.param_count for b in copies)
    assert len([b for b in plan.buffers if b.name.startswith("workspace")]) == parts
    assert set(model.grads) == set(net.compile(batch=BATCH, flags=FAST,
                                               cache_dir=tmp_path).grads)


def test_threads_are_validated(net, tmp_path):
    with pytest.raises(InputError):
        net.compile(batch=4, threads=0, flags=FAST, cache_dir=tmp_path)
    model = net.compile(batch=4, flags=FAST, cache_dir=tmp_path)
    assert model.threads == 1
    for bad in (0, -1, 1.5, True):
        with pytest.raises(InputError):
            model.threads = bad
