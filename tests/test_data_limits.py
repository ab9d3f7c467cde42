"""Sizes checked from headers before anything is read (issues 9 and 10): IDX dimensions, image
sizes against the network's input, P2 token counts, class names, the CSV folder's name."""
import gzip
import struct
import zlib

import numpy as np
import pytest

from netc.data import dataset, load, load_image
from netc.data.idx import read_images
from netc.errors import DataError

HUGE_DIMS = struct.pack(">III", 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF)


def test_idx_dimensions_whose_product_overflows_int64_are_reported_exactly(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(b"\x00\x00\x08\x03" + HUGE_DIMS + bytes(10))
    with pytest.raises(DataError, match=f"promises 4294967295 records \\({0xFFFFFFFF ** 3} "
                                        f"bytes\\) but only 10 bytes follow"):
        read_images(path)


def test_gzipped_idx_declaring_more_than_netc_reads_is_refused_from_its_header(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(b"\x00\x00\x08\x03" + HUGE_DIMS + bytes(10)))
    with pytest.raises(DataError, match=f"declares \\(4294967295, 4294967295, 4294967295\\), "
                                        f"{0xFFFFFFFF ** 3:,} bytes; netc reads at most "
                                        f"4,294,967,296"):
        read_images(path)


def png(width: int, height: int, pixels: bytes) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(
            ">I", zlib.crc32(kind + body))
    rows = b"".join(b"\x00" + pixels[r * width:(r + 1) * width] for r in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0,
                                                                0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("name", ["big.png", "big.pgm", "big.npy"])
def test_an_image_larger_than_the_input_is_refused_from_its_header(tmp_path, name):
    path = tmp_path / name
    if name.endswith(".png"):
        path.write_bytes(png(40, 30, bytes(1200)))
    elif name.endswith(".pgm"):
        path.write_bytes(b"P5\n40 30\n255\n" + bytes(1200))
    else:
        np.save(path, np.zeros((30, 40), np.uint8))
    assert load_image(path, max_values=1200).shape == (1, 30, 40)
    with pytest.raises(DataError, match="a 1x30x40 image has 1,200 values, more than the 784 of "
                                        "the network's input") as e:
        load_image(path, max_values=784)
    assert "does not resize" in e.value.hint


@pytest.mark.parametrize("name, data", [
    ("huge.pgm", b"P5\n20000 20000\n255\n\x00"),
    ("huge.png", png(20000, 20000, b"")[:33] + png(1, 1, b"\x00")[33:]),
])
def test_an_image_declaring_more_than_netc_reads_is_refused_from_its_header(tmp_path, name,
                                                                           data):
    (tmp_path / name).write_bytes(data)
    with pytest.raises(DataError, match="a 1x20000x20000 image is larger than netc reads "
                                        "\\(400,000,000 samples, at most 16,777,216\\)"):
        load_image(tmp_path / name)


def test_npy_image_whose_header_disagrees_with_the_file_is_refused(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((2, 2), np.uint8))
    (tmp_path / "a.npy").write_bytes((tmp_path / "a.npy").read_bytes()[:-1])
    with pytest.raises(DataError, match=r"declares uint8 \(2, 2\) \(132 bytes with the header\) "
                                        r"but the file has 131"):
        load_image(tmp_path / "a.npy")


def test_p2_with_more_tokens_than_pixels_stops_counting(tmp_path):
    (tmp_path / "a.pgm").write_bytes(b"P2\n2 2\n255\n" + b"0 " * 100_000)
    with pytest.raises(DataError, match="needs 4 decimal samples, found more than 4 tokens"):
        load_image(tmp_path / "a.pgm")


def test_p2_sample_too_long_for_any_maxval(tmp_path):
    (tmp_path / "a.pgm").write_bytes(b"P2\n1 1\n255\n" + b"9" * 5000 + b"\n")
    with pytest.raises(DataError, match="PGM sample 99999999999999999999 exceeds maxval 255"):
        load_image(tmp_path / "a.pgm")


def test_numbered_classes_cost_nothing_until_used():
    classes = dataset.NumberedClasses(10 ** 12)
    assert len(classes) == 10 ** 12 and classes[-1] == str(10 ** 12 - 1)
    assert classes[2:4] == ("2", "3") and dataset.NumberedClasses(3) == ("0", "1", "2")
    assert dataset.NumberedClasses(3) != ("0", "1")
    assert list(dataset.NumberedClasses(2)) == ["0", "1"]


def test_csv_labels_name_classes_lazily(tmp_path):
    (tmp_path / "t.csv").write_text("7,0.5\n0,0.25\n")
    d = load(tmp_path / "t.csv")
    assert isinstance(d.classes, dataset.NumberedClasses) and d.num_classes == 8


def test_a_csv_folder_is_named_after_the_folder(tmp_path):
    folder = tmp_path / "my-digits"
    folder.mkdir()
    (folder / "train.csv").write_text("0,1\n1,2\n")
    assert load(folder).name == "my-digits"
    assert load(folder / "train.csv").name == "train"


@pytest.mark.parametrize("label", [1e19, 2**63, 2**64 - 1])
def test_a_label_beyond_int64_is_refused_not_wrapped(tmp_path, label):
    """astype(int64) turned 1e19 into -9223372036854775808, after a numpy RuntimeWarning."""
    y = np.array([0, 1, label], np.float64 if isinstance(label, float) else np.uint64)
    np.savez(tmp_path / "big.npz", x=np.zeros((3, 4), np.float32), y=y)
    with pytest.raises(DataError, match=r"holds the label .*, beyond any network's outputs"):
        load(tmp_path / "big.npz")


def test_an_empty_data_name_is_not_the_current_folder():
    with pytest.raises(DataError, match="no data set given"):
        load("")
