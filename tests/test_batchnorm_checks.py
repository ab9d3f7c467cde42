"""BatchNorm with one value per channel (batch 1 after an fc, or on 1x1 maps) is refused in
training mode, as PyTorch refuses it; training skips a lone last sample instead of failing."""
import numpy as np
import pytest

import netc
from netc import data
from netc.cli import main
from netc.errors import InputError
from netc.runtime import Model
from netc.train import Config, fit

FLAGS = ["-O1"]
FC_BN = "input 6\nfc(10) - bn - relu - fc(3) - softmax"
CONV_BN = "input 2x4x4\nconv(3, k=3) - bn - flatten - fc(3) - softmax"  # 2x2 maps
CONV_1X1_BN = "input 2x3x3\nconv(4, k=3) - norm: bn - flatten - fc(3) - softmax"  # 1x1 maps

CALLS = {
    "forward": lambda m, x, y: m.forward(x, train=True),
    "loss_and_grad": lambda m, x, y: m.loss_and_grad(x, y, train=True),
    "train_step": lambda m, x, y: m.train_step(x, y, lr=0.1),
}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    cache = tmp_path_factory.mktemp("bn-checks")
    return lambda spec: netc.load(spec).compile(batch=4, flags=FLAGS, cache_dir=cache)


def batch_of(model, b):
    rng = np.random.default_rng(b)
    return (rng.normal(size=(b, *model.input_shape)).astype(np.float32),
            rng.integers(0, 3, b).astype(np.int32))


@pytest.mark.parametrize("call", CALLS)
@pytest.mark.parametrize("spec, label, shape", [(FC_BN, "bn1", "(1, 10, 1, 1)"),
                                                (CONV_1X1_BN, "norm", "(1, 4, 1, 1)")])
def test_one_value_per_channel_is_refused_before_c(compiled, call, spec, label, shape):
    model = compiled(spec)
    mem, imem = model.mem.copy(), model.imem.copy()
    with pytest.raises(InputError) as e:
        CALLS[call](model, *batch_of(model, 1))
    message = str(e.value)
    assert f"BatchNorm layer '{label}'" in message and shape in message
    assert "batch variance is 0" in message and "train=False" in message
    assert np.array_equal(model.mem, mem) and np.array_equal(model.imem, imem)  # C never ran


@pytest.mark.parametrize("call", CALLS)
def test_a_batch_of_two_trains(compiled, call):
    model = compiled(FC_BN)
    assert model.min_train_batch == 2
    assert np.isfinite(CALLS[call](model, *batch_of(model, 2))).all()


def test_inference_takes_one_sample(compiled):
    model = compiled(FC_BN)
    x, y = batch_of(model, 1)
    assert model.forward(x).shape == (1, 3)
    assert np.isfinite(model.loss_and_grad(x, y, train=False))


@pytest.mark.parametrize("call", CALLS)
def test_conv_maps_give_more_than_one_value_per_channel(compiled, call):
    model = compiled(CONV_BN)
    assert model.min_train_batch == 1
    assert np.isfinite(CALLS[call](model, *batch_of(model, 1))).all()


def random_dataset(n, sample_shape):
    rng = np.random.default_rng(0)

    def split(k):
        return data.Split(rng.normal(size=(k, *sample_shape)), rng.integers(0, 3, k))

    return data.Dataset("random", split(n), split(5), ("a", "b", "c"))


@pytest.mark.parametrize("spec, sample_shape, sizes", [(FC_BN, (6,), [4, 4]),
                                                       (CONV_BN, (2, 4, 4), [4, 4, 1])])
def test_fit_skips_a_lone_last_sample_only_where_batchnorm_needs_two(
        tmp_path, monkeypatch, spec, sample_shape, sizes):
    sizes_trained, train_step = [], Model.train_step

    def recording(model, x, y, **hyper):
        sizes_trained.append(len(x))
        return train_step(model, x, y, **hyper)

    monkeypatch.setattr(Model, "train_step", recording)
    r = fit(netc.load(spec), random_dataset(9, sample_shape), Config(epochs=1, batch=4,
                                                                     val_split=0),
            out=tmp_path, echo=lambda *a: None, progress=False, flags=FLAGS)
    assert sizes_trained == sizes
    assert np.isfinite(r.history[0]["train_loss"])


def test_netc_train_with_batch_1_is_one_clean_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("NETC_CFLAGS", "-O1")
    (tmp_path / "fc_bn.net").write_text(FC_BN)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "points.npz", x=rng.normal(size=(8, 6)), y=rng.integers(0, 3, 8))
    code = main(["train", str(tmp_path / "fc_bn.net"), "--data", str(tmp_path / "points.npz"),
                 "--batch", "1", "--epochs", "1", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2
    assert "error: BatchNorm layer 'bn1'" in err and "Traceback" not in err
    assert "hint: train on batches of at least 2 samples" in err
