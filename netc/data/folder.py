"""A folder of images, one sub-folder per class: DIR/<class>/<image>, or DIR/train/<class>/... and
DIR/test/<class>/... for a separate test split.

Images are read with load_image (.png, .pgm, .npy; PNG and PGM as one gray channel), all must
have one shape, and classes are the sub-folder names in sorted order.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from netc.errors import DataError

from .dataset import MAX_ARRAY_BYTES, Dataset, Split
from .images import load_image

SUFFIXES = (".png", ".pgm", ".npy")


def _entries(folder: Path) -> list[os.DirEntry]:
    # Hidden entries (.DS_Store, .ipynb_checkpoints) are not data.
    try:
        with os.scandir(folder) as it:
            return sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
    except OSError as e:
        raise DataError(f"cannot read folder '{folder}': {e.strerror or e}") from None


def _subfolders(folder: Path) -> list[str]:
    return [e.name for e in _entries(folder) if e.is_dir()]


def _has_images(folder: Path) -> bool:
    return any(e.name.lower().endswith(SUFFIXES) for e in _entries(folder) if not e.is_dir())


def _split_layout(folder: Path) -> bool:
    """DIR/train holds class folders, not images: the train/test layout."""
    train = folder / "train"
    return train.is_dir() and not _has_images(train) and bool(_subfolders(train))


def is_image_folder(folder: Path) -> bool:
    """A folder whose sub-folders hold images, directly or under train/."""
    return _split_layout(folder) or any(_has_images(folder / c) for c in _subfolders(folder))


def _files(folder: Path, classes: list[str]) -> list[tuple[Path, int]]:
    """(image, label) for every file of every class folder, classes and files in sorted order."""
    found = []
    for label, name in enumerate(classes):
        entries = _entries(folder / name)
        if nested := [e.name for e in entries if e.is_dir()]:
            raise DataError(f"{folder / name}: holds the folder {nested[0]!r}; a class folder "
                            "holds only images")
        if not entries:
            raise DataError(f"{folder / name}: an empty class folder",
                            hint="every class folder holds at least one .png, .pgm or .npy image")
        found += [(folder / name / e.name, label) for e in entries]
    return found


def _read(files: list[tuple[Path, int]], first: tuple[Path, tuple[int, ...]] | None
          ) -> tuple[Split, tuple[Path, tuple[int, ...]]]:
    """The images as one Split; `first` is the image every shape is compared with (the first
    training image), None for the training split itself."""
    x = None
    for i, (path, _) in enumerate(files):
        image = load_image(path)
        if first is None:
            first = (path, image.shape)
        if image.shape != first[1]:
            raise DataError(f"{path}: a {'x'.join(map(str, image.shape))} image, but "
                            f"{first[0]} is {'x'.join(map(str, first[1]))}",
                            hint="every image must have the same size; netc does not resize")
        if x is None:
            size = len(files) * math.prod(image.shape) * 4
            if size > MAX_ARRAY_BYTES:
                raise DataError(f"{path.parent.parent}: {len(files):,} images of "
                                f"{'x'.join(map(str, image.shape))} take {size:,} bytes, more "
                                f"than netc loads ({MAX_ARRAY_BYTES:,})")
            x = np.empty((len(files), *image.shape), np.float32)
        x[i] = image
    return Split(x, np.array([label for _, label in files], np.int64)), first


def load_image_folder(folder: str | Path, name: str | None = None) -> Dataset:
    """A Dataset from DIR/<class>/ folders, or from DIR/train/<class>/ and DIR/test/<class>/
    (the test folders' class names must be among the training ones)."""
    folder = Path(folder)
    root = folder / "train" if _split_layout(folder) else folder
    classes = _subfolders(root)
    if not classes:
        raise DataError(f"{root}: no class folders", hint="put each class's images in "
                        "a sub-folder named after the class")
    train, first = _read(_files(root, classes), None)
    test = None
    if root != folder and (folder / "test").is_dir():
        test_classes = _subfolders(folder / "test")
        if not test_classes:
            raise DataError(f"{folder / 'test'}: no class folders")
        if unknown := sorted(set(test_classes) - set(classes)):
            raise DataError(f"{folder / 'test'}: class folder {unknown[0]!r} is not in "
                            f"{root}", hint="the test split's classes are the training ones")
        files = [(path, classes.index(test_classes[label]))
                 for path, label in _files(folder / "test", test_classes)]
        test, _ = _read(files, first)
    return Dataset(name or folder.resolve().name, train, test, tuple(classes))
