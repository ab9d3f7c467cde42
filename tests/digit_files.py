"""The shipped digits as the files a user hands netc: an .npz of uint8 images with labels, and
the first test digit (a 7) as one .npy image. Shared by the tests that train through the CLI."""
from pathlib import Path

import numpy as np

from netc import data


def pixels(split: data.Split, n: int) -> np.ndarray:
    """The first n images of a split as uint8 (n, 28, 28), as a digits file stores them."""
    return np.round(split.x[:n, 0] * 255).astype(np.uint8)


def write_digits(folder: Path, train: int, test: int) -> data.Dataset:
    """folder/digits.npz (the first `train` training and `test` test digits) and
    folder/seven.npy; returns the shipped set they came from."""
    d = data.load("mnist-10k")
    np.savez(folder / "digits.npz", x=pixels(d.train, train), y=d.train.y[:train],
             x_test=pixels(d.test, test), y_test=d.test.y[:test])
    np.save(folder / "seven.npy", pixels(d.test, 1)[0])
    return d
