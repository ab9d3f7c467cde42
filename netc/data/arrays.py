"""Generic data files: NumPy .npz archives and CSV tables, checked before they reach training.

.npz: arrays `x` and `y`, optionally `x_test` and `y_test`. x is (N, D) features, (N, H, W)
images (a channel axis is added) or (N, C, H, W); uint8 x is taken as pixels and scaled to
[0, 1], any other numeric x is converted to float32 unchanged. y is N integer class labels >= 0.
CSV: one sample per line, the class label in the first column and the features after it; an
optional header line is skipped. Features are kept as they are, as float32 (N, D).
Classes are numbered up to the largest label, lazily: the network decides whether that is too many.
"""
from __future__ import annotations

import math
import zipfile
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from netc.errors import DataError
from netc.files import open_regular, read_regular

from .dataset import MAX_ARRAY_BYTES, Dataset, NumberedClasses, Split

_MAX_CSV_BYTES = 1 << 28  # parsing text takes several times the file's size in memory
_DEFLATE_RATIO = 1032  # the most deflate can compress (PNG and zlib docs); np.savez_compressed


def npy_header(stream: BinaryIO, name: str) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, header bytes) of the .npy data at the stream's position, read without the
    data and checked to declare a plain array of at most MAX_ARRAY_BYTES."""
    start = stream.tell()
    try:
        version = np.lib.format.read_magic(stream)
        read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                else np.lib.format.read_array_header_2_0)
        shape, _, dtype = read(stream)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{name}: not a readable .npy array ({e})") from None
    if dtype.hasobject:
        raise DataError(f"{name}: holds Python objects ({dtype}), which netc does not unpickle")
    size = math.prod(shape) * dtype.itemsize
    if size > MAX_ARRAY_BYTES:
        raise DataError(f"{name}: declares a {dtype} array of shape {shape}, {size:,} bytes; "
                        f"netc reads at most {MAX_ARRAY_BYTES:,}")
    return shape, dtype, stream.tell() - start


def _features(path: Path, key: str, x: np.ndarray) -> np.ndarray:
    if x.dtype.kind not in "biuf" or x.ndim not in (2, 3, 4) or len(x) == 0:
        raise DataError(f"{path}: '{key}' must be a non-empty numeric array of shape (N, D), "
                        f"(N, H, W) or (N, C, H, W), got {x.dtype} {x.shape}")
    out = x.astype(np.float32) / 255 if x.dtype == np.uint8 else x.astype(np.float32)
    bad = ~np.isfinite(out)
    if bad.any():
        raise DataError(f"{path}: '{key}' holds {int(bad.sum())} NaN or infinite values "
                        f"(first in sample {int(np.argwhere(bad)[0][0])})")
    return out[:, None] if out.ndim == 3 else out


_MAX_LABEL = 2**31 - 1  # a class index the generated C can hold (an int)


def _labels(path: Path, key: str, y: np.ndarray, n: int) -> np.ndarray:
    if y.shape != (n,):
        raise DataError(f"{path}: '{key}' must have shape ({n},) to match the inputs, "
                        f"got {y.shape}")
    if y.dtype.kind == "f":
        if not np.isfinite(y).all() or (y != np.round(y)).any():
            raise DataError(f"{path}: '{key}' must hold whole-number class labels",
                            hint="a CSV holds each row's class label in its first column; "
                                 "regression targets are not supported by .npz/.csv loading")
    elif y.dtype.kind not in "biu":
        raise DataError(f"{path}: '{key}' must hold integer class labels, got {y.dtype}")
    if y.min() < 0:
        raise DataError(f"{path}: '{key}' holds the negative label {y.min():g}")
    if y.max() > _MAX_LABEL:  # beyond int64 (as float or uint64), where astype would wrap
        raise DataError(f"{path}: '{key}' holds the label {y.max():g}, beyond any network's "
                        "outputs")
    return y.astype(np.int64)


def _classes(*splits: Split | None) -> NumberedClasses:
    return NumberedClasses(max(int(s.y.max()) for s in splits if s is not None) + 1)


def _member(path: Path, archive: zipfile.ZipFile, key: str) -> np.ndarray:
    """One array of an .npz, its header checked against the zip entry before any data is read."""
    info, name = archive.getinfo(key + ".npy"), f"{path}: '{key}'"
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise DataError(f"{name}: compressed with zip method {info.compress_type}",
                        hint="write the archive with np.savez or np.savez_compressed")
    ratio = 1 if info.compress_type == zipfile.ZIP_STORED else _DEFLATE_RATIO
    if info.file_size > ratio * info.compress_size + 1024:
        raise DataError(f"{name}: the zip entry claims {info.file_size:,} bytes, more than its "
                        f"{info.compress_size:,} compressed bytes can hold")
    with archive.open(info) as member:
        shape, dtype, header = npy_header(member, name)
    if header + math.prod(shape) * dtype.itemsize != info.file_size:
        raise DataError(f"{name}: the header declares {dtype} {shape} but the entry holds "
                        f"{info.file_size - header:,} bytes of data")
    with archive.open(info) as member:
        return np.lib.format.read_array(member, allow_pickle=False)


def load_npz(path: str | Path) -> Dataset:
    path = Path(path)
    try:
        with open_regular(path, ".npz data set") as f, zipfile.ZipFile(f) as archive:
            keys = {n[:-4] for n in archive.namelist() if n.endswith(".npy")}
            if not {"x", "y"} <= keys or ("x_test" in keys) != ("y_test" in keys):
                raise DataError(f"{path}: has arrays {sorted(keys)}",
                                hint="an .npz data set holds 'x' and 'y', and optionally both "
                                     "'x_test' and 'y_test'")
            arrays = {k: _member(path, archive, k) for k in ("x", "y", "x_test", "y_test")
                      if k in keys}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise DataError(f"{path}: not a readable .npz archive ({e})") from None
    except MemoryError:
        raise DataError(f"{path}: its arrays do not fit in memory") from None
    splits = []
    for xk, yk in (("x", "y"), ("x_test", "y_test")):
        if xk in keys:
            x = _features(path, xk, arrays[xk])
            splits.append(Split(x, _labels(path, yk, arrays[yk], len(x))))
    train, test = splits[0], splits[1] if len(splits) > 1 else None
    if test is not None and test.x.shape[1:] != train.x.shape[1:]:
        raise DataError(f"{path}: 'x_test' samples have shape {test.x.shape[1:]} but 'x' "
                        f"samples {train.x.shape[1:]}")
    return Dataset(path.stem, train, test, _classes(train, test))


def _read_csv(path: Path) -> Split:
    try:
        lines = read_regular(path, "CSV file", _MAX_CSV_BYTES).decode().splitlines()
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: cannot read: {e}") from None
    skip = 0 if lines and all(_is_number(c) for c in lines[0].split(",")) else 1  # header?
    rows = [line for line in lines[skip:] if line.strip()]
    if not rows:
        raise DataError(f"{path}: no data rows")
    try:
        table = np.loadtxt(rows, delimiter=",", ndmin=2, dtype=np.float64)
    except ValueError as e:
        raise _locate(path, lines, skip) or DataError(f"{path}: {e}") from None
    if table.shape[1] < 2:
        raise DataError(f"{path}: each row needs a label and at least one feature")
    x = _features(path, "features", table[:, 1:])
    return Split(x, _labels(path, "label column", table[:, 0], len(x)))


def _locate(path: Path, lines: list[str], skip: int) -> DataError | None:
    # np.loadtxt's own messages count lines from its input; name the file's line instead.
    width = None
    for lineno, line in enumerate(lines[skip:], start=skip + 1):
        if not line.strip():
            continue
        cells = line.split(",")
        width = width or len(cells)
        if len(cells) != width:
            return DataError(f"{path}:{lineno}: {len(cells)} columns, expected {width}")
        if bad := [c for c in cells if not _is_number(c)]:
            return DataError(f"{path}:{lineno}: not a number: {bad[0].strip()!r}")
    return None


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def load_csv(train: str | Path, test: str | Path | None = None,
             name: str | None = None) -> Dataset:
    """A Dataset from a training CSV and, optionally, a test CSV of the same width, named `name`
    (else after the training file)."""
    train_split = _read_csv(Path(train))
    test_split = _read_csv(Path(test)) if test is not None else None
    if test_split is not None and test_split.x.shape[1:] != train_split.x.shape[1:]:
        raise DataError(f"{test}: {test_split.x.shape[1]} features per row but {train} has "
                        f"{train_split.x.shape[1]}")
    return Dataset(name or Path(train).stem, train_split, test_split,
                   _classes(train_split, test_split))
