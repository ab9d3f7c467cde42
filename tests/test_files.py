"""netc.files: the one way netc opens a user's file refuses what is not a regular file and reads
no more than the caller allows."""
import errno
import os
import threading

import pytest

from netc.errors import DataError, SpecError
from netc.files import append_text, open_regular, read_regular, write_atomic


def test_a_regular_file_is_read_whole(tmp_path):
    path = tmp_path / "a.net"
    path.write_bytes(b"input 4\n")
    assert read_regular(path, "the spec", 100) == b"input 4\n"
    with open_regular(path, "the spec") as f:
        assert f.read() == b"input 4\n"


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    done = []
    # If the open blocked, this thread would never finish; the join's timeout catches that.
    worker = threading.Thread(target=lambda: done.append(_error(read_regular, fifo)), daemon=True)
    worker.start()
    worker.join(timeout=10)
    assert done and "FIFO" in done[0] and "not a regular file" in done[0]


@pytest.mark.parametrize("path, kind", [("/dev/zero", "character device"), ("/", "directory")])
def test_devices_and_directories_are_refused(path, kind):
    assert kind in _error(read_regular, path)


def test_a_file_larger_than_the_limit_is_refused(tmp_path):
    path = tmp_path / "big"
    path.write_bytes(b"x" * 101)
    assert "100 bytes at most" in _error(read_regular, path, limit=100)
    path.write_bytes(b"x" * 100)
    assert len(read_regular(path, "the spec", 100)) == 100


def test_a_missing_file_names_the_path_and_the_error_class_is_the_callers(tmp_path):
    with pytest.raises(SpecError, match="no such file"):
        read_regular(tmp_path / "missing.net", "the spec", 100, error=SpecError)


def _error(fn, path, limit=1000) -> str:
    with pytest.raises(DataError) as e:
        fn(path, "the file", limit)
    return e.value.message


def test_write_atomic_replaces_a_fifo_or_link_instead_of_writing_through(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    os.symlink(victim, tmp_path / "out.c")
    os.mkfifo(tmp_path / "out.h")
    write_atomic(tmp_path / "out.c", b"int x;\n", "the C source")
    write_atomic(tmp_path / "out.h", b"int y;\n", "the C header")  # would block if opened
    assert victim.read_text() == "keep"
    assert not (tmp_path / "out.c").is_symlink()
    assert (tmp_path / "out.c").read_bytes() == b"int x;\n"
    assert (tmp_path / "out.h").read_bytes() == b"int y;\n"


def test_write_atomic_on_a_full_disk_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "lenet5.so"
    target.write_bytes(b"old")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(DataError) as e:
        write_atomic(target, b"new" * 1000, "the library")
    assert e.value.message == f"cannot write the library '{target}': No space left on device"
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["lenet5.so"]


def test_append_text_refuses_a_fifo_or_link_without_blocking(tmp_path):
    log = tmp_path / "log.jsonl"
    append_text(log, "a\n", "the log")
    append_text(log, "b\n", "the log")
    assert log.read_text() == "a\nb\n"
    os.mkfifo(tmp_path / "fifo")
    os.symlink(log, tmp_path / "link")
    for name in ("fifo", "link"):
        with pytest.raises(DataError, match=f"cannot write the log '.*{name}'"):
            append_text(tmp_path / name, "c\n", "the log")
    assert log.read_text() == "a\nb\n"
