"""netc.train and netc.checkpoint through the Python API: learning, determinism, resume, atomic
checkpoints, divergence, spec mismatch, evaluation, data fitting and schedules."""
import math

import numpy as np
import pytest

import netc
from netc import checkpoint, data
from netc.errors import DataError
from netc.train import Config, Diverged, evaluate, fit, fit_input, load_trained, lr_at

FLAGS = ["-O1"]  # compiling fast matters more here than running fast
# BN, dropout and a max pool: every piece of state a checkpoint must carry (running statistics,
# the dropout generator, the optimizer's moments and step) is exercised.
TINY = """network tiny
input 1x28x28
param w = 4
conv(w, k=5, stride=2, act=relu) - maxpool(2) - bn - dropout(0.25) - fc(16, act=relu) - softmax(10)
"""
QUIET = dict(echo=lambda *a: None, progress=False, flags=FLAGS)



def params_of(model):
    return {k: v.copy() for k, v in model.params.items()}


def test_xor_is_learned(tmp_path):
    # The course's 2-2-1 sigmoid MLP, full batch; seed 0 falls into the well-known flat region,
    # seed 2 does not (bench/xor.py counts the seeds).
    r = fit(netc.load("examples/xor.net"), data.load("xor"),
            Config(data="xor", epochs=1500, batch=0, lr=2.0, seed=2, val_split=0, weight_decay=0),
            out=tmp_path, **QUIET)
    first, last = r.history[0]["train_loss"], r.history[-1]["train_loss"]
    assert last < 0.01 * first
    assert (r.test.errors, r.test.count) == (0, 4)


def test_loss_drops_on_digits(tmp_path, digits):
    r = fit(netc.load(TINY), digits, Config(epochs=4, batch=16, lr=0.05), out=tmp_path, **QUIET)
    losses = [h["train_loss"] for h in r.history]
    assert losses[-1] < 0.5 * losses[0]
    assert r.test.accuracy > 0.6  # 10 classes: chance is 0.1
    assert [h["epoch"] for h in r.history] == [1, 2, 3, 4]
    assert {"val_loss", "val_acc", "lr", "train_acc"} <= set(r.history[0])


def test_same_seed_same_curve_other_seed_other_curve(tmp_path, digits):
    def curve(seed, out):
        r = fit(netc.load(TINY), digits, Config(epochs=2, batch=32, seed=seed),
                out=tmp_path / out, **QUIET)
        return [(h["train_loss"], h["val_loss"]) for h in r.history], params_of(r.model)
    a, pa = curve(0, "a")
    b, pb = curve(0, "b")
    c, _ = curve(1, "c")
    assert a == b  # exact, not approximate
    assert all(np.array_equal(pa[k], pb[k]) for k in pa)
    assert a != c


def test_deterministic_runs_agree_whatever_the_threads(tmp_path, digits):
    def run(threads):
        r = fit(netc.load(TINY), digits, Config(epochs=2, threads=threads, deterministic=True),
                out=tmp_path / str(threads), **QUIET)
        return [h["train_loss"] for h in r.history], params_of(r.model)
    (a, pa), (b, pb) = run(1), run(2)
    assert a == b and all(np.array_equal(pa[k], pb[k]) for k in pa)
    meta = checkpoint.read(tmp_path / "2" / "checkpoint.npz").meta["config"]
    assert (meta["threads"], meta["deterministic"]) == (2, True)


@pytest.mark.parametrize("optimizer, augment", [("sgd", ""), ("adam", ""), ("sgd", "crop:2,flip")])
def test_resume_reaches_the_same_weights(tmp_path, digits, optimizer, augment):
    config = Config(epochs=3, batch=32, optimizer=optimizer, schedule="cosine", augment=augment)
    full = fit(netc.load(TINY), digits, config, out=tmp_path / "full", save_every=0, **QUIET)

    class Killed(BaseException):
        """A SIGKILL: nothing runs after it (Ctrl-C would save the finished epoch)."""

    def interrupt(line):  # the run is killed after epoch 2's summary, before its checkpoint
        if line.startswith("epoch 2/3"):
            raise Killed
    with pytest.raises(Killed):
        fit(netc.load(TINY), digits, config, out=tmp_path / "cut", save_every=0, echo=interrupt,
            progress=False, flags=FLAGS)
    saved = checkpoint.read(tmp_path / "cut" / "checkpoint.npz")
    assert saved.meta["state"]["epoch"] == 1 and saved.config.augment == augment
    # the stored config (augmentation included) goes on; the draws continue the same stream
    resumed = fit(netc.load(TINY), digits, saved.config, resume=saved.path, save_every=0,
                  **QUIET)
    for name, value in params_of(full.model).items():
        assert np.array_equal(resumed.model.params[name], value), name
    for name, value in full.model.buffers.items():
        assert np.array_equal(resumed.model.buffers[name], value), name
    assert resumed.history == [{**h, "seconds": r["seconds"], "images_per_s": r["images_per_s"]}
                               for h, r in zip(full.history, resumed.history)]
    log = (tmp_path / "cut" / "log.jsonl").read_text().splitlines()
    assert [line.count('"epoch"') for line in log] == [1, 1, 1, 0]  # 3 epochs, then the test


def test_checkpoint_contents(tmp_path, digits):
    r = fit(netc.load(TINY, w=3), digits, Config(epochs=1, normalize="standard", seed=5),
            out=tmp_path, **QUIET)
    ckpt = checkpoint.read(r.checkpoint)
    meta = ckpt.meta
    assert (meta["format"], meta["version"], meta["network"]) == ("netc-checkpoint", 2, "tiny")
    assert meta["spec"] == TINY and meta["spec_sha256"] == checkpoint.spec_sha256(TINY)
    assert meta["params"] == {"w": 3.0}
    assert meta["config"]["seed"] == 5 and meta["state"]["epoch"] == 1
    assert meta["shuffle_rng"]["bit_generator"] == "PCG64"
    assert meta["classes"] == list("0123456789")
    assert set(ckpt.group("optim")) == {"momentum", "step"}
    assert int(ckpt.group("optim")["step"][0]) == math.ceil(270 / 32)  # 30 held out
    assert ckpt.group("rng")["dropout"].shape == (4,)
    assert ckpt.normalizer.mode == "standard"
    assert set(ckpt.group("param")) == set(r.model.params)


def test_a_crash_mid_write_keeps_the_old_checkpoint(tmp_path, digits, monkeypatch):
    r = fit(netc.load(TINY), digits, Config(epochs=1), out=tmp_path, **QUIET)
    before = r.checkpoint.read_bytes()

    def crash(f, **arrays):  # half a file, then the process "dies"
        f.write(b"PK\x03\x04 partial")
        raise KeyboardInterrupt
    monkeypatch.setattr(checkpoint.np, "savez", crash)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(r.checkpoint, r.model, r.normalizer, {})
    assert r.checkpoint.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.npz", "log.jsonl"]


def test_divergence_stops_with_a_hint_and_keeps_the_checkpoint(tmp_path, digits):
    good = fit(netc.load(TINY), digits, Config(epochs=1), out=tmp_path, **QUIET)
    before = good.checkpoint.read_bytes()
    with pytest.raises(Diverged) as e:
        fit(netc.load(TINY), digits, Config(epochs=3, lr=1e9), resume=good.checkpoint, **QUIET)
    assert "lower the learning rate" in e.value.hint and e.value.exit_code == 5
    assert "after epoch 1" in e.value.message and str(good.checkpoint) in e.value.message
    assert good.checkpoint.read_bytes() == before


def test_a_checkpoint_of_another_network_is_refused(tmp_path, digits):
    r = fit(netc.load(TINY), digits, Config(epochs=1), out=tmp_path, **QUIET)
    with pytest.raises(DataError, match="different network: parameters w=4 .here w=5."):
        load_trained(netc.load(TINY, w=5), r.checkpoint, flags=FLAGS)
    other = TINY.replace("fc(16", "fc(17")
    with pytest.raises(DataError, match="layer 'fc1'"):
        load_trained(netc.load(other), r.checkpoint, flags=FLAGS)
    same = "# comments and layout may differ\n" + TINY.replace(" - ", "  -  ")
    model = load_trained(netc.load(same), r.checkpoint, flags=FLAGS).model
    assert np.array_equal(model.params["fc1.weight"], r.model.params["fc1.weight"])
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable netc checkpoint"):
        checkpoint.read(tmp_path / "junk.npz")


def test_evaluate_counts(tmp_path, digits):
    r = fit(netc.load(TINY), digits, Config(epochs=1), out=tmp_path, **QUIET)
    test = r.test
    assert test.confusion.shape == (10, 10) and test.confusion.sum() == 200 == test.count
    assert test.errors == 200 - np.trace(test.confusion)
    assert test.accuracy == 1 - test.errors / 200
    again = evaluate(r.model, data.Split(r.normalizer.apply(fit_input(
        digits.test.x, (1, 28, 28))), digits.test.y))
    assert (again.errors, again.loss) == (test.errors, test.loss)


def test_fit_input_pads_and_reshapes():
    x = np.arange(2 * 28 * 28, dtype=np.float32).reshape(2, 1, 28, 28) + 1
    padded = fit_input(x, (1, 32, 32))
    assert padded.shape == (2, 1, 32, 32)
    assert np.array_equal(padded[:, :, 2:30, 2:30], x) and padded.sum() == x.sum()
    assert fit_input(x, (784, 1, 1)).shape == (2, 784, 1, 1)
    with pytest.raises(DataError, match="28x28, the network's input is 3x32x32"):
        fit_input(x, (3, 32, 32), "x")


def test_schedules():
    c = dict(epochs=4, lr=0.1)
    assert [lr_at(Config(**c, schedule="const"), e) for e in range(4)] == [0.1] * 4
    assert [lr_at(Config(**c, schedule="step"), e) for e in range(4)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.001])
    assert [lr_at(Config(**c, schedule="cosine"), e) for e in range(4)] == pytest.approx(
        [0.1, 0.08535534, 0.05, 0.01464466])
    assert Config(optimizer="adam").lr == 0.001


def test_bad_options_are_refused():
    with pytest.raises(netc.NetcError, match="early stopping watches the validation loss"):
        Config(early_stop=3, val_split=0)
    with pytest.raises(netc.NetcError, match="schedule"):
        Config(schedule="linear")


def test_early_stopping_keeps_the_best_epoch(tmp_path, digits):
    # lr 0 (and no BN statistics) never changes the validation loss: stop after 1 + 2 epochs.
    r = fit(netc.load(TINY.replace("bn - ", "")), digits,
            Config(epochs=10, lr=0.0, early_stop=2), out=tmp_path,
            **QUIET)
    assert len(r.history) == 3 and r.checkpoint == tmp_path / "best.npz"
    assert checkpoint.read(r.checkpoint).meta["state"]["best_epoch"] == 1
