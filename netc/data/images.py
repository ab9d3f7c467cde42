"""Single images for `netc predict`: .png, .pgm and .npy files to float32 (C, H, W) in [0, 1].

PNG and PGM are decoded here (zlib and the standard library only, no Pillow) and come out as one
gray channel, (1, H, W), or a PNG with its channels as stored. Nothing is resized or inverted
here: picture.py fits an image to a network for `netc predict`.
Every size is checked against its limit from the header, before anything is decompressed or
allocated, so a small file cannot claim gigabytes.
"""
from __future__ import annotations

import math
import os
import re
import struct
import zlib
from pathlib import Path

import numpy as np

from netc.errors import DataError
from netc.files import open_regular, read_regular

from .arrays import npy_header

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # colour type -> samples per pixel (gray, RGB, +alpha)
LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R 601-2, what Pillow's convert("L") uses
_PGM_NUMBER = re.compile(rb"(?:\s|#[^\n]*(?:\n|$))*(\d+)")  # whitespace/comments, then a number
# The most samples (width x height x channels) an image may decode to: 4096x4096 gray or 2048x2048
# RGBA. Decoding that much peaks at 330 MB (16-bit RGBA), and takes 10 s if every row is Paeth.
MAX_SAMPLES = 1 << 24
_MAX_FILE_BYTES = 1 << 27  # room for MAX_SAMPLES 16-bit samples stored, or written as P2 text


def load_image(path: str | Path, max_values: int | None = None, *,
               keep_channels: bool = False) -> np.ndarray:
    """float32 (C, H, W) in [0, 1]; the format is chosen by the suffix. An image of more than
    max_values values (C x H x W, what the caller can use, e.g. a network's input size) is
    refused from its header. keep_channels: a PNG's channels as stored (gray, gray + alpha, RGB
    or RGBA: 1 to 4, alpha last) instead of one gray channel."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".png", ".pgm", ".npy"):
        raise DataError(f"{path}: unsupported image type {suffix or '(none)'}",
                        hint="use .png, .pgm or .npy")
    limits = _Limits(path, max_values, keep_channels)
    if suffix == ".npy":
        return _npy(path, limits)
    data = read_regular(path, "image", _MAX_FILE_BYTES)
    if suffix == ".pgm":
        return _pgm(path, data, limits)[None].astype(np.float32)
    samples = _png(path, data, limits)
    if keep_channels:
        return np.moveaxis(samples, -1, 0).astype(np.float32)
    # Alpha is ignored, as in Pillow's convert("L").
    gray = samples[..., 0] if samples.shape[-1] <= 2 else samples[..., :3] @ LUMA
    return gray[None].astype(np.float32)


class _Limits:
    """The two size checks every format makes from its header."""

    def __init__(self, path: Path, max_values: int | None, keep_channels: bool):
        self.path, self.max_values, self.keep_channels = path, max_values, keep_channels

    def check(self, shape: tuple[int, ...], samples: int) -> None:
        """shape: the (C, H, W) image the header declares, as load_image will return it;
        samples: how many values decoding it takes (three or four per pixel for colour PNGs)."""
        text = "x".join(map(str, shape))
        if samples > MAX_SAMPLES:
            raise DataError(f"{self.path}: a {text} image is larger than netc reads "
                            f"({samples:,} samples, at most {MAX_SAMPLES:,})")
        if self.max_values is not None and math.prod(shape) > self.max_values:
            raise DataError(f"{self.path}: a {text} image has {math.prod(shape):,} values, more "
                            f"than the {self.max_values:,} of the network's input",
                            hint="netc does not resize images: give it one the input's size")


def _npy(path: Path, limits: _Limits) -> np.ndarray:
    with open_regular(path, "image") as f:
        shape, dtype, header = npy_header(f, str(path))
        if len(shape) not in (2, 3) or math.prod(shape) == 0:
            raise DataError(f"{path}: expected an (H, W) or (C, H, W) image, got shape {shape}")
        limits.check(shape if len(shape) == 3 else (1, *shape), math.prod(shape))
        size = header + math.prod(shape) * dtype.itemsize
        if size != os.fstat(f.fileno()).st_size:
            raise DataError(f"{path}: the .npy header declares {dtype} {shape} ({size:,} bytes "
                            f"with the header) but the file has {os.fstat(f.fileno()).st_size:,}")
        f.seek(0)
        try:
            a = np.lib.format.read_array(f, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise DataError(f"{path}: not a readable .npy array ({e})") from None
    if a.dtype in (np.uint8, np.uint16):
        a = a / np.iinfo(a.dtype).max
    elif a.dtype.kind != "f" or not np.isfinite(a).all() or a.min() < 0 or a.max() > 1:
        raise DataError(f"{path}: {a.dtype} pixels must be uint8, uint16, or floats in [0, 1]")
    return (a[None] if a.ndim == 2 else a).astype(np.float32)


def _png(path: Path, data: bytes, limits: _Limits) -> np.ndarray:
    if not data.startswith(_PNG_SIGNATURE):
        raise DataError(f"{path}: not a PNG file (bad signature)")
    pos, header, idat = 8, None, []
    while True:
        if pos + 12 > len(data):
            raise DataError(f"{path}: truncated PNG (no IEND chunk)")
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        crc = data[pos + 8 + length:pos + 12 + length]
        if len(crc) < 4 or zlib.crc32(kind + body) != int.from_bytes(crc, "big"):
            raise DataError(f"{path}: PNG chunk {kind!r} is truncated or fails its CRC")
        pos += 12 + length
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    if header is None or len(header) != 13 or not idat:
        raise DataError(f"{path}: PNG without a valid IHDR chunk or image data")
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    if colour not in _PNG_CHANNELS or depth not in (8, 16) or interlace:
        raise DataError(f"{path}: unsupported PNG (colour type {colour}, {depth}-bit, "
                        f"{'interlaced' if interlace else 'not interlaced'})",
                        hint="save as 8- or 16-bit gray, RGB or RGBA without interlacing")
    channels = _PNG_CHANNELS[colour]
    limits.check((channels if limits.keep_channels else 1, height, width),
                 height * width * channels)
    bpp = channels * depth // 8  # bytes per pixel, the distance the filters look back
    stride = width * bpp
    expected = height * (stride + 1)
    # Inflate no more than the header allows (plus one byte, to notice a longer stream).
    inflate = zlib.decompressobj()
    try:
        raw = inflate.decompress(b"".join(idat), expected + 1)
    except zlib.error as e:
        raise DataError(f"{path}: corrupt PNG image data ({e})") from None
    if len(raw) > expected:
        raise DataError(f"{path}: PNG image data holds more than the {expected} bytes "
                        f"expected for {width}x{height}")
    if len(raw) != expected:
        raise DataError(f"{path}: PNG image data has {len(raw)} bytes, expected "
                        f"{expected} for {width}x{height}")
    rows = np.frombuffer(raw, np.uint8).reshape(height, stride + 1)
    pixels = np.empty((height, stride), np.uint8)
    prev = np.zeros(stride, np.uint8)
    for r in range(height):
        pixels[r] = prev = _unfilter(path, rows[r, 0], rows[r, 1:], prev, bpp)
    samples = pixels.view(">u2") if depth == 16 else pixels
    return samples.reshape(height, width, channels) / (2 ** depth - 1)


def _unfilter(path: Path, kind: int, line: np.ndarray, prev: np.ndarray, bpp: int) -> np.ndarray:
    """Undo one row's PNG filter (PNG spec 9.2); uint8 arithmetic wraps modulo 256 as it must."""
    if kind == 0:
        return line
    if kind == 1:  # Sub: a running sum along the row, per byte of the pixel
        return np.cumsum(line.reshape(-1, bpp), axis=0, dtype=np.uint8).ravel()
    if kind == 2:  # Up
        return line + prev
    if kind not in (3, 4):
        raise DataError(f"{path}: invalid PNG filter type {kind}")
    cur, up = bytearray(line.tobytes()), prev.tobytes()
    for i in range(len(cur)):  # Average and Paeth depend on the byte just decoded
        a = cur[i - bpp] if i >= bpp else 0
        b = up[i]
        if kind == 3:
            cur[i] = (cur[i] + ((a + b) >> 1)) & 0xFF
            continue
        c = up[i - bpp] if i >= bpp else 0
        p = a + b - c
        pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
        cur[i] = (cur[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
    return np.frombuffer(bytes(cur), np.uint8)


def _pgm(path: Path, data: bytes, limits: _Limits) -> np.ndarray:
    if data[:2] not in (b"P2", b"P5"):
        raise DataError(f"{path}: not a PGM file (expected magic P2 or P5, got {data[:2]!r})")
    pos, fields = 2, []
    for _ in range(3):  # width, height, maxval
        m = _PGM_NUMBER.match(data, pos)
        if m is None:
            raise DataError(f"{path}: malformed PGM header")
        fields.append(int(m.group(1)))
        pos = m.end()
    width, height, maxval = fields
    if not (width and height and 0 < maxval < 65536):
        raise DataError(f"{path}: invalid PGM header: {width}x{height}, maxval {maxval}")
    n = width * height
    limits.check((1, height, width), n)
    if data[:2] == b"P5":
        dtype = np.uint8 if maxval < 256 else np.dtype(">u2")
        body = data[pos + 1:]  # exactly one whitespace byte ends the header
        if len(body) < n * np.dtype(dtype).itemsize or not data[pos:pos + 1].isspace():
            raise DataError(f"{path}: truncated PGM: need {width}x{height} samples")
        values = np.frombuffer(body, dtype, count=n)
    else:
        values = _p2_samples(path, re.sub(rb"#[^\n]*", b" ", data[pos:]), n, maxval)
    if values.max() > maxval:
        raise DataError(f"{path}: PGM sample {values.max()} exceeds maxval {maxval}")
    return values.reshape(height, width) / maxval


def _p2_samples(path: Path, text: bytes, n: int, maxval: int) -> np.ndarray:
    """The n decimal samples of a P2 body, parsed one at a time so that a body of millions of
    tokens costs no more memory than n samples."""
    values = np.empty(n, np.int64)
    count = 0
    for match in re.finditer(rb"\S+", text):
        token = match.group()
        if count == n or not token.isdigit():
            found = f"more than {n}" if count == n else f"the non-number {token[:20]!r} among"
            raise DataError(f"{path}: P2 PGM needs {n} decimal samples, found {found} tokens")
        if len(token.lstrip(b"0")) > len(str(maxval)):  # too long for int64, let alone maxval
            raise DataError(f"{path}: PGM sample {token[:20].decode()} exceeds maxval {maxval}")
        values[count] = int(token)
        count += 1
    if count != n:
        raise DataError(f"{path}: P2 PGM needs {n} decimal samples, found {count} tokens")
    return values
