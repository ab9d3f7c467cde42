"""Data for training and evaluation: one entry point, load(), from a name or a path.

Names (checked before paths; write ./mnist for a folder called mnist):
  mnist-10k      the MNIST subset shipped in the package (offline; the default)
  mnist          full MNIST, from the user's cache, downloaded on first use
  fashion-mnist  full Fashion-MNIST, likewise
  cifar10, cifar100, cifar100-coarse  CIFAR-10, CIFAR-100 with its 100 fine or 20 coarse labels,
                 likewise (the official binary .tar.gz)
  xor, xor-signed  the four XOR points, inputs in {0,1}² or {-1,1}²
Paths: a folder holding train.csv (and maybe test.csv); a folder of MNIST-style IDX files; a
CIFAR folder (cifar-10-batches-bin/, cifar-100-binary/) or archive (cifar-10-binary.tar.gz,
cifar-100-binary.tar.gz); a folder of images, one sub-folder per class (maybe under train/ and
test/); a single .npz or .csv file. Only numpy, the standard library and netc.errors are used here.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from netc.errors import DataError

from . import cifar
from .arrays import load_csv, load_npz
from .cifar import load_cifar
from .dataset import Dataset, Split, validation_split
from .folder import is_image_folder, load_image_folder
from .images import load_image
from .mnist import cache_dir, load_idx_dir, load_packaged, load_remote
from .normalize import MODES, Normalizer
from .synthetic import xor

DEFAULT = "mnist-10k"
NAMES = ("mnist-10k", "mnist", "fashion-mnist", *cifar.SETS, "xor", "xor-signed")

__all__ = ["DEFAULT", "MODES", "NAMES", "Dataset", "Normalizer", "Split", "cache_dir", "load",
           "load_cifar", "load_csv", "load_idx_dir", "load_image", "load_image_folder",
           "load_npz", "validation_split", "xor"]


def load(source: str | os.PathLike = DEFAULT, *, download: bool = True,
         mirrors: Sequence[str] | None = None) -> Dataset:
    """The data set a name or path refers to (see the module docstring).

    download=False never touches the network; mirrors overrides the base URLs tried for a named
    set (else $NETC_DATA_MIRRORS, else the standard mirrors).
    """
    if not str(source):  # Path("") would quietly mean the current folder
        raise DataError("no data set given: name one or give a path")
    if source == "mnist-10k":
        return load_packaged()
    if source in ("mnist", "fashion-mnist"):
        return load_remote(str(source), download=download, mirrors=mirrors)
    if source in cifar.SETS:
        return cifar.load_named(str(source), download=download, mirrors=mirrors)
    if source in ("xor", "xor-signed"):
        return xor(signed=source == "xor-signed")
    path = Path(source).expanduser()
    if path.is_dir():
        if (path / "train.csv").is_file():
            test = path / "test.csv"
            return load_csv(path / "train.csv", test if test.is_file() else None,
                            path.resolve().name)
        # IDX files first, so a folder of them stays IDX whatever else it holds.
        if not any(path.glob("train-images*")):
            if cifar.detect(path) is not None:
                return load_cifar(path)
            if is_image_folder(path):
                return load_image_folder(path)
        return load_idx_dir(path)
    if path.is_file() and cifar.detect(path) is not None:
        return load_cifar(path)
    if path.is_file() and path.suffix.lower() in (".npz", ".csv"):
        return load_npz(path) if path.suffix.lower() == ".npz" else load_csv(path)
    if path.exists():
        raise DataError(f"{path}: not a data set (expected a folder, an .npz or a .csv file)")
    raise DataError(f"no data set {str(source)!r}: not a known name and no such file or folder",
                    hint="known names: " + ", ".join(NAMES))
