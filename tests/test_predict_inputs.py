"""`netc predict` on pictures a person gives it (issue 13 §3): converted to the training images'
channels, resized to their size, inverted when their background is the opposite, each change a
`note:` line on stderr; `--raw` as before; checkpoints without the `samples` field still work."""
import json
import struct
import zlib

import numpy as np
import pytest

from netc import checkpoint, data, load_trained
from netc.cli import main
from netc.data import picture
from netc.errors import DataError

SPEC = """network small
input 1x32x32
conv(4, k=5, act=relu) - maxpool(4) - fc(16, act=relu) - softmax(10)
"""
SEVEN = data.load("mnist-10k").test.x[0, 0]  # the first test digit, a 7, 28x28 in [0, 1]


def png(samples: np.ndarray) -> bytes:
    """An 8-bit PNG of (H, W) gray, or (H, W, 2 | 3 | 4) gray+alpha, RGB or RGBA, in [0, 1]."""
    pixels = np.round(samples * 255).astype(np.uint8)
    h, w = pixels.shape[:2]
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    colour = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    raw = b"".join(b"\0" + row.tobytes() for row in pixels.reshape(h, w * channels))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body)))
    head = struct.pack(">IIBBBBB", w, h, 8, colour, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", head) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict-inputs")
    d = data.load("mnist-10k")
    np.savez(root / "digits.npz", x=np.round(d.train.x[:300, 0] * 255).astype(np.uint8),
             y=d.train.y[:300])
    (root / "small.net").write_text(SPEC)
    seven = np.round(SEVEN * 255) / 255  # as an 8-bit file holds it
    (root / "seven.png").write_bytes(png(seven))
    # What a person draws: dark on light, ten times larger (each pixel a 10x10 block).
    (root / "drawn.png").write_bytes(png(np.kron(1 - seven, np.ones((10, 10)))))
    (root / "drawn-rgb.png").write_bytes(png(np.repeat(np.kron(1 - seven, np.ones((2, 2)))[
        ..., None], 3, axis=2)))
    with pytest.MonkeyPatch.context() as m:
        m.setenv("NETC_CFLAGS", "-O1")
        code = main(["train", str(root / "small.net"), "--data", str(root / "digits.npz"),
                     "--epochs", "2", "--out", str(root / "run"), "--lr", "0.1"])
    assert code == 0
    # The same checkpoint as an older netc wrote it: no `samples` in its meta.
    with np.load(root / "run" / "checkpoint.npz") as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays["meta"]))
    del meta["samples"]
    np.savez(root / "old.npz", **(arrays | {"meta": np.array(json.dumps(meta))}))
    return root


@pytest.fixture(autouse=True)
def _light_flags(monkeypatch):
    monkeypatch.setenv("NETC_CFLAGS", "-O1")


def predict(capsys, files, *argv, ckpt="run/checkpoint.npz"):
    code = main(["predict", str(files / "small.net"), str(files / ckpt),
                 *(str(files / a) if a.endswith((".png", ".npy")) else a for a in argv)])
    out, err = capsys.readouterr()
    # stderr may also say the network is being compiled (its first run on this machine)
    return code, out, "".join(line for line in err.splitlines(True) if "compiling" not in line)


def probabilities(out: str) -> list[np.ndarray]:
    return [np.array(json.loads(line)["probabilities"]) for line in out.splitlines()]


def test_training_records_the_samples_shape_and_border(files):
    meta = checkpoint.read(files / "run" / "checkpoint.npz").meta
    x = np.round(data.load("mnist-10k").train.x[:300] * 255) / 255
    assert meta["samples"]["shape"] == [1, 28, 28]
    ring = np.concatenate([x[..., :2, :].ravel(), x[..., -2:, :].ravel(),
                           x[..., 2:-2, :2].ravel(), x[..., 2:-2, -2:].ravel()])
    assert meta["samples"]["border_mean"] == pytest.approx(ring.mean(), abs=1e-6)
    assert meta["samples"]["border_mean"] < picture.DARK  # MNIST: white on black


def test_a_28x28_sample_gives_exactly_the_old_probabilities(capsys, files):
    code, out, err = predict(capsys, files, "seven.png", "--json")
    assert code == 0 and err == ""  # nothing changed, nothing said
    code, raw, _ = predict(capsys, files, "seven.png", "--json", "--raw")
    assert code == 0 and out == raw
    trained = load_trained(files / "small.net", files / "run" / "checkpoint.npz", batch=1)
    direct = trained.predict(data.load_image(files / "seven.png")[None])[0]
    assert np.array_equal(probabilities(out)[0], np.round(direct.astype(float), 6))


def test_a_large_light_drawing_is_resized_and_inverted_with_a_note(capsys, files):
    code, out, err = predict(capsys, files, "seven.png", "drawn.png", "drawn-rgb.png", "--json")
    assert code == 0
    seven, drawn, rgb = probabilities(out)  # stdout: clean JSON, one line per image
    assert np.argmax(drawn) == np.argmax(seven) == np.argmax(rgb)
    assert np.allclose(drawn, seven, atol=1e-5) and np.allclose(rgb, seven, atol=1e-5)
    assert err.splitlines() == [
        f"note: {files / 'drawn.png'}: resized 280x280 -> 28x28 (area), "
        f"inverted (light background)",
        f"note: {files / 'drawn-rgb.png'}: RGB converted to gray (BT.601 luma), "
        f"resized 56x56 -> 28x28 (area), inverted (light background)"]


def test_raw_refuses_the_drawing_as_before(capsys, files):
    code, out, err = predict(capsys, files, "drawn.png", "--raw")
    assert code == 4 and out == ""
    assert err.startswith(f"error: {files / 'drawn.png'}: a 1x280x280 image has 78,400 values, "
                          f"more than the 1,024 of the network's input")


def test_a_checkpoint_without_samples_resizes_to_the_input_and_never_inverts(capsys, files):
    code, out, err = predict(capsys, files, "seven.png", "drawn.png", "--json", ckpt="old.npz")
    assert code == 0
    code, new, _ = predict(capsys, files, "seven.png", "--json")
    assert out.splitlines()[0] == new.strip()  # a 28x28 image: padded as always
    assert err == f"note: {files / 'drawn.png'}: resized 280x280 -> 32x32 (area)\n"


def test_a_bad_samples_field_is_refused(files, tmp_path):
    with np.load(files / "old.npz") as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays["meta"]))
    for bad, message in [({"shape": [1, 28], "border_mean": 0}, "'samples' must be"),
                         ({"shape": [1, 28, 28], "border_mean": "dark"}, "'samples' must be"),
                         ({"shape": [3, 64, 64], "border_mean": 0}, "larger than its network")]:
        np.savez(tmp_path / "bad.npz",
                 **(arrays | {"meta": np.array(json.dumps(meta | {"samples": bad}))}))
        with pytest.raises(DataError, match=message):
            checkpoint.read(tmp_path / "bad.npz")


def test_area_average_and_bilinear_values():
    assert np.array_equal(picture.resize(np.arange(16.).reshape(1, 4, 4), 2, 2),
                          [[[2.5, 4.5], [10.5, 12.5]]])
    # 3 -> 2: each output covers 1.5 input pixels
    assert np.allclose(picture.resize(np.array([[[0., 1, 2]]]), 1, 2), [[[1 / 3, 5 / 3]]])
    # 2 -> 4: samples at input positions -0.25 (clamped), 0.25, 0.75, 1.25 (clamped)
    assert np.array_equal(picture.resize(np.array([[[0., 1]]]), 1, 4), [[[0, 0.25, 0.75, 1]]])


def test_fitting_keeps_the_aspect_ratio_and_fills_with_the_border():
    image = np.full((1, 16, 8), 0.2)
    image[0, 4:12, 2:6] = 1
    out, note = picture.fit_size(image, (8, 8))
    assert note == "resized 8x16 -> 4x8 (area), centred in 8x8"
    expected = np.full((1, 8, 8), 0.2)  # the margins take the scaled image's border mean
    expected[0, 2:6, 3:5] = 1
    assert np.allclose(out, expected, rtol=0, atol=1e-15)


def test_channel_conversions_exact_values():
    rgb = np.array([0.2, 0.4, 0.6]).reshape(3, 1, 1)
    gray, notes = picture.conform(rgb, 1, None)
    assert gray.shape == (1, 1, 1) and notes == ["RGB converted to gray (BT.601 luma)"]
    assert gray[0, 0, 0] == np.float32(0.299 * 0.2 + 0.587 * 0.4 + 0.114 * 0.6)
    colour, notes = picture.conform(np.full((1, 1, 1), 0.25), 3, None)
    assert np.array_equal(colour, np.full((3, 1, 1), 0.25)) and notes == ["gray replicated to RGB"]
    # RGBA: a transparent pixel shows white, a half-transparent black one mid gray
    rgba = np.array([[0, 0], [0, 0], [0, 0], [0, 0.5]]).reshape(4, 1, 2)
    out, notes = picture.conform(rgba, 3, None)
    assert np.array_equal(out, np.array([[1, 0.5]] * 3).reshape(3, 1, 2))
    assert notes == ["alpha composited on white"]
    same, notes = picture.conform(rgba, 4, None)  # a 4-channel network takes it as it is
    assert np.array_equal(same, rgba) and notes == []


def test_inversion_follows_the_training_background():
    light = np.full((1, 28, 28), 0.9)
    assert picture.conform(light, 1, (28, 28), background=0.0)[1] == ["inverted (light background)"]
    assert picture.conform(light, 1, (28, 28), background=0.95)[1] == []
    assert picture.conform(1 - light, 1, (28, 28), background=0.95)[1] == [
        "inverted (dark background)"]
    # Training borders near the midpoint (natural photos, CIFAR) have no polarity.
    assert picture.conform(light, 1, (28, 28), background=0.45)[1] == []


def test_load_image_keeps_png_channels_on_request(tmp_path):
    rgba = np.random.default_rng(0).integers(0, 256, (3, 5, 4)) / 255
    (tmp_path / "a.png").write_bytes(png(rgba))
    assert np.allclose(data.load_image(tmp_path / "a.png", keep_channels=True),
                       rgba.transpose(2, 0, 1), atol=1e-7)
    assert data.load_image(tmp_path / "a.png").shape == (1, 3, 5)  # gray by default, as before
