"""A Model refuses what would corrupt it or crash the process, with an InputError or DataError:
a call from a second thread while one runs (issue 9 §9), rebinding what the checks rely on (§10),
mistyped arguments (§11), and weight files that are not what Model.save writes (§11, issue 10 §9,
§8). A one-output network takes labels 0 and 1, as `netc train` does (issue 10 §9)."""
from __future__ import annotations

import os
import threading
import zipfile

import numpy as np
import pytest

import netc
from netc.errors import DataError, InputError
from netc.runtime import MAX_THREADS

FLAGS = ["-O0"]
SPEC = "input 3\nfc(4, act=tanh) - fc(2) - softmax"
BINARY = "input 2\nloss mse\nfc(3, act=tanh) - fc(1, act=sigmoid)"


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    cache = tmp_path_factory.mktemp("guards")
    return lambda spec=SPEC, **kw: netc.load(spec).compile(batch=4, flags=FLAGS,
                                                           cache_dir=cache, **kw)


def xy(b=2):
    rng = np.random.default_rng(b)
    return rng.normal(size=(b, 3)).astype(np.float32), np.arange(b, dtype=np.int32) % 2


# ---- one call at a time

class Labels:
    """Labels whose conversion to an array (inside the call, under the model's lock) waits
    until the main thread has tried its own call."""

    def __init__(self, y):
        self.y, self.inside, self.release = y, threading.Event(), threading.Event()

    def __array__(self, dtype=None, copy=None):
        self.inside.set()
        self.release.wait(30)
        return self.y


SECOND_CALLS = {
    "forward": lambda m, x, y, tmp: m.forward(x),
    "train_step": lambda m, x, y, tmp: m.train_step(x, y),
    "loss_and_grad": lambda m, x, y, tmp: m.loss_and_grad(x, y),
    "init": lambda m, x, y, tmp: m.init(1),
    "seed": lambda m, x, y, tmp: m.seed(1),
    "threads": lambda m, x, y, tmp: setattr(m, "threads", 2),
    "save": lambda m, x, y, tmp: m.save(tmp / "w.npz"),
}


@pytest.mark.parametrize("first_labels", ["valid", "out of range"])
@pytest.mark.parametrize("second", SECOND_CALLS)
def test_a_second_thread_is_refused_while_a_call_runs(compiled, tmp_path, second, first_labels):
    model = compiled()
    x, y = xy()
    labels, results = Labels(y if first_labels == "valid" else np.array([5, 0])), []

    def first():
        try:
            results.append(model.train_step(x, labels, lr=0.1))
        except InputError as e:
            results.append(e)

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert labels.inside.wait(30)
        before = model.mem.copy()
        with pytest.raises(InputError, match="in use by another thread"):
            SECOND_CALLS[second](model, x, y, tmp_path)
        assert np.array_equal(model.mem, before)  # the refused call touched nothing
    finally:
        labels.release.set()
        thread.join(30)
    if first_labels == "valid":
        assert np.isfinite(results[0])
    else:
        assert "label 5 is out of range" in str(results[0])
    assert model.forward(x).shape == (2, 2)  # free again once the first call ended


# ---- what the checks rely on is read-only

MODEL_ATTRIBUTES = ["net", "shapes", "plan", "source", "library", "ffi", "lib", "dtype", "batch",
                    "input_shape", "output_shape", "mem", "imem", "params", "grads", "buffers",
                    "optimizer_state", "rng_state", "min_train_batch"]


@pytest.mark.parametrize("name", MODEL_ATTRIBUTES)
def test_model_attributes_cannot_be_rebound(compiled, name):
    model = compiled()
    replacement = {"input_shape": (1,), "dtype": np.dtype(np.float64), "batch": 10**6,
                   "mem": np.zeros(1, np.float32)}.get(name)
    with pytest.raises(AttributeError):
        setattr(model, name, replacement)
    # the checks still refuse what the C was not built for
    with pytest.raises(InputError):
        model.forward(np.zeros((1, 1), np.float32))
    with pytest.raises(InputError):
        model.forward(np.zeros((5, 3), np.float32))


@pytest.mark.parametrize("name", ["net", "shapes"])
def test_network_attributes_cannot_be_rebound(name):
    network, other = netc.load(SPEC), netc.load("input 100\nfc(2) - softmax")
    with pytest.raises(AttributeError):
        setattr(network, name, getattr(other, name))


# ---- mistyped arguments are InputErrors, not tracebacks

@pytest.mark.parametrize("call", [
    lambda m, x, y: m.forward(x, train="yes"),
    lambda m, x, y: m.forward(x, train=1),
    lambda m, x, y: m.loss_and_grad(x, y, train="no"),
    lambda m, x, y: m.loss_and_grad(x, y, input_grad=None),
    lambda m, x, y: m.train_step(x, y, lr=10**400),
    lambda m, x, y: m.train_step(x, y, momentum=True),
    lambda m, x, y: m.loss_and_grad(x, [[0], [1, 2]]),
    lambda m, x, y: setattr(m, "threads", 2**40),
    lambda m, x, y: setattr(m, "threads", MAX_THREADS + 1),
])
def test_mistyped_arguments_are_input_errors(compiled, call):
    model = compiled()
    x, y = xy()
    before = model.mem.copy()
    with pytest.raises(InputError):
        call(model, x, y)
    assert np.array_equal(model.mem, before)


def test_compile_refuses_more_threads_than_the_limit(tmp_path):
    with pytest.raises(InputError, match=f"1 to {MAX_THREADS}"):
        netc.load(SPEC).compile(threads=MAX_THREADS + 1, flags=FLAGS, cache_dir=tmp_path)


# ---- one output: labels 0 and 1, as in `netc train`

def test_one_output_takes_labels_0_and_1_like_the_cli(compiled):
    model = compiled(BINARY)
    x = np.random.default_rng(0).normal(size=(4, 2)).astype(np.float32)
    labels = np.array([0, 1, 1, 0])
    from_labels = model.loss_and_grad(x, labels)
    grads = {k: g.copy() for k, g in model.grads.items()}
    assert from_labels == model.loss_and_grad(x, labels[:, None].astype(np.float32))
    for name, g in model.grads.items():
        assert np.array_equal(g, grads[name]), name
    with pytest.raises(InputError, match="one output takes labels 0 and 1") as e:
        model.loss_and_grad(x, np.array([0, 1, 2, 0]))
    assert "1 classes" not in str(e.value)


def test_several_outputs_name_the_label_range(compiled):
    model = compiled()
    x, _ = xy()
    with pytest.raises(InputError, match=r"label 2 is out of range: the network has 2 outputs, "
                                         r"one per class 0 to 1"):
        model.loss_and_grad(x, np.array([0, 2]))


# ---- Model.load reads only what Model.save writes

@pytest.fixture
def model(compiled):
    return compiled()


def saved(model, path, **replace):
    arrays = {**model.params, **model.buffers, **replace}
    np.savez(path, **arrays)
    return path


def refused(model, path, *fragments):
    before = model.mem.copy()
    with pytest.raises(DataError) as e:
        model.load(path)
    message = str(e.value)
    for fragment in fragments:
        assert fragment in message, message
    assert "allow_pickle" not in message and "pickled" not in message
    assert np.array_equal(model.mem, before)
    return message


def test_load_of_a_text_file_says_it_is_not_an_npz(model, tmp_path):
    (tmp_path / "w.npz").write_text("fc1.weight = 1, 2, 3\n")
    refused(model, tmp_path / "w.npz", "not an .npz archive")


def test_load_of_a_single_npy_is_not_an_npz(model, tmp_path):
    np.save(tmp_path / "w.npy", np.zeros(3))
    refused(model, tmp_path / "w.npy", "not an .npz archive")


def test_load_of_a_string_array(model, tmp_path):
    path = saved(model, tmp_path / "w.npz", **{"fc1.bias": np.array(["a", "b", "c", "d"])})
    refused(model, path, "fc1.bias", "not numbers")


def test_load_of_a_header_declaring_2_to_the_40_elements(model, tmp_path):
    """The header is checked before any data is read: no 4 TiB allocation."""
    path = tmp_path / "w.npz"
    np.savez(path, **{k: v for k, v in {**model.params, **model.buffers}.items()
                      if k != "fc2.bias"})
    with zipfile.ZipFile(path, "a") as z, z.open("fc2.bias.npy", "w") as member:
        np.lib.format.write_array_header_1_0(
            member, {"descr": "<f4", "fortran_order": False, "shape": (2**40,)})
        member.write(b"\0" * 64)
    refused(model, path, "fc2.bias has shape (1099511627776,)")


def test_load_of_a_training_checkpoint_names_load_trained(model, tmp_path):
    path = tmp_path / "checkpoint.npz"
    np.savez(path, meta=np.array('{"format": "netc-checkpoint"}'),
             **{f"param/{k}": v for k, v in model.params.items()})
    message = refused(model, path, "training checkpoint", "netc.load_trained(")
    assert "same spec and parameters" not in message


def test_load_of_dev_zero_is_refused(model):
    refused(model, "/dev/zero", "character device")


def test_load_of_a_fifo_does_not_block(model, tmp_path):
    fifo = tmp_path / "w.npz"
    os.mkfifo(fifo)
    errors = []

    def load():
        try:
            model.load(fifo)
        except DataError as e:
            errors.append(str(e))

    reader = threading.Thread(target=load, daemon=True)
    reader.start()
    reader.join(10)
    if reader.is_alive():  # the old code waits for a writer: give it one, then fail
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(10)
    assert errors and "FIFO" in errors[0]
