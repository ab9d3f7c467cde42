"""Training-time augmentation (netc/data/augment.py, docs/training.md "Augmentation"): each
operation's exact effect, the option's grammar and errors, seeding, bitwise resume, and that
only training batches are augmented."""
import json
import zipfile

import numpy as np
import pytest

import netc
from digit_files import write_digits
from netc import checkpoint, data
from netc.cli import main
from netc.data.augment import Augment
from netc.errors import NetcError
from netc.runtime import Model
from netc.train import Config, fit, load_trained

FLAGS = ["-O1"]
QUIET = dict(echo=lambda *a: None, progress=False, flags=FLAGS)
TINY = """network tiny
input 1x28x28
conv(4, k=5, act=relu) - maxpool(4) - bn - dropout(0.25) - fc(16, act=relu) - softmax(10)
"""


def augmented(ops: str, x: np.ndarray, seed: int = 0) -> np.ndarray:
    aug = Augment.parse(ops)
    return aug.take(aug.pad(x), np.arange(len(x)), np.random.default_rng(seed))


def bright_pixel(image: np.ndarray) -> tuple[int, int] | None:
    found = np.argwhere(image == 1)
    return tuple(found[0]) if len(found) == 1 else None


# ---- each operation on small known arrays

def test_shift_moves_every_channel_alike_and_fills_with_zeros():
    h, w, s = 7, 6, 2
    x = np.zeros((400, 2, h, w), np.float32)
    x[:, 0] = 0.5  # a flat channel: where it becomes 0 shows the fill
    x[:, 1, 3, 2] = 1  # a bright pixel away from the border: shows the displacement
    out = augmented(f"shift:{s}", x)
    assert out.shape == x.shape and out.dtype == x.dtype
    moves = set()
    for sample in out:
        y0, x0 = bright_pixel(sample[1])
        dy, dx = y0 - 3, x0 - 2
        moves.add((dy, dx))
        flat = np.zeros((h, w), np.float32)
        flat[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = 0.5
        assert np.array_equal(sample[0], flat), (dy, dx)
        assert np.count_nonzero(sample[1]) == 1
    # every displacement -s..s in each axis occurs, and no other
    assert moves == {(a, b) for a in range(-s, s + 1) for b in range(-s, s + 1)}


def test_a_pixel_shifted_off_the_image_is_gone():
    x = np.zeros((200, 1, 4, 4), np.float32)
    x[:, 0, 0, 0] = 1
    out = augmented("shift:1", x)
    kept = [bright_pixel(s[0]) for s in out]
    assert set(kept) == {None, (0, 0), (0, 1), (1, 0), (1, 1)}
    assert all(np.count_nonzero(s) <= 1 for s in out)


def test_crop_is_shift_with_the_padding_as_its_range():
    x = np.random.default_rng(3).random((50, 3, 8, 8)).astype(np.float32)
    assert Augment.parse("crop:3") == Augment.parse("shift:3")
    assert np.array_equal(augmented("crop:3", x), augmented("shift:3", x))
    assert augmented("crop:3", x).shape == x.shape


def test_flip_mirrors_left_right_about_half_the_samples():
    x = np.arange(300 * 2 * 3 * 4, dtype=np.float32).reshape(300, 2, 3, 4)
    before = x.copy()
    out = augmented("flip", x)
    mirrored = np.array([np.array_equal(o, s[:, :, ::-1]) for o, s in zip(out, x)])
    unchanged = np.array([np.array_equal(o, s) for o, s in zip(out, x)])
    assert (mirrored ^ unchanged).all()  # each sample exactly one of the two
    assert 100 < mirrored.sum() < 200  # p = 1/2: 150 ± 8.7
    assert np.array_equal(x, before)  # the caller's array is untouched


def test_take_draws_the_samples_it_is_given_and_the_same_seed_gives_the_same_batch():
    x = np.random.default_rng(0).random((20, 3, 6, 6)).astype(np.float32)
    aug = Augment.parse("crop:2,flip")
    padded = aug.pad(x)
    idx = np.array([4, 4, 17])
    a = aug.take(padded, idx, np.random.default_rng(9))
    b = aug.take(padded, idx, np.random.default_rng(9))
    c = aug.take(padded, idx, np.random.default_rng(10))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    for out, i in zip(a, idx):  # each a moved and maybe mirrored copy of sample i
        assert np.isin(out[out != 0], x[i]).all()


def test_moving_normalised_pixels_is_normalising_moved_ones():
    # what the loop relies on for none/mean/standard: pad the normalised set with normalised black
    x = np.random.default_rng(4).random((30, 3, 8, 8)).astype(np.float32)
    aug, idx = Augment.parse("crop:3,flip"), np.array([0, 7, 7, 29])
    for mode in ("none", "mean", "standard"):
        norm = data.Normalizer.fit(mode, x)
        black = norm.apply(np.zeros((1, 3, 8, 8), np.float32))[0, :, 0, 0]
        moved = aug.take(aug.pad(norm.apply(x), fill=black), idx, np.random.default_rng(5))
        expected = norm.apply(aug.take(aug.pad(x), idx, np.random.default_rng(5)))
        assert np.array_equal(moved, expected), mode


# ---- the option

@pytest.mark.parametrize("text, message", [
    ("rot90", "unknown operation 'rot90'"),
    ("crop", "crop takes a whole number of pixels ≥ 1"),
    ("crop:0", "crop takes a whole number of pixels ≥ 1"),
    ("shift:-1", "shift takes a whole number of pixels ≥ 1"),
    ("shift:1.5", "shift takes a whole number of pixels ≥ 1"),
    ("flip:2", "flip takes no number"),
    ("flip,flip", "flip given twice"),
    ("crop:4,shift:2", "crop and shift both translate"),
    ("crop:4,,flip", "unknown operation ''"),
])
def test_bad_options_are_refused_with_one_line(text, message):
    with pytest.raises(NetcError) as e:
        Config(augment=text)
    assert message in e.value.message and "\n" not in e.value.message
    assert e.value.message.startswith("bad training option: augment: ")


def test_good_options_parse():
    assert Augment.parse("crop:4,flip") == Augment(4, True)
    assert Augment.parse(" flip , shift:2 ") == Augment(2, True)
    assert not Augment.parse("") and not Augment.parse("none")
    with pytest.raises(NetcError, match="augment must be a string"):
        Config(augment=4)


@pytest.mark.parametrize("ops, shape, message", [
    ("flip", (2, 1, 1), "needs image samples (CxHxW), the network's input is the vector 2x1x1"),
    ("shift:1", (784,), "needs image samples"),
    ("crop:32", (3, 32, 32), "translation of 32 pixels must be smaller than the images"),
    ("shift:4", (1, 28, 4), "translation of 4 pixels"),
    ("flip", (1, 8, 1), "one pixel wide"),
])
def test_samples_that_cannot_be_augmented_are_refused(ops, shape, message):
    with pytest.raises(NetcError) as e:
        Augment.parse(ops).check(shape)
    assert message in e.value.message
    Augment.parse("").check(shape)  # off: anything goes


# ---- in training

def test_only_training_batches_are_augmented(tmp_path, digits, monkeypatch):
    counted, real_take = [], Augment.take

    def take(self, padded, idx, rng):
        counted.append(len(idx))
        return real_take(self, padded, idx, rng)
    monkeypatch.setattr(Augment, "take", take)
    r = fit(netc.load(TINY), digits, Config(epochs=2, augment="shift:2,flip"), out=tmp_path,
            **QUIET)
    assert sum(counted) == 2 * 270  # two epochs of the 270 training samples; 30 validate
    during_training = len(counted)
    trained = load_trained(netc.load(TINY), r.checkpoint)
    again = trained.evaluate(digits.test)
    trained.predict(digits.test.x[:5])
    assert len(counted) == during_training  # evaluation and prediction augment nothing
    # fit's own test evaluation, at another batch size: rounding apart, the same numbers
    assert again.errors == r.test.errors and again.loss == pytest.approx(r.test.loss, rel=1e-6)


def test_epochs_draw_different_moves_and_the_same_seed_the_same_run(tmp_path, digits,
                                                                    monkeypatch):
    seen, real_take = [], Augment.take

    def take(self, padded, idx, rng):
        out = real_take(self, padded, idx, rng)
        seen.append(dict(zip(idx.tolist(), out)))
        return out
    monkeypatch.setattr(Augment, "take", take)
    config = Config(epochs=2, batch=270, augment="shift:2")  # one batch an epoch
    a = fit(netc.load(TINY), digits, config, out=tmp_path / "a", **QUIET)
    first, second = seen[0], seen[1]
    alike = sum(np.array_equal(first[i], second[i]) for i in first)
    assert alike < 0.2 * len(first)  # 1 in 25 by chance
    b = fit(netc.load(TINY), digits, config, out=tmp_path / "b", **QUIET)
    assert all(np.array_equal(seen[0][i], seen[2][i]) for i in seen[0])
    assert all(np.array_equal(a.model.params[k], b.model.params[k]) for k in a.model.params)
    plain = fit(netc.load(TINY), digits, Config(epochs=2, batch=270), out=tmp_path / "c",
                **QUIET)
    assert plain.history[0]["train_loss"] != a.history[0]["train_loss"]


def test_augmented_runs_agree_whatever_the_threads(tmp_path, digits):
    def run(threads):
        r = fit(netc.load(TINY), digits, Config(epochs=1, threads=threads, deterministic=True,
                                                augment="shift:1,flip"),
                out=tmp_path / str(threads), **QUIET)
        return r.history[0]["train_loss"], r.model.params
    (a, pa), (b, pb) = run(1), run(2)
    assert a == b and all(np.array_equal(pa[k], pb[k]) for k in pa)


def test_whitened_runs_move_raw_pixels_and_whiten_each_batch(tmp_path, digits, monkeypatch):
    fed, real_step = [], Model.train_step

    def step(self, x, *args, **kwargs):
        fed.append(x.copy())
        return real_step(self, x, *args, **kwargs)
    monkeypatch.setattr(Model, "train_step", step)
    r = fit(netc.load(TINY), digits, Config(epochs=1, normalize="zca", augment="shift:2"),
            out=tmp_path, **QUIET)
    assert np.isfinite(r.history[0]["train_loss"])
    raw = fed[0].reshape(len(fed[0]), -1) @ np.linalg.pinv(r.normalizer.matrix) + \
        r.normalizer.mean  # undo the whitening: pixels of moved raw digits, all in [0, 1]
    assert raw.min() > -0.01 and raw.max() < 1.01


def test_a_checkpoint_from_before_augmentation_reads_as_off(tmp_path, digits):
    r = fit(netc.load(TINY), digits, Config(epochs=1), out=tmp_path, **QUIET)
    with np.load(r.checkpoint) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays["meta"]))
    del meta["config"]["augment"]
    arrays["meta"] = np.array(json.dumps(meta))
    old = tmp_path / "old.npz"
    np.savez(old, **arrays)
    assert zipfile.ZipFile(old).getinfo("meta.npy").compress_type == zipfile.ZIP_STORED
    assert checkpoint.read(old).config.augment == ""


# ---- the command line

@pytest.fixture(scope="module")
def digits_file(tmp_path_factory):
    root = tmp_path_factory.mktemp("augment-cli")
    write_digits(root, 300, 100)
    (root / "tiny.net").write_text(TINY)
    return root


def test_netc_train_augment_runs_and_is_recorded(capsys, digits_file, monkeypatch):
    monkeypatch.setenv("NETC_CFLAGS", "-O1")
    out = digits_file / "run"
    argv = ["train", str(digits_file / "tiny.net"), "--data", str(digits_file / "digits.npz"),
            "--out", str(out)]
    assert main([*argv, "--augment", "shift:1", "--epochs", "1"]) == 0
    printed = capsys.readouterr().out
    assert ", augment shift:1" in printed.splitlines()[1] and "test accuracy" in printed
    assert checkpoint.read(out / "checkpoint.npz").config.augment == "shift:1"
    # --resume keeps it; given again, the new value wins
    assert main([*argv, "--resume", str(out / "checkpoint.npz"), "--epochs", "2"]) == 0
    assert checkpoint.read(out / "checkpoint.npz").config.augment == "shift:1"
    assert ", augment shift:1" in capsys.readouterr().out
    assert main([*argv, "--resume", str(out / "checkpoint.npz"), "--epochs", "3",
                 "--augment", "none"]) == 0
    assert checkpoint.read(out / "checkpoint.npz").config.augment == "none"
    assert ", augment" not in capsys.readouterr().out


@pytest.mark.parametrize("ops, message", [
    ("crop:4,spin", "error: bad training option: augment: unknown operation 'spin'"),
    ("crop:28", "error: augment: a translation of 28 pixels must be smaller than the images "
                "(1x28x28)"),
])
def test_netc_train_refuses_a_bad_augment_in_one_line(capsys, digits_file, ops, message):
    code = main(["train", str(digits_file / "tiny.net"), "--data",
                 str(digits_file / "digits.npz"), "--out", str(digits_file / "bad"),
                 "--augment", ops])
    err = capsys.readouterr().err
    assert code == 2 and err.splitlines()[0].startswith(message), err
    assert not (digits_file / "bad").exists()  # refused before anything was written
    assert "Traceback" not in err


def test_the_training_module_draws_no_global_randomness(tmp_path, digits):
    np.random.seed(0)
    before = np.random.get_state()[1].copy()
    fit(netc.load(TINY), digits, Config(epochs=1, augment="crop:1,flip"), out=tmp_path, **QUIET)
    assert np.array_equal(np.random.get_state()[1], before)
