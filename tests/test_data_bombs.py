"""Decompression bombs and lying headers (issue 9): each bomb is built here, small on disk, and
loaded in a child process limited to 1 GiB of address space, which must end with netc's one-line
error, not a MemoryError, a traceback or a hang."""
import gzip
import io
import os
import resource
import struct
import subprocess
import sys
import zipfile
import zlib

import numpy as np
import pytest

from netc.data.idx import write_idx

LIMIT = 1 << 30
MIB = 1 << 20
TINY = "network tiny\ninput 1\nsoftmax(2)\n"


def limited(*argv, cwd=None, timeout=120) -> subprocess.CompletedProcess:
    """`python argv...` in a child whose address space is capped at LIMIT."""
    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (LIMIT, LIMIT))
    return subprocess.run([sys.executable, *argv], preexec_fn=cap, capture_output=True,
                          text=True, cwd=cwd, timeout=timeout)


def netc(tmp_path, *argv) -> subprocess.CompletedProcess:
    return limited("-m", "netc", *map(str, argv), cwd=tmp_path)


def api(code: str, timeout=120) -> subprocess.CompletedProcess:
    """One line of Python run under the cap; a NetcError is printed as the CLI prints it."""
    return limited("-c", "import sys\nfrom netc.errors import NetcError\ntry:\n    " + code
                   + "\nexcept NetcError as e:\n    print(e.format(), file=sys.stderr)\n"
                   "    sys.exit(e.exit_code)\n", timeout=timeout)


def assert_one_error(result: subprocess.CompletedProcess, words: str) -> None:
    """Exit code 4 and one `error:` line (progress lines such as `compiling ...` may come first,
    a `hint:` line after), no traceback."""
    assert result.returncode == 4, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and words in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr and "MemoryError" not in result.stderr


def deflated_zeros(size: int) -> tuple[bytes, int, int]:
    """(raw deflate stream, adler32, crc32) of `size` zero bytes, built without holding them:
    after a full flush deflate starts afresh, so every MiB compresses to the same bytes."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    zeros, tail = bytes(MIB), bytes(size % MIB)
    unit = deflate.compress(zeros) + deflate.flush(zlib.Z_FULL_FLUSH)
    adler, crc = zlib.adler32(tail), zlib.crc32(tail)
    for _ in range(size // MIB):
        adler, crc = zlib.adler32(zeros, adler), zlib.crc32(zeros, crc)
    return unit * (size // MIB) + deflate.compress(tail) + deflate.flush(), adler, crc


def zlib_zeros(size: int) -> bytes:
    raw, adler, _ = deflated_zeros(size)
    return b"\x78\xda" + raw + adler.to_bytes(4, "big")


def gzip_zeros(size: int) -> bytes:
    raw, _, crc = deflated_zeros(size)
    return (b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + raw
            + struct.pack("<II", crc, size & 0xFFFFFFFF))


def png(width: int, height: int, idat: bytes) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(
            ">I", zlib.crc32(kind + body))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0,
                                                                0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def test_png_declaring_20000x20000_is_refused_from_its_header(tmp_path):
    # A valid black image: 20000 rows of a filter byte and 20000 zero pixels, 400 MB inflated.
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png(20000, 20000, zlib_zeros(20000 * 20001)))
    assert bomb.stat().st_size < 500_000
    assert_one_error(api(f"from netc.data import load_image; load_image({str(bomb)!r})"),
                     "a 1x20000x20000 image is larger than netc reads")


def test_png_whose_data_inflates_past_its_header_stops_early(tmp_path):
    bomb = tmp_path / "small-header.png"
    bomb.write_bytes(png(8, 8, zlib_zeros(1 << 30)))  # 8x8 declared, 1 GiB of image data
    assert_one_error(api(f"from netc.data import load_image; load_image({str(bomb)!r})"),
                     "PNG image data holds more than the 72 bytes expected for 8x8")


def test_predict_refuses_a_png_bomb(tmp_path):
    from netc.cli import main
    (tmp_path / "tiny.net").write_text("network tiny\ninput 1x8x8\nsoftmax(2)\n")
    np.savez(tmp_path / "four.npz", x=np.arange(256, dtype=np.uint8).reshape(4, 8, 8),
             y=[0, 1, 0, 1])
    assert main(["train", str(tmp_path / "tiny.net"), "--data", str(tmp_path / "four.npz"),
                 "--epochs", "1", "--val-split", "0", "--out", str(tmp_path / "run")]) == 0
    (tmp_path / "bomb.png").write_bytes(png(30000, 30000, zlib_zeros(30000 * 30001)))
    result = netc(tmp_path, "predict", "tiny.net", tmp_path / "run" / "checkpoint.npz",
                  tmp_path / "bomb.png")
    assert_one_error(result, "a 1x30000x30000 image is larger than netc reads")


def test_idx_gz_with_a_gib_of_trailing_zeros_is_refused_without_inflating_it(tmp_path):
    folder = tmp_path / "digits"
    folder.mkdir()
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.arange(10) % 2)
    head = gzip.compress(b"\x00\x00\x08\x03" + struct.pack(">III", 10, 28, 28) + bytes(7840))
    (folder / "train-images-idx3-ubyte.gz").write_bytes(head + gzip_zeros(1 << 30))
    (tmp_path / "tiny.net").write_text(TINY)
    result = netc(tmp_path, "train", "tiny.net", "--data", folder)
    assert_one_error(result, f"more than {MIB} unexpected bytes after 10 records")


def npy_header(descr: str, shape: tuple[int, ...]) -> bytes:
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, {"descr": descr, "fortran_order": False,
                                               "shape": shape})
    return out.getvalue()


@pytest.mark.parametrize("shape, words", [
    ((1 << 40,), "declares a float64 array of shape (1099511627776,), 8,796,093,022,208 bytes; "
                 "netc reads at most 4,294,967,296"),
    ((1 << 29,), "the header declares float64 (536870912,) but the entry holds 64 bytes"),
])
def test_npz_member_declaring_a_huge_array_is_refused(tmp_path, shape, words):
    bomb = tmp_path / "bomb.npz"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("x.npy", npy_header("<f8", shape) + bytes(64))
        buffer = io.BytesIO()
        np.save(buffer, np.zeros(8, np.int64))
        z.writestr("y.npy", buffer.getvalue())
    (tmp_path / "tiny.net").write_text(TINY)
    assert_one_error(netc(tmp_path, "train", "tiny.net", "--data", bomb), f"'x': {words}")


@pytest.mark.parametrize("kind", ["csv", "npz"])
def test_one_huge_label_costs_nothing_before_the_network_refuses_it(tmp_path, kind):
    path = tmp_path / f"labels.{kind}"
    if kind == "csv":
        path.write_text("100000000,0.5\n0,0.25\n")
    else:
        np.savez(path, x=np.array([[0.5], [0.25]]), y=np.array([10 ** 8, 0]))
    (tmp_path / "tiny.net").write_text(TINY)
    assert_one_error(netc(tmp_path, "train", "tiny.net", "--data", path), "class 100000000")


def test_npy_image_declaring_2_to_the_40_values_is_refused(tmp_path):
    bomb = tmp_path / "bomb.npy"
    bomb.write_bytes(npy_header("|u1", (1 << 20, 1 << 20)) + bytes(64))
    assert_one_error(api(f"from netc.data import load_image; load_image({str(bomb)!r})"),
                     "declares a uint8 array of shape (1048576, 1048576)")


def test_dev_zero_as_an_image_is_refused(tmp_path):
    (tmp_path / "zero.png").symlink_to("/dev/zero")
    result = api(f"from netc.data import load_image; load_image({str(tmp_path / 'zero.png')!r})")
    assert_one_error(result, "it is a character device, not a regular file")


@pytest.mark.parametrize("name, call", [
    ("in.png", "from netc.data import load_image as f"),
    ("in.csv", "from netc.data import load_csv as f"),
    ("in.npz", "from netc.data import load_npz as f"),
    ("train-images-idx3-ubyte", "from netc.data.idx import read_images as f"),
])
def test_a_fifo_is_refused_at_once(tmp_path, name, call):
    os.mkfifo(tmp_path / name)
    result = api(f"{call}; f({str(tmp_path / name)!r})", timeout=15)
    assert_one_error(result, "it is a FIFO (named pipe), not a regular file")
