"""IDX files (the MNIST format), gzip-compressed or not: strict reading, and writing for tests.

Reading checks the magic number, the dimensions and the exact length, and every failure is a
DataError that names the file. Only unsigned-byte IDX (type code 0x08) exists in MNIST-like sets.
The header is read first; gzip data is then inflated a chunk at a time, to exactly the size the
header declares, so a small .gz cannot expand into gigabytes before the size is checked.
"""
from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from netc.errors import DataError
from netc.files import open_regular

from .dataset import MAX_ARRAY_BYTES

IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions: count, rows, columns
LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension: count
_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 20
_TRAILING = 1 << 20  # bytes after the records read to report how many there are, at most


def read_idx(path: str | Path, magic: int) -> np.ndarray:
    """The uint8 array stored in an IDX file whose header must start with `magic`."""
    path = Path(path)
    with open_regular(path, "IDX file") as f:
        # Sniff rather than trust the suffix: renamed or pre-decompressed files are common.
        packed = f.read(2) == _GZIP_MAGIC
        f.seek(0)
        try:
            if not packed:
                return _read(path, f, magic, os.fstat(f.fileno()).st_size)
            with gzip.GzipFile(fileobj=f, mode="rb") as stream:
                return _read(path, stream, magic, None)
        except (OSError, EOFError, zlib.error) as e:
            if not packed:
                raise DataError(f"{path}: cannot read: {e.strerror or e}") from None
            raise DataError(f"{path}: corrupt or truncated gzip data ({e})",
                            hint="delete the file and download it again") from None


def _read(path: Path, stream: BinaryIO, magic: int, size: int | None) -> np.ndarray:
    """The records after a checked header; size: the file's length, None for a gzip stream."""
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    data = stream.read(header)
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header ({len(data)} bytes, need {header})")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise DataError(f"{path}: wrong IDX magic number 0x{found:08x}, expected 0x{magic:08x}",
                        hint="is this the right file (images vs labels), and an IDX file at all?")
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if ndim > 1 and 0 in dims[1:]:
        raise DataError(f"{path}: IDX dimensions {dims} include a zero")
    need = math.prod(dims)
    if size is not None:  # a plain file: its length tells everything before reading
        _check_length(path, dims, need, size - header)
    elif need > MAX_ARRAY_BYTES:
        raise DataError(f"{path}: the IDX header declares {dims}, {need:,} bytes; netc reads at "
                        f"most {MAX_ARRAY_BYTES:,}")
    try:
        out = np.empty(need, np.uint8)
    except MemoryError:
        raise DataError(f"{path}: {need:,} bytes of records do not fit in memory") from None
    view, have = memoryview(out), 0
    while have < need and (got := stream.readinto(view[have:have + _CHUNK])):
        have += got
    _check_length(path, dims, need, have + len(stream.read(_TRAILING)))
    return out.reshape(dims)


def _check_length(path: Path, dims: tuple[int, ...], need: int, have: int) -> None:
    if have < need:
        raise DataError(f"{path}: truncated: the header promises {dims[0]} records "
                        f"({need} bytes) but only {have} bytes follow")
    if have > need:
        more = "more than " if have - need >= _TRAILING else ""
        raise DataError(f"{path}: {more}{have - need} unexpected bytes after {dims[0]} records")


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
