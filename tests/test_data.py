"""IDX reading, the shipped MNIST subset, the real data sets, and the Dataset/Split helpers."""
import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest

from netc.data import DEFAULT, Split, load, load_idx_dir, validation_split, xor
from netc.data.idx import read_images, read_labels, write_idx
from netc.data.mnist import FILES, PACKAGED, REMOTE
from netc.errors import DataError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(),
                                  reason=f"the full data sets are not at {SHARED}")


def make_idx_dir(folder: Path, n_train=5, n_test=3, gz=True) -> Path:
    """A tiny MNIST-style folder: image i is filled with the value i, label i % 10."""
    folder.mkdir(parents=True, exist_ok=True)
    sfx = ".gz" if gz else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = np.arange(n, dtype=np.uint8)[:, None, None] * np.ones((1, 28, 28), np.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte{sfx}", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{sfx}", np.arange(n) % 10)
    return folder


# --- IDX files -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["a.idx", "a.idx.gz"])
def test_idx_round_trip(tmp_path, name):
    images = np.random.default_rng(0).integers(0, 256, (7, 4, 3), dtype=np.uint8)
    write_idx(tmp_path / name, images)
    back = read_images(tmp_path / name)
    assert back.dtype == np.uint8 and back.shape == (7, 4, 3)
    assert np.array_equal(back, images)
    raw = (tmp_path / name).read_bytes()
    assert raw[:2] == (b"\x1f\x8b" if name.endswith(".gz") else b"\x00\x00")


def test_idx_header_bytes(tmp_path):
    write_idx(tmp_path / "l", np.array([3, 1, 4], np.uint8))
    assert (tmp_path / "l").read_bytes() == bytes.fromhex("00000801 00000003 030104")
    assert read_labels(tmp_path / "l").tolist() == [3, 1, 4]


def corrupt(tmp_path, kind):
    good = bytes.fromhex("00000803 00000002 00000002 00000002") + bytes(range(8))
    data = {"truncated": good[:-3], "short header": good[:10], "trailing": good + b"\x00",
            "wrong magic": bytes.fromhex("00000801") + good[4:],
            "zero dim": bytes.fromhex("00000803 00000002 00000000 00000002"),
            "bad gzip": gzip.compress(good)[:-12], "gzip crc": gzip.compress(good)[:-8] + b"1234"
            + gzip.compress(good)[-4:]}[kind]
    path = tmp_path / f"{kind.replace(' ', '_')}-images-idx3-ubyte.gz"
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("kind, words", [
    ("truncated", "truncated: the header promises 2 records (8 bytes) but only 5 bytes follow"),
    ("short header", "truncated IDX header (10 bytes, need 16)"),
    ("trailing", "1 unexpected bytes after 2 records"),
    ("wrong magic", "wrong IDX magic number 0x00000801, expected 0x00000803"),
    ("zero dim", "include a zero"),
    ("bad gzip", "corrupt or truncated gzip data"),
    ("gzip crc", "corrupt or truncated gzip data"),
])
def test_idx_corrupt_files_name_the_file(tmp_path, kind, words):
    path = corrupt(tmp_path, kind)
    with pytest.raises(DataError) as e:
        read_images(path)
    assert str(path) in e.value.message and words in e.value.message


def test_idx_missing_file(tmp_path):
    with pytest.raises(DataError, match="cannot read"):
        read_labels(tmp_path / "nope")


def test_idx_dir_count_mismatch(tmp_path):
    folder = make_idx_dir(tmp_path / "d")
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.zeros(4, np.uint8))
    with pytest.raises(DataError, match="holds 3 images but .* holds 4 labels"):
        load_idx_dir(folder)


def test_idx_dir_missing_files(tmp_path):
    folder = make_idx_dir(tmp_path / "d")
    (folder / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"missing train-labels-idx1-ubyte\[\.gz\]"):
        load(folder)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_dir_loads_as_float_images(tmp_path, gz):
    d = load(make_idx_dir(tmp_path / "digits", gz=gz))
    assert d.name == "digits" and d.classes == tuple("0123456789")
    assert d.train.x.shape == (5, 1, 28, 28) and d.train.x.dtype == np.float32
    assert d.train.y.dtype == np.int64 and d.train.y.tolist() == [0, 1, 2, 3, 4]
    assert d.train.x[4, 0, 27, 27] == np.float32(4 / 255)
    assert len(d.test) == 3


def test_idx_dir_without_test_split(tmp_path):
    folder = make_idx_dir(tmp_path / "d")
    for f in folder.glob("t10k*"):
        f.unlink()
    assert load(folder).test is None


def test_idx_dir_dotted_names(tmp_path):
    folder = make_idx_dir(tmp_path / "d", gz=False)
    for f in list(folder.iterdir()):
        f.rename(folder / f.name.replace("-idx", ".idx"))
    assert len(load(folder).train) == 5


# --- the shipped subset and the real data sets ---------------------------------------------------

def test_shipped_subset():
    d = load()
    assert DEFAULT == "mnist-10k" and d.name == "mnist-10k"
    assert d.train.x.shape == (10000, 1, 28, 28) and d.test.x.shape == (10000, 1, 28, 28)
    assert d.train.y[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert np.bincount(d.train.y).tolist() == [1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944,
                                               978]
    assert np.bincount(d.test.y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974,
                                              1009]
    assert d.train.x.min() == 0 and d.train.x.max() == 1
    assert round(float(d.test.x.mean(dtype=np.float64)) * 255, 4) == 33.7912


def test_shipped_subset_size():
    sizes = {f: (PACKAGED / "mnist-10k" / (f + ".gz")).stat().st_size for f in FILES}
    assert sizes["t10k-images-idx3-ubyte"] == 1648877
    assert sizes["t10k-labels-idx1-ubyte"] == 4542
    assert sum(sizes.values()) < 3_600_000


@needs_shared
def test_shipped_subset_is_the_first_10000_of_mnist():
    ours, real = PACKAGED / "mnist-10k", SHARED / "mnist"
    assert np.array_equal(read_images(ours / "train-images-idx3-ubyte.gz"),
                          read_images(real / "train-images-idx3-ubyte.gz")[:10000])
    assert np.array_equal(read_labels(ours / "train-labels-idx1-ubyte.gz"),
                          read_labels(real / "train-labels-idx1-ubyte.gz")[:10000])
    for f in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        assert (ours / f).read_bytes() == (real / f).read_bytes()


@needs_shared
@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_embedded_checksums_match_the_real_files(name):
    got = tuple(hashlib.sha256((SHARED / name / (f + ".gz")).read_bytes()).hexdigest()
                for f in FILES)
    assert got == REMOTE[name].sha256


@needs_shared
def test_full_mnist():
    d = load(SHARED / "mnist")
    assert d.train.x.shape == (60000, 1, 28, 28) and len(d.test) == 10000
    assert np.bincount(d.train.y).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265,
                                               5851, 5949]
    assert np.bincount(d.test.y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974,
                                              1009]
    assert round(float(d.train.x.mean(dtype=np.float64)) * 255, 4) == 33.3184
    assert d.train.y[:16].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4, 3, 5, 3, 6, 1, 7]


@needs_shared
def test_full_fashion_mnist_by_name_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NETC_DATA", str(tmp_path))
    cache = tmp_path / "fashion-mnist"
    cache.mkdir()
    for f in FILES:
        (cache / (f + ".gz")).symlink_to(SHARED / "fashion-mnist" / (f + ".gz"))
    d = load("fashion-mnist", download=False)
    assert np.bincount(d.train.y).tolist() == [6000] * 10
    assert np.bincount(d.test.y).tolist() == [1000] * 10
    assert round(float(d.train.x.mean(dtype=np.float64)) * 255, 4) == 72.9404
    assert d.train.y[:16].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5, 0, 9, 5, 5, 7, 9]
    assert d.classes[0] == "T-shirt/top" and d.classes[9] == "Ankle boot"


def test_cache_dir_lookup(monkeypatch, tmp_path):
    from netc.data import cache_dir
    monkeypatch.setenv("NETC_DATA", str(tmp_path / "a"))
    assert cache_dir("mnist") == tmp_path / "a" / "mnist"
    monkeypatch.delenv("NETC_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert cache_dir("mnist") == tmp_path / "x" / "netc" / "datasets" / "mnist"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "h"))
    assert cache_dir("fashion-mnist") == tmp_path / "h" / ".cache" / "netc" / "datasets" / \
        "fashion-mnist"


def test_unknown_source():
    with pytest.raises(DataError, match="no data set 'nosuch'") as e:
        load("nosuch")
    assert "mnist-10k" in e.value.hint


# --- Split, Dataset, XOR -------------------------------------------------------------------------

def ramp(n=10):
    return Split(np.arange(n, dtype=np.float32)[:, None], np.arange(n) % 3)


def test_batches_in_order_keep_the_last_partial_batch():
    sizes = [len(y) for _, y in ramp().batches(4)]
    assert sizes == [4, 4, 2]
    assert np.concatenate([x[:, 0] for x, _ in ramp().batches(4)]).tolist() == list(range(10))


def test_batches_seeded_shuffle_is_reproducible_and_a_permutation():
    a = [y.tolist() for _, y in ramp().batches(3, seed=(7, 0))]
    b = [y.tolist() for _, y in ramp().batches(3, seed=(7, 0))]
    c = [y.tolist() for _, y in ramp().batches(3, seed=(7, 1))]
    assert a == b and a != c and [len(y) for y in a] == [3, 3, 3, 1]
    xs = np.concatenate([x[:, 0] for x, _ in ramp().batches(3, seed=7)])
    assert sorted(xs.tolist()) == list(range(10)) and xs.tolist() != list(range(10))
    for x, y in ramp().batches(3, seed=7):
        assert (x[:, 0].astype(int) % 3 == y).all()  # samples stay paired with their labels


def test_validation_split_is_seeded_disjoint_and_ordered():
    train, val = validation_split(ramp(), 0.3, seed=0)
    assert len(train) == 7 and len(val) == 3
    t, v = train.x[:, 0].tolist(), val.x[:, 0].tolist()
    assert sorted(t + v) == list(range(10)) and t == sorted(t) and v == sorted(v)
    assert validation_split(ramp(), 0.3, seed=0)[1].x[:, 0].tolist() == v
    assert any(validation_split(ramp(), 0.3, seed=s)[1].x[:, 0].tolist() != v for s in (1, 2))


@pytest.mark.parametrize("fraction", [0.0, 1.0, 0.01])
def test_validation_split_refuses_empty_parts(fraction):
    with pytest.raises(DataError, match="empty part"):
        validation_split(ramp(), fraction, seed=0)


def test_split_checks_lengths():
    with pytest.raises(DataError, match="inconsistent split"):
        Split(np.zeros((3, 2)), np.zeros(4, np.int64))


def test_reshaped():
    d = xor().reshaped((1, 2, 1))
    assert d.train.x.shape == (4, 1, 2, 1) and d.test.x.shape == (4, 1, 2, 1)
    with pytest.raises(DataError, match="cannot be reshaped"):
        xor().reshaped((3,))


def test_xor():
    d = load("xor")
    assert d.train.x.tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]
    assert d.train.y.tolist() == [0, 1, 1, 0] and d.num_classes == 2
    s = load("xor-signed")
    assert s.train.x.tolist() == [[-1, -1], [-1, 1], [1, -1], [1, 1]]
    r = xor(signed=True, regression=True)
    assert r.train.y.dtype == np.float32 and r.train.y.tolist() == [[-1], [1], [1], [-1]]
