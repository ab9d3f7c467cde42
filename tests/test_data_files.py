"""Generic .npz and CSV data sets: what they load as, and the errors for bad ones."""
import numpy as np
import pytest

from netc.data import load, load_csv, load_npz
from netc.errors import DataError


def npz(tmp_path, **arrays):
    path = tmp_path / "set.npz"
    np.savez(path, **arrays)
    return path


def test_npz_features_and_test_split(tmp_path):
    x = np.arange(12, dtype=np.float64).reshape(6, 2)
    d = load(npz(tmp_path, x=x, y=[0, 1, 2, 0, 1, 2], x_test=x[:2], y_test=[1, 1]))
    assert d.name == "set" and d.classes == ("0", "1", "2")
    assert d.train.x.dtype == np.float32 and d.train.x[5].tolist() == [10, 11]
    assert d.train.y.dtype == np.int64 and d.test.y.tolist() == [1, 1]


def test_npz_uint8_images_get_a_channel_and_are_scaled(tmp_path):
    x = np.full((3, 5, 4), 51, dtype=np.uint8)
    d = load_npz(npz(tmp_path, x=x, y=np.array([0.0, 1.0, 0.0])))
    assert d.train.x.shape == (3, 1, 5, 4) and d.test is None
    assert d.train.x[0, 0, 0, 0] == np.float32(0.2)
    assert d.train.y.tolist() == [0, 1, 0]


@pytest.mark.parametrize("arrays, words", [
    ({"x": np.zeros((2, 3))}, "has arrays ['x']"),
    ({"x": np.zeros((2, 3)), "y": [0, 1], "x_test": np.zeros((1, 3))}, "has arrays"),
    ({"x": np.zeros((2, 3)), "y": [0, 1, 1]}, "'y' must have shape (2,) to match the inputs"),
    ({"x": np.zeros(3), "y": [0, 1, 1]}, "'x' must be a non-empty numeric array"),
    ({"x": np.array([["a"], ["b"]]), "y": [0, 1]}, "'x' must be a non-empty numeric array"),
    ({"x": np.array([[0.0], [np.nan]]), "y": [0, 1]}, "1 NaN or infinite values (first in "
                                                      "sample 1)"),
    ({"x": np.zeros((2, 3)), "y": [0.5, 1]}, "'y' must hold whole-number class labels"),
    ({"x": np.zeros((2, 3)), "y": [0, -1]}, "'y' holds the negative label -1"),
    ({"x": np.zeros((2, 3)), "y": [0, 1], "x_test": np.zeros((1, 4)), "y_test": [0]},
     "'x_test' samples have shape (4,) but 'x' samples (3,)"),
])
def test_npz_errors(tmp_path, arrays, words):
    path = npz(tmp_path, **arrays)
    with pytest.raises(DataError) as e:
        load(path)
    assert str(path) in e.value.message and words in e.value.message


def test_npz_not_an_archive(tmp_path):
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 nope")
    with pytest.raises(DataError, match="not a readable .npz archive"):
        load(tmp_path / "bad.npz")


def test_csv_with_header(tmp_path):
    (tmp_path / "t.csv").write_text("label,a,b\n1,0.5,2\n0,3,4\n\n2,5,6\n")
    d = load(tmp_path / "t.csv")
    assert d.train.x.tolist() == [[0.5, 2], [3, 4], [5, 6]] and d.train.y.tolist() == [1, 0, 2]
    assert d.test is None and d.classes == ("0", "1", "2")


def test_csv_folder_with_train_and_test(tmp_path):
    (tmp_path / "train.csv").write_text("0,1,2\n1,3,4\n")
    (tmp_path / "test.csv").write_text("1,5,6\n")
    d = load(tmp_path)
    assert d.train.x.shape == (2, 2) and d.test.x.tolist() == [[5, 6]]
    assert d.reshaped((1, 2, 1)).train.x.shape == (2, 1, 2, 1)


@pytest.mark.parametrize("text, words", [
    ("a,b\n0,1\n1,2,3\n", "t.csv:3: 3 columns, expected 2"),
    ("0,1\n1,x\n", "t.csv:2: not a number: 'x'"),
    ("0,1\n1,nan\n", "1 NaN or infinite values (first in sample 1)"),
    ("0.5,1\n", "'label column' must hold whole-number class labels"),
    ("0\n1\n", "each row needs a label and at least one feature"),
    ("a,b\n", "no data rows"),
])
def test_csv_errors(tmp_path, text, words):
    (tmp_path / "t.csv").write_text(text)
    with pytest.raises(DataError) as e:
        load_csv(tmp_path / "t.csv")
    assert words in e.value.message


def test_csv_test_width_must_match(tmp_path):
    (tmp_path / "a.csv").write_text("0,1,2\n")
    (tmp_path / "b.csv").write_text("0,1\n")
    with pytest.raises(DataError, match="1 features per row but .* has 2"):
        load_csv(tmp_path / "a.csv", tmp_path / "b.csv")
