"""CIFAR-10 and CIFAR-100 in their official binary versions (https://www.cs.toronto.edu/~kriz/
cifar.html): from the user's cache (the verified .tar.gz, downloaded on first use), from the
extracted folder, or from the .tar.gz wherever it is.

A record is its label byte(s) (CIFAR-100: coarse, then fine) and 3,072 pixel bytes: 1,024 red,
1,024 green, 1,024 blue, each a row-major 32x32 plane. Images load as float32 (N, 3, 32, 32)
divided by 255; labels as int64. The archive is read as a stream, member by member, and nothing
is ever extracted to disk, so no member name can write anywhere.
"""
from __future__ import annotations

import gzip
import os
import tarfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from netc.errors import DataError
from netc.files import open_regular, read_regular

from .dataset import Dataset, Split
from .download import fetch, mirror_list
from .mnist import cache_dir

PIXELS = 3 * 32 * 32
MIRRORS = ("https://www.cs.toronto.edu/~kriz/",)
# The official archives hold a handful of members whose records come to 184.4 million bytes;
# anything far beyond is not one of them, and is refused before its bytes are read.
_MAX_MEMBERS = 64
_MAX_ARCHIVE_BYTES = 1 << 28
_MAX_NAMES_BYTES = 1 << 16
_MAX_HEADER_BYTES = 1 << 20  # all tar headers together: 512 bytes a member, long names too
_MAX_TAIL_BYTES = 1 << 20  # the zero blocks after a tar's last member: 10 KiB or less, as tar pads


@dataclass(frozen=True)
class Release:
    """One official binary archive: where to get it, its sha256, and the files inside."""

    name: str  # the cache folder, and {name} in mirror URLs
    archive: str
    sha256: str  # from TensorFlow Datasets' url_checksums, not from a download on this machine
    folder: str  # the one folder the archive holds
    train: tuple[str, ...]
    test: str
    train_records: int  # the most records one training file holds
    test_records: int
    label_bytes: int

    @property
    def record(self) -> int:
        return self.label_bytes + PIXELS


@dataclass(frozen=True)
class Labels:
    """A named set: a release, which label byte of each record, and the class names' file."""

    release: Release
    index: int
    names_file: str
    count: int


CIFAR10 = Release("cifar10", "cifar-10-binary.tar.gz",
                  "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
                  "cifar-10-batches-bin", tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
                  "test_batch.bin", 10_000, 10_000, 1)
CIFAR100 = Release("cifar100", "cifar-100-binary.tar.gz",
                   "58a81ae192c23a4be8b1804d68e518ed807d710a4eb253b1f2a199162a40d8ec",
                   "cifar-100-binary", ("train.bin",), "test.bin", 50_000, 10_000, 2)
SETS = {
    "cifar10": Labels(CIFAR10, 0, "batches.meta.txt", 10),
    "cifar100": Labels(CIFAR100, 1, "fine_label_names.txt", 100),
    "cifar100-coarse": Labels(CIFAR100, 0, "coarse_label_names.txt", 20),
}


def _check_size(where: str, size: int, release: Release, filename: str) -> int:
    """The record count of a file of `size` bytes, refused unless it is a whole number of
    records, at least one and at most what the official file holds."""
    most = release.test_records if filename == release.test else release.train_records
    count, rest = divmod(size, release.record)
    if rest or not 0 < count <= most:
        raise DataError(f"{where}: {size:,} bytes is not 1 to {most:,} whole records of "
                        f"{release.record:,} bytes (truncated or not a {release.name} file)")
    return count


def _decode(where: str, raw: bytes, labels: Labels, x: np.ndarray) -> np.ndarray:
    """The labels of a file's records; their pixels are written into x, divided by 255."""
    release = labels.release
    records = np.frombuffer(raw, np.uint8).reshape(-1, release.record)
    y = records[:, labels.index].astype(np.int64)
    if y.max() >= labels.count:
        first = int(np.argmax(y >= labels.count))
        raise DataError(f"{where}: record {first} has label {y[first]}, but there are only "
                        f"{labels.count} classes (corrupt file?)")
    np.divide(records[:, release.label_bytes:].reshape(x.shape), 255, out=x)
    return y


def _names(where: str, text: bytes, labels: Labels) -> tuple[str, ...]:
    try:
        names = tuple(line.strip() for line in text.decode("utf-8").splitlines() if line.strip())
    except UnicodeDecodeError:
        raise DataError(f"{where}: class names are not UTF-8 text") from None
    if len(names) != labels.count:
        raise DataError(f"{where}: {len(names)} class names, expected {labels.count}")
    return names


def _build(name: str, labels: Labels, where: Callable[[str], str],
           files: dict[str, bytes]) -> Dataset:
    """The Dataset from the needed files' bytes (sizes already checked), each file decoded
    straight into its part of one array."""
    release = labels.release

    def split(names: Sequence[str]) -> Split:
        counts = [len(files[f]) // release.record for f in names]
        x = np.empty((sum(counts), 3, 32, 32), np.float32)
        starts = np.cumsum([0, *counts])
        y = [_decode(where(f), files[f], labels, x[a:b])
             for f, a, b in zip(names, starts, starts[1:])]
        return Split(x, np.concatenate(y))
    classes = _names(where(labels.names_file), files[labels.names_file], labels)
    return Dataset(name, split(release.train), split([release.test]), classes)


def _needed(labels: Labels) -> tuple[str, ...]:
    return (*labels.release.train, labels.release.test, labels.names_file)


def read_folder(folder: str | Path, labels: Labels, name: str | None = None) -> Dataset:
    """A set from its extracted folder (cifar-10-batches-bin/ or cifar-100-binary/)."""
    folder = Path(folder)
    release, files = labels.release, {}
    missing = [f for f in _needed(labels) if not (folder / f).exists()]
    if missing:
        raise DataError(f"{folder}: missing {', '.join(missing)}",
                        hint=f"the folder extracted from {release.archive} holds "
                             + ", ".join(_needed(labels)))
    for f in _needed(labels):
        if f == labels.names_file:
            files[f] = read_regular(folder / f, "class names", _MAX_NAMES_BYTES)
            continue
        with open_regular(folder / f, f"{release.name} file") as fh:
            size = os.fstat(fh.fileno()).st_size
            _check_size(str(folder / f), size, release, f)
            files[f] = fh.read(size)
        if len(files[f]) != size:
            raise DataError(f"{folder / f}: shrank while being read")
    return _build(name or folder.resolve().name, labels, lambda f: str(folder / f), files)


def read_archive(path: str | Path, labels: Labels, name: str | None = None) -> Dataset:
    """A set from its official .tar.gz, read as a stream: only the needed members' bytes are
    kept, each member's size is checked from its header before it is read, and an archive with
    a link, an absolute or `..` member name, or more members or bytes than the official one
    could hold is refused."""
    path = Path(path)
    release, files = labels.release, {}
    needed = set(_needed(labels))
    declared = members = 0
    # gzip.GzipFile, not tarfile's own gzip reading, for its checks: a truncated stream raises
    # EOFError and a wrong CRC BadGzipFile, once the stream is read to its end below.
    with open_regular(path, f"{release.name} archive") as fh, gzip.GzipFile(fileobj=fh) as gz:
        try:
            capped = _Capped(gz, _MAX_ARCHIVE_BYTES + _MAX_HEADER_BYTES, path)
            with tarfile.open(fileobj=capped, mode="r|") as tar:
                for member in tar:
                    members += 1
                    declared += member.size
                    parts = PurePosixPath(member.name).parts
                    if member.issym() or member.islnk() or member.name.startswith("/") \
                            or ".." in parts:
                        raise DataError(f"{path}: unsafe member {member.name!r} (a link, or a "
                                        "path outside the archive): not an official archive")
                    if members > _MAX_MEMBERS or declared > _MAX_ARCHIVE_BYTES:
                        raise DataError(f"{path}: more members or bytes than {release.archive} "
                                        "holds: not an official archive")
                    parts = parts[1:] if parts[:1] == (".",) else parts
                    if len(parts) != 2 or parts[0] != release.folder or parts[1] not in needed:
                        continue
                    where = f"{path}:{member.name}"
                    if not member.isfile():
                        raise DataError(f"{where}: not a regular file")
                    if parts[1] == labels.names_file:
                        if member.size > _MAX_NAMES_BYTES:
                            raise DataError(f"{where}: {member.size:,} bytes is too long for "
                                            "class names")
                    else:
                        _check_size(where, member.size, release, parts[1])
                    files[parts[1]] = tar.extractfile(member).read(member.size)
                    if len(files[parts[1]]) != member.size:
                        raise DataError(f"{where}: truncated")
            if len(gz.read(_MAX_TAIL_BYTES)) == _MAX_TAIL_BYTES and gz.read(1):
                raise DataError(f"{path}: more than {_MAX_TAIL_BYTES:,} bytes after the tar "
                                "archive's end: not an official archive")
        except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
            raise DataError(f"{path}: not a readable .tar.gz archive ({e or type(e).__name__})",
                            hint="a download interrupted or corrupted: delete the file") from None
    missing = sorted(needed - set(files))
    if missing:
        raise DataError(f"{path}: no {', '.join(release.folder + '/' + f for f in missing)}",
                        hint=f"is it {release.archive}?")
    return _build(name or labels.release.name, labels, lambda f: f"{path}:{release.folder}/{f}",
                  files)


class _Capped:
    """The decompressed stream, refused past `limit` bytes in all. tarfile reads a member's
    long-name or pax header whole, as large as the header declares (up to 8 GiB), before netc
    sees the member; capping the stream bounds those reads too."""

    def __init__(self, raw, limit: int, path: Path):
        self.raw, self.limit, self.path, self.total = raw, limit, path, 0

    def read(self, n: int = -1) -> bytes:
        room = self.limit - self.total + 1  # a byte past the limit proves the excess
        data = self.raw.read(room if n is None or n < 0 else min(n, room))
        self.total += len(data)
        if self.total > self.limit:
            raise DataError(f"{self.path}: more than {self.limit:,} bytes of tar data: not an "
                            "official archive")
        return data


def detect(path: Path) -> Labels | None:
    """The set an extracted folder or a .tar.gz holds, told from its file names (CIFAR-100 gives
    its fine labels; the coarse ones come by name, `cifar100-coarse`)."""
    if path.is_dir():
        if (path / CIFAR10.train[0]).is_file():
            return SETS["cifar10"]
        if (path / CIFAR100.train[0]).is_file() and (path / CIFAR100.test).is_file():
            return SETS["cifar100"]
        return None
    return {CIFAR10.archive: SETS["cifar10"], CIFAR100.archive: SETS["cifar100"]}.get(path.name)


def load_cifar(source: str | os.PathLike, name: str | None = None) -> Dataset:
    """The set `name` ("cifar10", "cifar100" or "cifar100-coarse"; by default the one detect()
    finds) from an extracted folder or a .tar.gz at `source`."""
    path = Path(source)
    labels = SETS[name] if name is not None else detect(path)
    if labels is None:
        raise DataError(f"{path}: not a CIFAR folder or archive",
                        hint=f"give the folder extracted from {CIFAR10.archive} or "
                             f"{CIFAR100.archive}, or the archive itself")
    if path.is_dir():
        return read_folder(path, labels)
    return read_archive(path, labels, path.name.removesuffix(".tar.gz"))


def load_named(name: str, *, download: bool = True,
               mirrors: Sequence[str] | None = None) -> Dataset:
    """A named set from the cache folder: the extracted folder if the user put it there, else
    the archive, downloaded and checked against its sha256 first if missing."""
    labels = SETS[name]
    release = labels.release
    folder = cache_dir(release.name)
    if (folder / release.folder).is_dir():
        return read_folder(folder / release.folder, labels, name)
    archive = folder / release.archive
    if not archive.exists():
        if not download:
            raise DataError(f"{name} is not in {folder} and downloading is off",
                            hint=f"copy {release.archive} or its extracted {release.folder}/ "
                                 "there")
        urls = mirror_list(MIRRORS, release.name) if mirrors is None else list(mirrors)
        fetch(release.archive, archive, release.sha256, urls)
    return read_archive(archive, labels, name)
