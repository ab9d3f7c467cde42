"""The in-memory shape of every data set: Split (x, y) and Dataset (train, optional test).

Also the two deterministic helpers training needs: a seeded validation split and a seeded
mini-batch iterator. No I/O here.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from netc.errors import DataError

# The most bytes one stored array (an IDX payload, an .npz or .npy member) may declare: 4 GiB,
# over 20 times full MNIST as float32. A header claiming more is refused before anything is read.
MAX_ARRAY_BYTES = 1 << 32

# What np.random.default_rng accepts: an int, a tuple such as (seed, epoch), or a Generator.
Seed = int | Sequence[int] | np.random.Generator


@dataclass(frozen=True, eq=False)
class Split:
    """N samples. x: float32 (N, *input_shape), C-contiguous; y: int64 (N,) class labels, or
    float32 (N, K) regression targets."""

    x: np.ndarray
    y: np.ndarray

    def __post_init__(self):
        x = np.ascontiguousarray(self.x, dtype=np.float32)
        y = np.asarray(self.y)
        y = y.astype(np.int64) if y.ndim == 1 else np.ascontiguousarray(y, dtype=np.float32)
        if x.ndim < 2 or y.ndim not in (1, 2) or len(x) != len(y):
            raise DataError(f"inconsistent split: x has shape {x.shape}, y has shape {y.shape}",
                            hint="x is (N, features...) and y is (N,) labels or (N, K) targets")
        object.__setattr__(self, "x", x)
        object.__setattr__(self, "y", y)

    def __len__(self) -> int:
        return len(self.x)

    def subset(self, indices: np.ndarray) -> Split:
        return Split(self.x[indices], self.y[indices])

    def batches(self, batch_size: int, *, seed: Seed | None = None
                ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(x, y) mini-batches covering every sample once; the last one may be smaller.

        seed=None keeps the stored order; otherwise the order is a permutation drawn from
        np.random.default_rng(seed), so a seed like (run_seed, epoch) makes every epoch's order
        reproducible on its own, which is what resuming a run needs.
        """
        if batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {batch_size}")
        n = len(self)
        if seed is None:
            for start in range(0, n, batch_size):
                yield self.x[start:start + batch_size], self.y[start:start + batch_size]
            return
        order = np.random.default_rng(seed).permutation(n)
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            yield self.x[idx], self.y[idx]


class NumberedClasses(Sequence[str]):
    """The class names "0", "1", ..., made one at a time when asked for: a file's largest label
    sets the count, and a huge one must cost nothing before training checks it against the
    network's outputs."""

    def __init__(self, count: int):
        self.count = count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index):
        picked = range(self.count)[index]
        return tuple(map(str, picked)) if isinstance(index, slice) else str(picked)

    def __eq__(self, other) -> bool:
        return (isinstance(other, Sequence) and len(other) == self.count
                and all(a == b for a, b in zip(self, other)))

    __hash__ = None

    def __repr__(self) -> str:
        return f"NumberedClasses({self.count})"


@dataclass(frozen=True, eq=False)
class Dataset:
    """A named data set: the training split, the test split if it has one, and class names."""

    name: str
    train: Split
    test: Split | None
    classes: Sequence[str]

    def __post_init__(self):
        if self.test is not None and self.test.x.shape[1:] != self.train.x.shape[1:]:
            raise DataError(f"{self.name}: test inputs have shape {self.test.x.shape[1:]} but "
                            f"training inputs {self.train.x.shape[1:]}")

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.train.x.shape[1:]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def reshaped(self, shape: Sequence[int]) -> Dataset:
        """The same data with every sample reshaped, e.g. CSV rows of 784 to (1, 28, 28)."""
        shape = tuple(shape)
        if int(np.prod(shape)) != int(np.prod(self.input_shape)):
            raise DataError(f"{self.name}: samples of shape {self.input_shape} cannot be "
                            f"reshaped to {shape}")

        def one(s: Split | None) -> Split | None:
            return None if s is None else Split(s.x.reshape(len(s), *shape), s.y)
        return Dataset(self.name, one(self.train), one(self.test), self.classes)


def validation_split(split: Split, fraction: float, seed: Seed) -> tuple[Split, Split]:
    """(train, validation): a seeded random `fraction` of the samples is held out.

    Both parts keep the original order, and the same seed always picks the same samples.
    """
    n = len(split)
    n_val = round(fraction * n)
    if not 0 < fraction < 1 or n_val < 1 or n_val >= n:
        raise DataError(f"validation fraction {fraction} of {n} samples leaves an empty part",
                        hint="use a fraction between 0 and 1, e.g. 0.1")
    held = np.zeros(n, dtype=bool)
    held[np.random.default_rng(seed).permutation(n)[:n_val]] = True
    return split.subset(np.flatnonzero(~held)), split.subset(np.flatnonzero(held))
