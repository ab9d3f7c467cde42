"""CIFAR-10/100 readers on small files written in the official binary formats: record layout,
label bytes, class names, the archive read as a stream, corrupt and hostile files refused with
one line, the download through the shared downloader from a local mirror, and `netc train` /
`netc eval` end to end. The real archives are never fetched."""
import dataclasses
import gzip
import hashlib
import http.server
import io
import tarfile
import threading
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from netc import data
from netc.cli import main
from netc.data import cifar
from netc.errors import DataError

CIFAR10_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                 "truck")
PER_BATCH = 4  # records per CIFAR-10 file here; the official files hold 10,000


def records(labels: list[tuple[int, ...]], rng: np.random.Generator) -> np.ndarray:
    """(N, label bytes + 3072) uint8 records with the given label bytes and random pixels."""
    out = rng.integers(0, 256, (len(labels), len(labels[0]) + 3072), dtype=np.uint8)
    out[:, :len(labels[0])] = labels
    return out


def write_cifar10(folder: Path, rng=None, per_batch=PER_BATCH) -> dict[str, np.ndarray]:
    rng = rng or np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for i, name in enumerate([f"data_batch_{k}.bin" for k in range(1, 6)] + ["test_batch.bin"]):
        written[name] = records([((i * per_batch + j) % 10,) for j in range(per_batch)], rng)
        (folder / name).write_bytes(written[name].tobytes())
    # The official file ends with a blank line.
    (folder / "batches.meta.txt").write_text("\n".join(CIFAR10_NAMES) + "\n\n")
    return written


def write_cifar100(folder: Path) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    written = {"train.bin": records([(i % 20, (7 * i) % 100) for i in range(12)], rng),
               "test.bin": records([(19 - i, 99 - i) for i in range(3)], rng)}
    for name, recs in written.items():
        (folder / name).write_bytes(recs.tobytes())
    (folder / "fine_label_names.txt").write_text("".join(f"fine_{i}\n" for i in range(100)))
    (folder / "coarse_label_names.txt").write_text("".join(f"coarse_{i}\n" for i in range(20)))
    return written


def tar_gz(folder: Path, dest: Path, extra=()) -> Path:
    """The folder as the official archive lays it out: one top folder, regular files."""
    with tarfile.open(dest, "w:gz") as tar:
        for member in extra:
            tar.addfile(member)
        for path in sorted(folder.iterdir()):
            tar.add(path, f"{folder.name}/{path.name}")
    return dest


def one_line_error(call, *args, **kwargs) -> str:
    with pytest.raises(DataError) as e:
        call(*args, **kwargs)
    assert "\n" not in e.value.message
    return e.value.message


@pytest.fixture
def c10(tmp_path):
    folder = tmp_path / "cifar-10-batches-bin"
    return folder, write_cifar10(folder)


def test_cifar10_folder_labels_pixels_and_names(c10):
    folder, written = c10
    recs = written["data_batch_2.bin"]
    recs[1, 1 + 1024 * 2 + 32 * 5 + 7] = 200  # blue plane, row 5, column 7 of its second record
    (folder / "data_batch_2.bin").write_bytes(recs.tobytes())
    d = data.load(folder)
    assert d.name == "cifar-10-batches-bin" and d.classes == CIFAR10_NAMES
    assert d.train.x.shape == (5 * PER_BATCH, 3, 32, 32) and d.train.x.dtype == np.float32
    assert d.train.y.tolist() == [i % 10 for i in range(5 * PER_BATCH)]
    assert d.test.y.tolist() == [(5 * PER_BATCH + j) % 10 for j in range(PER_BATCH)]
    assert d.train.x[PER_BATCH + 1, 2, 5, 7] == np.float32(200 / 255)
    # Channels are the 1024-byte planes in order R, G, B, each row-major.
    assert np.array_equal(np.round(d.test.x * 255).astype(np.uint8).reshape(PER_BATCH, -1),
                          written["test_batch.bin"][:, 1:])


def test_cifar10_archive_reads_like_the_folder(c10, tmp_path):
    folder, _ = c10
    archive = tar_gz(folder, tmp_path / "cifar-10-binary.tar.gz")
    a, f = data.load(archive), data.load(folder)
    assert a.name == "cifar-10-binary" and a.classes == f.classes
    assert np.array_equal(a.train.x, f.train.x) and np.array_equal(a.test.y, f.test.y)


def test_cifar100_fine_and_coarse_label_bytes(tmp_path):
    folder = tmp_path / "cifar-100-binary"
    written = write_cifar100(folder)
    archive = tar_gz(folder, tmp_path / "cifar-100-binary.tar.gz")
    fine = data.load(folder)  # a path gives the fine labels
    coarse = data.load_cifar(archive, "cifar100-coarse")
    assert fine.train.y.tolist() == written["train.bin"][:, 1].tolist()  # the second byte
    assert coarse.train.y.tolist() == written["train.bin"][:, 0].tolist()  # the first byte
    assert coarse.test.y.tolist() == [19, 18, 17]
    assert len(fine.classes) == 100 and fine.classes[42] == "fine_42"
    assert coarse.classes == tuple(f"coarse_{i}" for i in range(20))
    assert np.array_equal(fine.train.x, coarse.train.x)
    assert fine.train.x[3, 0, 0, 0] == np.float32(written["train.bin"][3, 2] / 255)


@pytest.mark.parametrize("size, why", [(3073 * 4 - 1, "12,291 bytes"), (0, "0 bytes"),
                                       (3073 * 10_001, "30,733,073 bytes")])
def test_truncated_empty_or_oversized_file_is_refused(c10, size, why):
    folder, _ = c10
    (folder / "data_batch_3.bin").write_bytes(bytes(size))
    message = one_line_error(data.load, folder)
    assert message.startswith(f"{folder / 'data_batch_3.bin'}: {why} is not 1 to 10,000 whole "
                              "records of 3,073 bytes")


def test_label_out_of_range_is_refused(c10):
    folder, written = c10
    recs = written["test_batch.bin"]
    recs[2, 0] = 10
    (folder / "test_batch.bin").write_bytes(recs.tobytes())
    assert one_line_error(data.load, folder) == (
        f"{folder / 'test_batch.bin'}: record 2 has label 10, but there are only 10 classes "
        "(corrupt file?)")


def test_wrong_class_names_and_missing_files_are_refused(c10):
    folder, _ = c10
    (folder / "batches.meta.txt").write_text("cat\ndog\n")
    assert "2 class names, expected 10" in one_line_error(data.load, folder)
    (folder / "test_batch.bin").unlink()
    assert one_line_error(data.load_cifar, folder).endswith("missing test_batch.bin")


def test_corrupt_and_truncated_archives_are_refused(c10, tmp_path):
    folder, _ = c10
    good = tar_gz(folder, tmp_path / "cifar-10-binary.tar.gz").read_bytes()
    archive = tmp_path / "bad" / "cifar-10-binary.tar.gz"
    archive.parent.mkdir()
    corrupt = bytearray(good)
    corrupt[len(good) // 2:len(good) // 2 + 64] = bytes(64)
    for content in (bytes(corrupt), good[:len(good) // 2], b"not gzip at all"):
        archive.write_bytes(content)
        assert one_line_error(data.load, archive).startswith(
            f"{archive}: not a readable .tar.gz archive (")


def member(name: str, kind=tarfile.REGTYPE, target: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


@pytest.mark.parametrize("bad", [
    member("cifar-10-batches-bin/../../evil.bin"), member("/etc/evil"),
    member("cifar-10-batches-bin/data_batch_9.bin", tarfile.SYMTYPE, "/etc/passwd"),
    member("cifar-10-batches-bin/hard", tarfile.LNKTYPE, "cifar-10-batches-bin/x")])
def test_archive_with_a_link_or_escaping_path_is_refused(c10, tmp_path, bad):
    folder, _ = c10
    archive = tar_gz(folder, tmp_path / "cifar-10-binary.tar.gz", [bad])
    assert one_line_error(data.load, archive) == (
        f"{archive}: unsafe member {bad.name!r} (a link, or a path outside the archive): not an "
        "official archive")
    assert not (tmp_path.parent / "evil.bin").exists()


def test_archive_member_sizes_are_checked_before_reading(c10, tmp_path):
    folder, _ = c10
    (folder / "test_batch.bin").write_bytes(bytes(3073 * 2 + 5))
    archive = tar_gz(folder, tmp_path / "cifar-10-binary.tar.gz")
    assert one_line_error(data.load, archive).startswith(
        f"{archive}:cifar-10-batches-bin/test_batch.bin: 6,151 bytes is not 1 to 10,000 whole")


def test_a_long_name_header_declaring_gigabytes_is_refused_within_the_cap(tmp_path):
    """tarfile reads a GNU long-name header whole, before the loop sees the member; a 1.3 MB
    archive declaring a 300 MB name used to be read into memory (8 GiB is possible)."""
    header = tarfile.TarInfo("././@LongLink")
    header.type, header.size = tarfile.GNUTYPE_LONGNAME, 300 << 20
    archive = tmp_path / "cifar-10-binary.tar.gz"
    with gzip.open(archive, "wb", compresslevel=1) as gz:
        gz.write(header.tobuf(format=tarfile.GNU_FORMAT))
        for _ in range(300):
            gz.write(b"a" * (1 << 20))
    message = one_line_error(data.load, archive)
    assert message == (f"{archive}: more than {cifar._MAX_ARCHIVE_BYTES + (1 << 20):,} bytes of "
                       "tar data: not an official archive")


def test_archive_without_the_files_is_refused(tmp_path):
    with tarfile.open(tmp_path / "cifar-10-binary.tar.gz", "w:gz") as tar:
        tar.addfile(member("readme.html"), io.BytesIO())
    message = one_line_error(data.load, tmp_path / "cifar-10-binary.tar.gz")
    assert message.endswith(": no cifar-10-batches-bin/batches.meta.txt, "
                            "cifar-10-batches-bin/data_batch_1.bin, "
                            "cifar-10-batches-bin/data_batch_2.bin, "
                            "cifar-10-batches-bin/data_batch_3.bin, "
                            "cifar-10-batches-bin/data_batch_4.bin, "
                            "cifar-10-batches-bin/data_batch_5.bin, "
                            "cifar-10-batches-bin/test_batch.bin")


# ---- the named sets: cache, download through netc.data.download, offline

class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def mirror(tmp_path, c10):
    """A local HTTP server holding a synthetic cifar-10-binary.tar.gz, and that archive's sha256
    put in place of the official one for the test."""
    www = tmp_path / "www" / "cifar10"
    www.mkdir(parents=True)
    archive = tar_gz(c10[0], www / "cifar-10-binary.tar.gz")
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=www.parent))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/{{name}}/", archive
    httpd.shutdown()
    httpd.server_close()


def patch_sha256(monkeypatch, archive: Path) -> None:
    labels = cifar.SETS["cifar10"]
    release = dataclasses.replace(labels.release,
                                  sha256=hashlib.sha256(archive.read_bytes()).hexdigest())
    monkeypatch.setitem(cifar.SETS, "cifar10", dataclasses.replace(labels, release=release))


def test_named_set_downloads_verifies_and_caches(mirror, tmp_path, monkeypatch):
    url, archive = mirror
    patch_sha256(monkeypatch, archive)
    monkeypatch.setenv("NETC_DATA", str(tmp_path / "cache"))
    monkeypatch.setenv("NETC_DATA_MIRRORS", url)
    d = data.load("cifar10")
    assert d.name == "cifar10" and d.classes == CIFAR10_NAMES and len(d.train) == 5 * PER_BATCH
    cache = tmp_path / "cache" / "cifar10"
    assert [p.name for p in cache.iterdir()] == ["cifar-10-binary.tar.gz"]
    assert (cache / "cifar-10-binary.tar.gz").read_bytes() == archive.read_bytes()
    archive.unlink()  # the mirror is gone: the cache serves from now on
    assert np.array_equal(data.load("cifar10", download=False).test.x, d.test.x)


def test_file_url_mirror(mirror, tmp_path, monkeypatch):
    _, archive = mirror
    patch_sha256(monkeypatch, archive)
    monkeypatch.setenv("NETC_DATA", str(tmp_path / "cache"))
    d = data.load("cifar10", mirrors=[archive.parent.as_uri()])
    assert d.test.y.tolist() == [0, 1, 2, 3]


def test_download_with_the_wrong_sha256_leaves_the_cache_empty(mirror, tmp_path, monkeypatch):
    url, _ = mirror  # the official sha256 stays: the synthetic archive does not match it
    monkeypatch.setenv("NETC_DATA", str(tmp_path / "cache"))
    with pytest.raises(DataError) as e:
        data.load("cifar10", mirrors=[url.replace("{name}", "cifar10")])
    assert "does not match the expected " + cifar.CIFAR10.sha256 in e.value.message
    assert list((tmp_path / "cache" / "cifar10").iterdir()) == []


def test_offline_and_extracted_folder_in_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NETC_DATA", str(tmp_path))
    assert one_line_error(data.load, "cifar100-coarse", download=False).startswith(
        f"cifar100-coarse is not in {tmp_path / 'cifar100'} and downloading is off")
    write_cifar100(tmp_path / "cifar100" / "cifar-100-binary")
    d = data.load("cifar100-coarse", download=False)
    assert d.name == "cifar100-coarse" and len(d.classes) == 20 and len(d.train) == 12


# ---- end to end: classes told apart by colour, names in eval's confusion matrix

SPEC = """network tiny
input 3x32x32
avgpool(8) - softmax(10)
"""


def test_train_and_eval_on_a_cifar10_format_set(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("NETC_CFLAGS", "-O1")
    rng = np.random.default_rng(2)
    folder = tmp_path / "cifar-10-batches-bin"
    write_cifar10(folder, rng, per_batch=60)
    palette = rng.integers(30, 226, (10, 3))  # one colour per class, plus noise
    for f in folder.glob("*.bin"):
        recs = np.fromfile(f, np.uint8).reshape(-1, 3073)
        colour = np.repeat(palette[recs[:, 0]], 1024, axis=1)
        recs[:, 1:] = np.clip(colour + rng.integers(-25, 26, colour.shape), 0, 255)
        recs.tofile(f)
    (tmp_path / "tiny.net").write_text(SPEC)
    code = main(["train", str(tmp_path / "tiny.net"), "--data", str(folder), "--epochs", "8",
                 "--out", str(tmp_path / "run"), "--optimizer", "adam", "--lr", "0.01"])
    out, err = capsys.readouterr()
    assert code == 0, err
    (result,) = [line for line in out.splitlines() if line.startswith("test accuracy")]
    accuracy = float(result.split()[2].rstrip("%"))
    assert accuracy > 60, out  # chance is 10%
    code = main(["eval", str(tmp_path / "tiny.net"), str(tmp_path / "run" / "checkpoint.npz")])
    out, err = capsys.readouterr()
    assert code == 0, err
    rows = out.splitlines()[-10:]
    assert [r.split()[:2] for r in rows] == [[str(i), n] for i, n in enumerate(CIFAR10_NAMES)]
