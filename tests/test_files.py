"""netc.files: the one way netc opens a user's file refuses what is not a regular file and reads
no more than the caller allows."""
import os
import threading

import pytest

from netc.errors import DataError, SpecError
from netc.files import open_regular, read_regular


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
