"""Image folders as data sets: DIR/<class>/<image> and DIR/train|test/<class>/<image>, the formats
load_image reads, one size for all, how load() tells them from CSV and IDX folders, and
`netc train` / `netc eval` end to end."""
import shutil

import numpy as np
import pytest

from netc import data
from netc.cli import main
from netc.errors import DataError


def pgm(path, pixels: np.ndarray) -> None:
    h, w = pixels.shape
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"P5\n%d %d\n255\n" % (w, h) + pixels.astype(np.uint8).tobytes())


def make_folder(root, counts=None, size=(6, 5)):
    """Class c's images are uniformly c * 40 + k; returns the folder."""
    for c, name in enumerate(("cat", "ant", "bee")):
        for k in range((counts or {}).get(name, 3)):
            pgm(root / name / f"{k:02d}.pgm", np.full(size, c * 40 + k))
    return root


def one_line_error(call, *args) -> str:
    with pytest.raises(DataError) as e:
        call(*args)
    assert "\n" not in e.value.message
    return e.value.message


def test_classes_are_sorted_folder_names_and_images_load_in_order(tmp_path):
    d = data.load(make_folder(tmp_path / "pets"))
    assert d.name == "pets" and d.classes == ("ant", "bee", "cat") and d.test is None
    assert d.train.x.shape == (9, 1, 6, 5) and d.train.y.tolist() == [0] * 3 + [1] * 3 + [2] * 3
    # ant was written as class 1 (pixels 40 + k), bee as 2, cat as 0
    assert np.allclose(d.train.x[:, 0, 0, 0] * 255, [40, 41, 42, 80, 81, 82, 0, 1, 2])


def test_png_pgm_and_npy_together(tmp_path):
    root = make_folder(tmp_path / "mixed")
    np.save(root / "ant" / "x.npy", np.full((6, 5), 255, np.uint8))
    d = data.load(root)
    assert len(d.train) == 10 and d.train.x[3].min() == 1.0  # ant's files: 00, 01, 02, x


def test_train_and_test_folders_give_a_test_split(tmp_path):
    make_folder(tmp_path / "set" / "train")
    pgm(tmp_path / "set" / "test" / "cat" / "t.pgm", np.full((6, 5), 7))
    pgm(tmp_path / "set" / "test" / "bee" / "t.pgm", np.full((6, 5), 9))
    d = data.load(tmp_path / "set")
    assert d.name == "set" and d.classes == ("ant", "bee", "cat") and len(d.train) == 9
    assert d.test.y.tolist() == [1, 2]  # bee, cat: labels follow the training classes
    assert np.allclose(d.test.x[:, 0, 0, 0] * 255, [9, 7])


def test_an_odd_size_names_both_files_and_shapes(tmp_path):
    root = make_folder(tmp_path / "odd")
    pgm(root / "bee" / "03.pgm", np.zeros((6, 6)))
    assert one_line_error(data.load, root) == (
        f"{root / 'bee' / '03.pgm'}: a 1x6x6 image, but {root / 'ant' / '00.pgm'} is 1x6x5")


def test_test_split_of_another_size_is_refused(tmp_path):
    make_folder(tmp_path / "set" / "train")
    pgm(tmp_path / "set" / "test" / "cat" / "t.pgm", np.zeros((4, 4)))
    assert "a 1x4x4 image, but" in one_line_error(data.load, tmp_path / "set")


@pytest.mark.parametrize("breakage, message", [
    (lambda r: (r / "bee" / "notes.txt").write_text("x"), "unsupported image type .txt"),
    (lambda r: (r / "bee" / "deeper").mkdir(), "holds the folder 'deeper'"),
    (lambda r: shutil.rmtree(r / "bee") or (r / "bee").mkdir(), "an empty class folder"),
    (lambda r: (r / "bee" / "00.pgm").write_bytes(b"P5\n5 6\n255\n"), "truncated PGM"),
])
def test_bad_class_folders_are_refused(tmp_path, breakage, message):
    root = make_folder(tmp_path / "bad")
    breakage(root)
    assert message in one_line_error(data.load, root)


def test_unknown_test_class_is_refused(tmp_path):
    make_folder(tmp_path / "set" / "train")
    pgm(tmp_path / "set" / "test" / "dog" / "t.pgm", np.zeros((6, 5)))
    assert "class folder 'dog' is not in" in one_line_error(data.load, tmp_path / "set")


def test_hidden_entries_are_ignored(tmp_path):
    root = make_folder(tmp_path / "h")
    (root / ".cache").mkdir()
    (root / "ant" / ".DS_Store").write_bytes(b"\0")
    assert data.load(root).classes == ("ant", "bee", "cat")


def test_csv_and_idx_folders_keep_their_meaning(tmp_path):
    root = make_folder(tmp_path / "both")
    (root / "train.csv").write_text("0,1\n1,2\n")
    assert data.load(root).train.x.shape == (2, 1)  # CSV wins over class folders
    (root / "train.csv").unlink()
    (root / "train-images-idx3-ubyte").write_bytes(b"")
    with pytest.raises(DataError, match="missing train-labels-idx1-ubyte"):
        data.load(root)  # IDX files make it an IDX folder


SPEC = """network blobs
input 1x8x8
fc(3)
"""


def test_train_and_eval_on_an_image_folder(tmp_path, capsys, monkeypatch):
    """Three classes: a bright left half, a bright right half, a bright top half."""
    monkeypatch.setenv("NETC_CFLAGS", "-O1")
    rng = np.random.default_rng(0)
    masks = {"left": np.s_[:, :4], "right": np.s_[:, 4:], "top": np.s_[:4, :]}
    for split, count in (("train", 40), ("test", 10)):
        for name, mask in masks.items():
            for k in range(count):
                image = rng.integers(0, 60, (8, 8))
                image[mask] += 150
                pgm(tmp_path / "shapes" / split / name / f"{k}.pgm", image)
    (tmp_path / "blobs.net").write_text(SPEC)
    code = main(["train", str(tmp_path / "blobs.net"), "--data", str(tmp_path / "shapes"),
                 "--epochs", "10", "--val-split", "0.25", "--out", str(tmp_path / "run")])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "90 train, 30 validation, 30 test" in out.splitlines()[0]
    (result,) = [line for line in out.splitlines() if line.startswith("test accuracy")]
    assert float(result.split()[2].rstrip("%")) > 80, out  # chance is 33%
    code = main(["eval", str(tmp_path / "blobs.net"), str(tmp_path / "run" / "checkpoint.npz")])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert [r.split()[:2] for r in out.splitlines()[-3:]] == [["0", "left"], ["1", "right"],
                                                              ["2", "top"]]
