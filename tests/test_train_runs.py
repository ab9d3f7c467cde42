"""What a training run promises beyond learning: evaluation losses from the logits, Ctrl-C and
divergence keep the last finished epoch and say where, one writer per run folder, --resume only
on its own data, the documented XOR command, load_trained, and the options' checks."""
import fcntl
import json
import math
import os
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import netc
from netc import checkpoint, data, train
from netc.cli import main
from netc.errors import DataError, NetcError
from netc.runtime import Model
from netc.train import Config, Diverged, Interrupted, evaluate, fit, fit_input, load_trained

ROOT = Path(__file__).resolve().parent.parent
FLAGS = ["-O1"]
MLP = "network mlp\ninput 1x28x28\nfc(16, act=relu) - fc(10) - softmax\n"
QUIET = dict(echo=lambda *a: None, progress=False, flags=FLAGS)



@pytest.fixture(autouse=True)
def _light_flags(monkeypatch):
    monkeypatch.setenv("NETC_CFLAGS", "-O1")


def params_of(model):
    return {k: v.copy() for k, v in model.params.items()}


def test_evaluation_loss_is_log_sum_exp_of_the_logits(tmp_path, digits):
    r = fit(netc.load(MLP), digits, Config(epochs=1), out=tmp_path, **QUIET)
    model, test = r.model, r.normalizer.apply(fit_input(digits.test.x, (1, 28, 28)))
    model.params["fc2.weight"][...] *= 300  # confident and often wrong: probabilities underflow
    probs = train.predict(model, test)
    assert (probs[np.arange(200), digits.test.y] == 0).sum() >= 10
    # the C loss of the training step (log-sum-exp of the logits), in inference mode
    chunks = range(0, 200, model.batch)
    want = sum(model.loss_and_grad(np.ascontiguousarray(test[i:i + model.batch]),
                                   digits.test.y[i:i + model.batch], train=False)
               * len(test[i:i + model.batch]) for i in chunks) / 200
    got = evaluate(model, data.Split(test, digits.test.y)).loss
    assert got == pytest.approx(want, rel=1e-5)


def interrupt_in(epoch_title):
    """A _Progress.update that presses Ctrl-C on the first step of the epoch titled so."""
    def update(self, done, loss):
        if self.title == epoch_title:
            raise KeyboardInterrupt
    return update


def test_ctrl_c_saves_the_last_finished_epoch_and_resume_goes_on_exactly(tmp_path, digits,
                                                                        monkeypatch):
    config = Config(epochs=4)
    full = fit(netc.load(MLP), digits, config, out=tmp_path / "full", **QUIET)
    with monkeypatch.context() as m:
        m.setattr(train._Progress, "update", interrupt_in("epoch 3/4"))
        with pytest.raises(Interrupted) as e:  # saves are throttled: nothing on disk yet
            fit(netc.load(MLP), digits, config, out=tmp_path / "cut", save_every=1e9, **QUIET)
    path = tmp_path / "cut" / "checkpoint.npz"
    assert str(e.value) == (f"{path} holds epoch 2 of 4 (saved now); continue with "
                            f"--resume {path}")
    assert checkpoint.read(path).meta["state"]["epoch"] == 2
    resumed = fit(netc.load(MLP), digits, config, resume=path, **QUIET)
    for name, value in params_of(full.model).items():
        assert np.array_equal(resumed.model.params[name], value), name


def test_ctrl_c_through_the_cli_says_what_is_on_disk(capsys, tmp_path, monkeypatch):
    (tmp_path / "m.net").write_text(MLP)
    digits = data.load("mnist-10k")
    np.savez(tmp_path / "d.npz", x=digits.train.x[:100, 0], y=digits.train.y[:100])
    argv = ["train", str(tmp_path / "m.net"), "--data", str(tmp_path / "d.npz"), "--out",
            str(tmp_path), "--epochs", "3"]
    with monkeypatch.context() as m:
        def compile_(*args, **kwargs):
            raise KeyboardInterrupt
        m.setattr(netc.Network, "compile", compile_)
        assert main(argv) == 130
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == ("interrupted: no checkpoint was written: training had not "
                                    "started")
    with monkeypatch.context() as m:
        m.setattr(train._Progress, "update", interrupt_in("epoch 2/3"))
        assert main(argv) == 130
    path = tmp_path / "checkpoint.npz"
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"interrupted: {path} holds epoch 1 of 3 (saved now); continue with --resume {path}")


def test_divergence_keeps_the_last_finished_epoch_though_saves_are_throttled(
        tmp_path, digits, monkeypatch):
    steps, real_step = [], Model.train_step

    def nan_from_epoch_3(self, *args, **kwargs):  # 270 samples in batches of 32: 9 steps
        steps.append(1)
        return math.nan if len(steps) > 18 else real_step(self, *args, **kwargs)
    monkeypatch.setattr(Model, "train_step", nan_from_epoch_3)
    with pytest.raises(Diverged) as e:
        fit(netc.load(MLP), digits, Config(epochs=4), out=tmp_path, save_every=1e9, **QUIET)
    path = tmp_path / "checkpoint.npz"
    assert f"the last good checkpoint, after epoch 2, is {path}" in e.value.message
    assert checkpoint.read(path).meta["state"]["epoch"] == 2


def test_a_second_run_on_the_same_folder_is_refused(capsys, tmp_path, digits):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDONLY); "
         "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); sys.stdin.read()", out],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        code = main(["train", "examples/xor.net", "--data", "xor", "--epochs", "1", "--out",
                     str(out)])
        err = capsys.readouterr().err
        assert code == 4
        assert err.startswith(f"error: {out} is in use: another `netc train` is writing to it")
        assert list(out.iterdir()) == []
    finally:
        holder.communicate("")
    fit(netc.load(MLP), digits, Config(epochs=1), out=out, **QUIET)
    fd = os.open(out, os.O_RDONLY)  # the finished run let go of the folder
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)


def test_resume_on_other_data_is_refused(tmp_path, digits):
    r = fit(netc.load(MLP), digits, Config(epochs=1), out=tmp_path, **QUIET)
    other = data.Dataset("others", digits.test, None, digits.classes)
    with pytest.raises(DataError, match="was trained on other data .mnist-10k. than others: "
                                        "--resume continues a run on its own data"):
        fit(netc.load(MLP), other, Config(epochs=2), resume=r.checkpoint, **QUIET)


def test_the_documented_xor_command_reaches_100_percent(tmp_path, capsys):
    lines = (ROOT / "examples" / "xor.net").read_text().splitlines()
    command = next(line.lstrip("# ") for line in lines if line.startswith("#   netc train"))
    assert command in (ROOT / "docs" / "training.md").read_text().splitlines()
    args = shlex.split(command)[1:]
    args[1] = str(ROOT / args[1])
    assert main(args + ["--out", str(tmp_path)]) == 0, capsys.readouterr().err
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert (log[-1]["test_acc"], log[-1]["test_count"]) == (1.0, 4)


def test_data_of_another_shape_is_named_before_its_labels(capsys):
    assert main(["train", str(ROOT / "examples" / "xor.net")]) == 4
    err = capsys.readouterr().err
    assert err.startswith("error: mnist-10k (train) has samples of shape 1x28x28, the "
                          "network's input is 2x1x1\n")
    assert "built-in data that fits: --data xor or xor-signed" in err


def test_labels_are_checked_against_the_outputs_before_training(tmp_path):
    xor = data.load("xor")
    negative = data.Dataset("neg", data.Split(xor.train.x, [0, 1, -1, 0]), None, ("0", "1"))
    with pytest.raises(DataError, match="neg .train. has class -1, the network has 1 output"):
        fit(netc.load(ROOT / "examples" / "xor.net"), negative, Config(data="neg"),
            out=tmp_path, **QUIET)


def test_config_takes_full_and_refuses_wrong_types():
    assert Config(batch="full").batch == 0
    with pytest.raises(NetcError, match="epochs must be an integer, not '3'"):
        Config(epochs="3")
    with pytest.raises(NetcError, match="lr must be a finite number, not nan"):
        Config(lr=math.nan)
    with pytest.raises(NetcError, match="deterministic must be true or false, not 1"):
        Config(deterministic=1)


def test_one_epoch_is_one_epoch(tmp_path, digits):
    lines = []
    fit(netc.load(MLP), digits, Config(epochs=5, lr=0.0, early_stop=1), out=tmp_path,
        echo=lines.append, progress=False, flags=FLAGS)
    assert "early stop: no better validation loss for 1 epoch; using epoch 1" in lines


def test_checkpoints_get_the_mode_logs_get(tmp_path, digits):
    r = fit(netc.load(MLP), digits, Config(epochs=1), out=tmp_path, **QUIET)
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    assert mode(r.checkpoint) == mode(tmp_path / "log.jsonl")


def test_the_normaliser_is_fitted_on_the_training_part_only(tmp_path, digits):
    config = Config(epochs=1, val_split=0.2, seed=3)
    r = fit(netc.load(MLP), digits, config, out=tmp_path / "a", **QUIET)
    part, _ = data.validation_split(digits.train, 0.2, (3, 1))
    want = data.Normalizer.fit("standard", fit_input(part.x, (1, 28, 28)))
    stored = checkpoint.read(r.checkpoint).normalizer
    for norm in (r.normalizer, stored):
        assert np.array_equal(norm.mean, want.mean) and np.array_equal(norm.scale, want.scale)
    brighter = data.Split(digits.test.x * 3 + 1, digits.test.y)
    other_test = data.Dataset("digits", digits.train, brighter, digits.classes)
    again = fit(netc.load(MLP), other_test, config, out=tmp_path / "b", **QUIET)
    assert np.array_equal(again.normalizer.mean, want.mean)
    assert np.array_equal(again.normalizer.scale, want.scale)


def test_an_mlp_taking_images_as_a_vector_is_normalised_as_the_image_network(tmp_path, digits):
    """Issue 10.2: `input 784` on 28x28 digits got per-pixel statistics, and a border pixel lit
    in a few training images became |x| in the thousands; at the default lr the loss blew up to
    1e9. The vector network now sees the numbers the 1x28x28 one does."""
    vector = MLP.replace("input 1x28x28", "input 784")
    config = Config(epochs=3, lr=0.05, seed=1)
    r = fit(netc.load(vector), digits, config, out=tmp_path / "v", **QUIET)
    image = fit(netc.load(MLP), digits, config, out=tmp_path / "i", **QUIET)
    assert r.normalizer.mean.shape == (784, 1, 1)
    assert np.array_equal(r.normalizer.mean.ravel(), np.repeat(image.normalizer.mean, 784))
    assert np.array_equal(r.normalizer.scale.ravel(), np.repeat(image.normalizer.scale, 784))
    assert r.test.loss == pytest.approx(image.test.loss, rel=1e-4) and r.test.loss < 1.5


def test_the_default_run_folder_is_no_path_a_spec_chooses(tmp_path, digits, monkeypatch):
    """A shared spec named "../../escaped" or "/tmp/x" wrote its checkpoint there."""
    monkeypatch.chdir(tmp_path)
    for name, folder in (("../../escaped", "______escaped"), ("/abs/run", "_abs_run"),
                         ("..", "__")):
        spec = MLP.replace("network mlp", f'network "{name}"')
        r = fit(netc.load(spec), digits, Config(epochs=1), **QUIET)
        assert r.checkpoint == Path("runs") / folder / "checkpoint.npz"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]


def test_data_with_no_features_is_a_shape_error(tmp_path):
    np.savez(tmp_path / "empty.npz", x=np.zeros((20, 0), np.float32), y=np.arange(20) % 3)
    with pytest.raises(DataError, match="has samples of shape 0, the network's input is 1x28x28"):
        fit(netc.load(MLP), data.load(tmp_path / "empty.npz"), Config(epochs=1),
            out=tmp_path / "run", **QUIET)


def test_a_negative_seed_is_a_bad_option():
    with pytest.raises(NetcError, match="seed must be ≥ 0"):
        Config(seed=-1)


def test_load_trained_gives_a_model_for_raw_inputs(tmp_path, digits):
    r = fit(netc.load(MLP), digits, Config(epochs=1), out=tmp_path, **QUIET)
    (tmp_path / "mlp.net").write_text(MLP)
    trained = load_trained(tmp_path / "mlp.net", r.checkpoint, flags=FLAGS)
    raw = digits.test.x[:50]
    prepared = r.normalizer.apply(fit_input(raw, (1, 28, 28)))
    assert np.array_equal(trained.predict(raw), train.predict(r.model, prepared))
    assert trained.evaluate(digits.test).loss == r.test.loss
    assert trained.classes == list("0123456789")
