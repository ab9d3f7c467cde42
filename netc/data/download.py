"""Fetching a file from a list of mirrors into a cache, checked by sha256, written atomically.

The bytes go to a hidden temporary file in the destination folder, are hashed on the way, fsynced,
and renamed into place only when the hash matches, so the destination name only ever holds a
complete, verified file, whatever happens during the download.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from netc.errors import DataError

MIRRORS_ENV = "NETC_DATA_MIRRORS"  # overrides every named data set's mirror list
_CHUNK = 1 << 16
_TIMEOUT_S = 30


def mirror_list(default: Sequence[str], name: str) -> list[str]:
    """Base URLs to try, in order: $NETC_DATA_MIRRORS (whitespace or commas between entries,
    `{name}` replaced by the data set's name) if set, else `default`."""
    text = os.environ.get(MIRRORS_ENV, "").replace(",", " ").split()
    return [m.replace("{name}", name) for m in text] if text else list(default)


def _join(base: str, filename: str) -> str:
    return base if base.endswith(filename) else base.rstrip("/") + "/" + filename


def _fetch_once(url: str, dest: Path, sha256: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=_TIMEOUT_S) as src:
            while chunk := src.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != sha256:
            raise ValueError(f"sha256 {digest.hexdigest()} does not match the expected {sha256}")
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(dest.parent)


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable; some systems cannot open a directory, which is harmless.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fetch(filename: str, dest: Path, sha256: str, mirrors: Sequence[str]) -> Path:
    """Download `filename` from the first mirror that serves it with the right sha256."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    failures = []
    for base in mirrors:
        url = _join(base, filename)
        try:
            _fetch_once(url, dest, sha256)
            return dest
        except (OSError, ValueError, http.client.HTTPException) as e:  # URLError is an OSError
            why = (f"HTTP {e.code} {e.reason}" if isinstance(e, urllib.error.HTTPError)
                   else getattr(e, "reason", None) or e)
            failures.append(f"  {url}: {why}")
    raise DataError(f"could not download {filename} into {dest.parent}:\n" + "\n".join(failures),
                    hint="check the connection, set NETC_DATA_MIRRORS, or copy the files there "
                         "by hand")
