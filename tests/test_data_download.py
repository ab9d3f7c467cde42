"""The downloader, against a local HTTP server on 127.0.0.1 and file:// URLs; never the internet."""
import hashlib
import http.server
import threading
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from netc.data import load
from netc.data.download import fetch
from netc.errors import DataError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
PAYLOAD = bytes(range(256)) * 300
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


class Handler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder; /short/* promises more bytes than it sends, like a dropped connection."""

    def do_GET(self):
        if self.path.startswith("/short/"):
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD[:1000])
            self.close_connection = True
            return
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=root))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_fetch_writes_the_verified_file_and_nothing_else(server, tmp_path):
    root, url = server
    (root / "f.bin").write_bytes(PAYLOAD)
    dest = tmp_path / "cache" / "f.bin"
    assert fetch("f.bin", dest, PAYLOAD_SHA, [url + "/"]) == dest
    assert dest.read_bytes() == PAYLOAD
    assert [p.name for p in dest.parent.iterdir()] == ["f.bin"]


def test_checksum_mismatch_leaves_nothing(server, tmp_path):
    root, url = server
    (root / "f.bin").write_bytes(PAYLOAD[:-1] + b"\x00")
    cache = tmp_path / "cache"
    with pytest.raises(DataError) as e:
        fetch("f.bin", cache / "f.bin", PAYLOAD_SHA, [url])
    assert "does not match the expected " + PAYLOAD_SHA in e.value.message
    assert list(cache.iterdir()) == []


def test_dropped_connection_leaves_nothing(server, tmp_path):
    _, url = server
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="could not download f.bin"):
        fetch("f.bin", cache / "f.bin", PAYLOAD_SHA, [url + "/short"])
    assert list(cache.iterdir()) == []


def test_falls_through_to_the_next_mirror(server, tmp_path):
    root, url = server
    (root / "good").mkdir()
    (root / "good" / "f.bin").write_bytes(PAYLOAD)
    dest = tmp_path / "f.bin"
    fetch("f.bin", dest, PAYLOAD_SHA, [url + "/missing/", url + "/short/", url + "/good/"])
    assert dest.read_bytes() == PAYLOAD


def test_all_mirrors_failing_lists_each(server, tmp_path):
    _, url = server
    with pytest.raises(DataError) as e:
        fetch("f.bin", tmp_path / "f.bin", PAYLOAD_SHA, [url + "/a/", url + "/b/"])
    assert f"{url}/a/f.bin: HTTP 404 File not found" in e.value.message
    assert f"{url}/b/f.bin: HTTP 404 File not found" in e.value.message


def test_file_url_mirror(tmp_path):
    (tmp_path / "f.bin").write_bytes(PAYLOAD)
    fetch("f.bin", tmp_path / "out" / "f.bin", PAYLOAD_SHA, [tmp_path.as_uri()])
    assert (tmp_path / "out" / "f.bin").read_bytes() == PAYLOAD


def test_offline_named_set_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("NETC_DATA", str(tmp_path))
    with pytest.raises(DataError, match="mnist is not in .* and downloading is off"):
        load("mnist", download=False)


def test_named_set_with_bad_mirror_leaves_the_cache_empty(server, tmp_path, monkeypatch):
    root, url = server
    (root / "mnist").mkdir()
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        (root / "mnist" / name).write_bytes(b"not mnist")
    monkeypatch.setenv("NETC_DATA", str(tmp_path / "cache"))
    monkeypatch.setenv("NETC_DATA_MIRRORS", url + "/{name}/")
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz: sha256 "):
        load("mnist")
    assert list((tmp_path / "cache" / "mnist").iterdir()) == []


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"the full data sets are not at {SHARED}")
def test_named_mnist_downloads_into_the_cache(server, tmp_path, monkeypatch):
    root, url = server
    (root / "mirror").symlink_to(SHARED / "mnist")
    monkeypatch.setenv("NETC_DATA", str(tmp_path / "cache"))
    d = load("mnist", mirrors=[url + "/mirror/"])
    assert sorted(p.name for p in (tmp_path / "cache" / "mnist").iterdir()) == [
        "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
        "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]
    assert np.bincount(d.test.y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974,
                                              1009]
    assert len(load("mnist", download=False).train) == 60000  # now served from the cache
