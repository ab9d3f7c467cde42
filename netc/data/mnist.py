"""MNIST-style data sets: a folder of four IDX files, the named sets in the user's cache (downloaded
on first use), and the MNIST subset shipped inside the package.

Images load as float32 (N, 1, 28, 28) with pixels scaled from 0..255 to [0, 1]; labels as int64.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from netc.errors import DataError

from .dataset import Dataset, Split
from .download import fetch, mirror_list
from .idx import read_images, read_labels

PACKAGED = Path(__file__).resolve().parent  # the shipped subset lives in PACKAGED / "mnist-10k"
FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
         "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
DIGITS = tuple("0123456789")


@dataclass(frozen=True)
class Remote:
    """Where a named set comes from: base URLs, and the sha256 of each of FILES (.gz) in order."""

    mirrors: tuple[str, ...]
    sha256: tuple[str, str, str, str]
    classes: tuple[str, ...]


REMOTE = {
    "mnist": Remote(
        ("https://ossci-datasets.s3.amazonaws.com/mnist/",
         "https://storage.googleapis.com/cvdf-datasets/mnist/",
         "http://yann.lecun.com/exdb/mnist/"),
        ("440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
         "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
         "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
         "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
        DIGITS),
    "fashion-mnist": Remote(
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
         "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"),
        ("3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
         "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
         "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
         "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"),
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")),
}


def cache_dir(name: str) -> Path:
    """$NETC_DATA/<name>, else $XDG_CACHE_HOME/netc/datasets/<name>, else
    ~/.cache/netc/datasets/<name>."""
    if root := os.environ.get("NETC_DATA"):
        return Path(root).expanduser() / name
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "netc" / "datasets" / name


def _find(folder: Path, stem: str) -> Path | None:
    # The standard names, gzipped or not, and the dotted spelling some copies use
    # ("train-images.idx3-ubyte").
    dotted = stem.replace("-idx", ".idx")
    for name in (stem + ".gz", stem, dotted + ".gz", dotted):
        if (folder / name).is_file():
            return folder / name
    return None


def _pair(images_path: Path, labels_path: Path) -> Split:
    images, labels = read_images(images_path), read_labels(labels_path)
    if len(images) != len(labels):
        raise DataError(f"{images_path} holds {len(images)} images but {labels_path} holds "
                        f"{len(labels)} labels")
    x = images.reshape(len(images), 1, *images.shape[1:]).astype(np.float32)
    np.divide(x, 255, out=x)
    return Split(x, labels)


def load_idx_dir(folder: str | Path, name: str | None = None,
                 classes: tuple[str, ...] | None = None) -> Dataset:
    """A Dataset from a folder with the two train files and, optionally, the two t10k files."""
    folder = Path(folder)
    found = [_find(folder, stem) for stem in FILES]
    if None in found[:2] or (found[2] is None) != (found[3] is None):
        missing = ", ".join(s + "[.gz]" for s, f in zip(FILES, found) if f is None)
        raise DataError(f"{folder}: missing {missing}",
                        hint="an MNIST-style folder holds " + ", ".join(FILES) + " (.gz or not)")
    train = _pair(found[0], found[1])
    test = _pair(found[2], found[3]) if found[2] else None
    labels = train.y if test is None else np.concatenate([train.y, test.y])
    if classes is None:
        classes = DIGITS if labels.max() < 10 else tuple(map(str, range(labels.max() + 1)))
    elif labels.max() >= len(classes):
        raise DataError(f"{folder}: label {labels.max()} out of range for {len(classes)} classes")
    return Dataset(name or folder.name, train, test, classes)


def load_packaged() -> Dataset:
    """The shipped MNIST subset: the first 10,000 training images and the full test set."""
    return load_idx_dir(PACKAGED / "mnist-10k", "mnist-10k", DIGITS)


def load_remote(name: str, *, download: bool = True,
                mirrors: Sequence[str] | None = None) -> Dataset:
    """A named set from the cache folder, downloading (and checking) the missing files first."""
    remote = REMOTE[name]
    folder = cache_dir(name)
    missing = [(s, sha) for s, sha in zip(FILES, remote.sha256) if _find(folder, s) is None]
    if missing and not download:
        raise DataError(f"{name} is not in {folder} and downloading is off",
                        hint="copy the four IDX .gz files there, or use the shipped 'mnist-10k'")
    urls = mirror_list(remote.mirrors, name) if mirrors is None else list(mirrors)
    for stem, sha in missing:
        fetch(stem + ".gz", folder / (stem + ".gz"), sha, urls)
    return load_idx_dir(folder, name, remote.classes)
