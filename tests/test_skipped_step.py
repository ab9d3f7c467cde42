"""A training call whose loss is not finite changes no state: parameters, BatchNorm's running
statistics, the optimizer's moments and step count and the dropout generator stay bit for bit as
they were, so the next forward is finite; a finite call still moves them."""
from __future__ import annotations

import numpy as np
import pytest

import netc

SPEC = """input 2x5x5
    conv(4, k=3) - bn - relu - flatten - fc(6) - bn - relu - dropout(0.25) - fc(3) - softmax"""


@pytest.fixture(scope="module", params=[("sgd", "float32"), ("adam", "float64")],
                ids=lambda p: "-".join(p))
def model(request, tmp_path_factory):
    optimizer, dtype = request.param
    return netc.load(SPEC).compile(batch=4, dtype=dtype, optimizer=optimizer, flags=["-O1"],
                                   cache_dir=tmp_path_factory.mktemp("skip"))


def _state(model) -> dict[str, np.ndarray]:
    return {f"{group}/{name}": array.copy() for group, arrays in (
        ("param", model.params), ("buffer", model.buffers), ("optim", model.optimizer_state))
        for name, array in arrays.items()} | {"rng": model.rng_state.copy()}


def _assert_same(before: dict, after: dict) -> None:
    for name, value in before.items():
        assert after[name].tobytes() == value.tobytes(), name  # bit for bit, NaN included


def _batch(model, poison: float | None = None):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, *model.input_shape)).astype(model.dtype)
    if poison is not None:
        x[1, 0, 2, 2] = poison
    return x, np.array([0, 1, 2, 1], np.int32)


CALLS = {
    "train_step": lambda m, x, y: m.train_step(x, y, lr=0.05, momentum=0.9),
    "loss_and_grad": lambda m, x, y: m.loss_and_grad(x, y, train=True),
}


@pytest.mark.parametrize("call", CALLS)
@pytest.mark.parametrize("poison", [np.inf, np.nan])
def test_a_non_finite_step_leaves_every_buffer_as_it_was(model, call, poison):
    model.init(1)
    x, y = _batch(model)
    model.train_step(x, y, lr=0.05, momentum=0.9)  # moments, step count and statistics in use
    before = _state(model)
    assert not np.isfinite(CALLS[call](model, *_batch(model, poison)))
    _assert_same(before, _state(model))
    assert np.isfinite(model.forward(x)).all()
    assert np.isfinite(model.forward(x, train=True)).all()


@pytest.mark.parametrize("call", CALLS)
def test_a_finite_step_moves_the_running_statistics_and_the_generator(model, call):
    model.init(1)
    before = _state(model)
    assert np.isfinite(CALLS[call](model, *_batch(model)))
    after = _state(model)
    for name in ("buffer/bn1.running_mean", "buffer/bn1.running_var", "buffer/bn2.running_var",
                 "rng"):
        assert not np.array_equal(before[name], after[name]), name
