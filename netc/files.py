"""Opening a user's file: only a regular file, and never more bytes than the caller allows.

Every spec, data file, image and checkpoint netc reads comes through here, so a FIFO cannot
block a command forever, /dev/zero cannot fill memory, and a missing file gets one clear line.
"""
from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from typing import BinaryIO

from .errors import DataError, NetcError

_KINDS = {stat.S_IFDIR: "a directory", stat.S_IFIFO: "a FIFO (named pipe)",
          stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
          stat.S_IFSOCK: "a socket"}


def open_regular(path: str | os.PathLike, what: str,
                 error: type[NetcError] = DataError) -> BinaryIO:
    """`path` opened for reading in binary, refused unless it is a regular file. The open does
    not block (a FIFO would wait for a writer), and the check is on the opened file itself."""
    name = os.fspath(path)
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise error(f"cannot read {what} '{name}': no such file") from None
    except IsADirectoryError:
        raise error(f"cannot read {what} '{name}': it is a directory, not a file") from None
    except OSError as e:
        raise error(f"cannot read {what} '{name}': {e.strerror or e}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = _KINDS.get(stat.S_IFMT(mode), "not a regular file")
        raise error(f"cannot read {what} '{name}': it is {kind}, not a regular file")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def read_regular(path: str | os.PathLike, what: str, limit: int,
                 error: type[NetcError] = DataError) -> bytes:
    """The whole content of a regular file of at most `limit` bytes; a larger one is refused
    before more than `limit + 1` bytes are read."""
    with open_regular(path, what, error) as f:
        try:
            data = f.read(limit + 1)
        except OSError as e:
            raise error(f"cannot read {what} '{os.fspath(path)}': {e.strerror or e}") from None
    if len(data) > limit:
        raise error(f"{what} '{os.fspath(path)}' is larger than netc accepts "
                    f"({limit:,} bytes at most)")
    return data


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, what: str) -> Iterator[BinaryIO]:
    """A binary file that replaces `path` whole when the block ends: written to a temporary file
    beside it, flushed, given the mode open() gives (0666 less the umask, not mkstemp's 0600),
    renamed over `path`, and the folder synced so that the rename survives a power cut. The
    rename replaces a FIFO or a link in the way instead of writing through it; on any error the
    temporary file goes and `path` keeps what it held (an OSError becomes one DataError line)."""
    name = os.fspath(path)
    folder = os.path.dirname(name) or "."
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix="-" + os.path.basename(name))
    except OSError as e:
        raise DataError(f"cannot write {what} '{name}': {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fchmod(f.fileno(), 0o666 & ~_umask())
            os.fsync(f.fileno())
        os.replace(tmp, name)
        folder_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(folder_fd)
        finally:
            os.close(folder_fd)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise DataError(f"cannot write {what} '{name}': {e.strerror or e}") from None
        raise


def write_atomic(path: str | os.PathLike, data: bytes, what: str) -> None:
    """`path` holds `data` whole or keeps what it held (atomic_file)."""
    with atomic_file(path, what) as f:
        f.write(data)


def append_text(path: str | os.PathLike, text: str, what: str) -> None:
    """`text` added at the end of the regular file `path` (created if missing); a FIFO, a
    device or a link there is refused instead of blocking or being written through."""
    name = os.fspath(path)
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(name, flags, 0o666)
    except OSError as e:
        raise DataError(f"cannot write {what} '{name}': {e.strerror or e}") from None
    with os.fdopen(fd, "a", encoding="utf-8") as f:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise DataError(f"cannot write {what} '{name}': it is "
                            f"{_KINDS.get(stat.S_IFMT(mode), 'not a regular file')}")
        f.write(text)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
