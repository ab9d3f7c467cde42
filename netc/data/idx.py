"""IDX files (the MNIST format), gzip-compressed or not: strict reading, and writing for tests.

Reading checks the magic number, the dimensions and the exact length, and every failure is a
DataError that names the file. Only unsigned-byte IDX (type code 0x08) exists in MNIST-like sets.
"""
from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from netc.errors import DataError

IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions: count, rows, columns
LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension: count
_GZIP_MAGIC = b"\x1f\x8b"


def _raw_bytes(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from None
    # Sniff rather than trust the suffix: renamed or pre-decompressed files are common.
    if not data.startswith(_GZIP_MAGIC):
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: corrupt or truncated gzip data ({e})",
                        hint="delete the file and download it again") from None


def read_idx(path: str | Path, magic: int) -> np.ndarray:
    """The uint8 array stored in an IDX file whose header must start with `magic`."""
    path = Path(path)
    data = _raw_bytes(path)
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header ({len(data)} bytes, need {header})")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise DataError(f"{path}: wrong IDX magic number 0x{found:08x}, expected 0x{magic:08x}",
                        hint="is this the right file (images vs labels), and an IDX file at all?")
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if ndim > 1 and 0 in dims[1:]:
        raise DataError(f"{path}: IDX dimensions {dims} include a zero")
    need = int(np.prod(dims, dtype=np.int64))
    have = len(data) - header
    if have < need:
        raise DataError(f"{path}: truncated: the header promises {dims[0]} records "
                        f"({need} bytes) but only {have} bytes follow")
    if have > need:
        raise DataError(f"{path}: {have - need} unexpected bytes after {dims[0]} records")
    return np.frombuffer(data, np.uint8, count=need, offset=header).reshape(dims).copy()


def read_images(path: str | Path) -> np.ndarray:
    """Images as uint8 (N, rows, cols), pixel values 0..255 as stored."""
    return read_idx(path, IMAGES_MAGIC)


def read_labels(path: str | Path) -> np.ndarray:
    """Labels as uint8 (N,)."""
    return read_idx(path, LABELS_MAGIC)


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write a uint8 array as IDX; gzip (deterministic: mtime 0, no name) if the path ends .gz."""
    path = Path(path)
    array = np.ascontiguousarray(array, dtype=np.uint8)
    magic = 0x0800 | array.ndim
    head = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    data = head + array.tobytes()
    if path.suffix == ".gz":
        data = gzip.compress(data, compresslevel=9, mtime=0)
    path.write_bytes(data)
