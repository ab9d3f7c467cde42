"""Image files for predict: PNG (our decoder, against PNGs this test encodes and two made by
Pillow), PGM P2/P5 and .npy."""
import struct
import zlib

import numpy as np
import pytest

from netc.data import load_image
from netc.errors import DataError

# Made by Pillow 13 (Image.fromarray(...).save): 4x3 gray [[0,64,128,255],[10,20,30,40],
# [255,0,255,0]], and 2x2 RGB [[red, green], [blue, (200,100,50)]].
PILLOW_GRAY = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000004000000030800000000919ff11a0000001749444154789c6360"
    "7068f8cfc8c5c5c5c5f09fe13f03001b7403e7ec1ffe440000000049454e44ae426082")
PILLOW_RGB = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000002000000020802000000fdd49a730000001649444154789c63f8"
    "cfc0c0f09f818181e1ff891423001d46045ceeadc65b0000000049454e44ae426082")


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else b if pb <= pc else c


def encode_png(samples: np.ndarray, colour: int, depth: int = 8, filters=(0, 1, 2, 3, 4),
               interlace: int = 0) -> bytes:
    """samples: (H, W, channels) ints; row r uses filter filters[r % len(filters)]."""
    h, w, ch = samples.shape
    data = samples.astype(">u2" if depth == 16 else np.uint8).tobytes()
    bpp, stride = ch * depth // 8, w * ch * depth // 8
    raw, prev = bytearray(), bytes(stride)
    for r in range(h):
        row, kind = data[r * stride:(r + 1) * stride], filters[r % len(filters)]
        raw.append(kind)
        for i, x in enumerate(row):
            a = row[i - bpp] if i >= bpp else 0
            c = prev[i - bpp] if i >= bpp else 0
            pred = (0, a, prev[i], (a + prev[i]) // 2, paeth(a, prev[i], c))[kind]
            raw.append((x - pred) % 256)
        prev = row
    head = struct.pack(">IIBBBBB", w, h, depth, colour, 0, 0, interlace)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", head) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


def write(tmp_path, name, data):
    (tmp_path / name).write_bytes(data)
    return tmp_path / name


def test_png_made_by_pillow(tmp_path):
    gray = load_image(write(tmp_path, "g.png", PILLOW_GRAY))
    assert gray.dtype == np.float32 and gray.shape == (1, 3, 4)
    assert (gray[0] * 255).round().tolist() == [[0, 64, 128, 255], [10, 20, 30, 40],
                                                [255, 0, 255, 0]]
    rgb = load_image(write(tmp_path, "c.png", PILLOW_RGB))[0] * 255
    assert np.allclose(rgb, [[76.245, 149.685], [29.07, 124.2]], atol=1e-3)  # 0.299R+.587G+.114B


@pytest.mark.parametrize("colour, channels", [(0, 1), (4, 2), (2, 3), (6, 4)])
@pytest.mark.parametrize("depth", [8, 16])
def test_png_every_filter_colour_and_depth(tmp_path, colour, channels, depth):
    rng = np.random.default_rng(colour * depth)
    top = 2 ** depth - 1
    samples = rng.integers(0, top + 1, (7, 5, channels))
    samples[0, 0, :] = top  # full scale somewhere, so the scaling is seen
    got = load_image(write(tmp_path, "x.png", encode_png(samples, colour, depth)))
    assert got.shape == (1, 7, 5) and got.dtype == np.float32
    rgb = samples[..., :3] if channels >= 3 else samples[..., :1]
    want = rgb @ [0.299, 0.587, 0.114] if channels >= 3 else rgb[..., 0]
    assert np.allclose(got[0], want / top, atol=1e-6)
    assert got[0, 0, 0] == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("colour, depth, interlace, words", [
    (3, 8, 0, "colour type 3, 8-bit, not interlaced"),
    (0, 4, 0, "colour type 0, 4-bit"),
    (0, 8, 1, "colour type 0, 8-bit, interlaced"),
])
def test_png_unsupported(tmp_path, colour, depth, interlace, words):
    data = encode_png(np.zeros((2, 2, 1), int), 0, 8)
    head = struct.pack(">IIBBBBB", 2, 2, depth, colour, 0, 0, interlace)
    data = data[:8] + chunk(b"IHDR", head) + data[33:]
    with pytest.raises(DataError, match=words):
        load_image(write(tmp_path, "u.png", data))


@pytest.mark.parametrize("mangle, words", [
    (lambda d: d[:-20], "truncated or fails its CRC"),
    (lambda d: d[:40] + bytes([d[40] ^ 1]) + d[41:], "fails its CRC"),
    (lambda d: b"GIF89a" + d[6:], "not a PNG file"),
    (lambda d: d[:-12], "truncated PNG"),
])
def test_png_corrupt(tmp_path, mangle, words):
    path = write(tmp_path, "bad.png", mangle(encode_png(np.ones((3, 3, 1), int), 0)))
    with pytest.raises(DataError, match=words) as e:
        load_image(path)
    assert str(path) in e.value.message


def test_png_wrong_data_length(tmp_path):
    good = encode_png(np.ones((3, 3, 1), int), 0)
    head = struct.pack(">IIBBBBB", 4, 3, 8, 0, 0, 0, 0)
    with pytest.raises(DataError, match="image data has 12 bytes, expected 15 for 4x3"):
        load_image(write(tmp_path, "l.png", good[:8] + chunk(b"IHDR", head) + good[33:]))


def test_pgm_binary_with_comment(tmp_path):
    data = b"P5\n# made by hand\n3 2\n255\n" + bytes([0, 51, 255, 1, 2, 3])
    path = write(tmp_path, "a.pgm", data)
    got = load_image(path)
    assert got.shape == (1, 2, 3) and (got[0] * 255).round().tolist() == [[0, 51, 255], [1, 2, 3]]


def test_pgm_binary_16_bit(tmp_path):
    body = np.array([0, 1000, 65535, 7], ">u2").tobytes()
    got = load_image(write(tmp_path, "b.pgm", b"P5 2 2 65535\n" + body))
    assert np.allclose(got[0], [[0, 1000 / 65535], [1, 7 / 65535]])


def test_pgm_ascii(tmp_path):
    got = load_image(write(tmp_path, "c.pgm", b"P2\n2 2 # w h\n15\n0 15\n# row 2\n5 10\n"))
    assert np.allclose(got[0], [[0, 1], [1 / 3, 2 / 3]])


@pytest.mark.parametrize("data, words", [
    (b"P6\n1 1\n255\n\x00\x00\x00", "expected magic P2 or P5"),
    (b"P5\n2 2\n255\n\x00\x00\x00", "truncated PGM"),
    (b"P5\n2 x\n255\n\x00\x00\x00\x00", "malformed PGM header"),
    (b"P2\n1 2\n9\n3 10\n", "sample 10 exceeds maxval 9"),
    (b"P2\n1 2\n9\n3\n", "needs 2 decimal samples, found 1 tokens"),
    (b"P5\n0 2\n255\n", "invalid PGM header: 0x2"),
])
def test_pgm_errors(tmp_path, data, words):
    with pytest.raises(DataError, match=words):
        load_image(write(tmp_path, "e.pgm", data))


def test_npy(tmp_path):
    np.save(tmp_path / "a.npy", np.array([[0, 255], [51, 102]], np.uint8))
    got = load_image(tmp_path / "a.npy")
    assert got.shape == (1, 2, 2) and np.allclose(got[0], [[0, 1], [0.2, 0.4]])
    np.save(tmp_path / "b.npy", np.full((3, 4, 4), 0.5))
    assert load_image(tmp_path / "b.npy").shape == (3, 4, 4)


@pytest.mark.parametrize("array, words", [
    (np.full((2, 2), 2.0), "pixels must be uint8, uint16, or floats in \\[0, 1\\]"),
    (np.array([[np.nan]]), "pixels must be"),
    (np.zeros((2, 2), np.int64), "int64 pixels must be"),
    (np.zeros(4), "expected an \\(H, W\\) or \\(C, H, W\\) image, got shape \\(4,\\)"),
])
def test_npy_errors(tmp_path, array, words):
    np.save(tmp_path / "e.npy", array)
    with pytest.raises(DataError, match=words):
        load_image(tmp_path / "e.npy")


def test_unsupported_suffix(tmp_path):
    with pytest.raises(DataError, match="unsupported image type .jpg") as e:
        load_image(write(tmp_path, "x.jpg", b""))
    assert ".png" in e.value.hint
