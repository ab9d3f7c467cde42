"""Input standardisation, LeCun's heuristic: remove the mean, scale to unit variance, decorrelate.

A Normalizer is fitted on the training split only, applied unchanged to validation, test and
predict inputs, and round-trips through a dict of NumPy arrays so a checkpoint can carry it.

Modes (statistics are per index of axis 1, i.e. per channel of (N, C, H, W) images and per
feature of (N, D) tables, over all samples and pixels, as torchvision's Normalize expects):
  none      x unchanged
  mean      x - mean
  standard  (x - mean) / std, no std below that of VAR_FLOOR times the mean variance
(images flattened into a vector, `channels=`, keep their per-channel statistics)
  pca       PCA whitening over the flattened sample: project onto the principal axes (largest
            variance first) and divide each by sqrt(eigenvalue + eps); the result has identity
            covariance but no image layout any more, so it suits fully connected networks
  zca       the pca result rotated back (ZCA): identity covariance, image layout kept, for CNNs
eps is relative: eps * (mean eigenvalue) is added to every eigenvalue, so that directions with
almost no variance (MNIST's blank border pixels) are not blown up into noise.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np

from netc.errors import DataError

MODES = ("none", "mean", "standard", "pca", "zca")
_CHUNK = 4096  # rows per float64 accumulation step: bounded memory on full MNIST
# standard: no channel's variance is taken below this fraction of the mean variance. MNIST as
# 784 features has pixels lit in a handful of training images; dividing them by their own tiny
# std made inputs of |x| up to 95 (2,593 on the test set) and a test loss of 4 to 8.
VAR_FLOOR = 0.1
_log = logging.getLogger(__name__)


def _empty() -> np.ndarray:
    return np.zeros(0, dtype=np.float32)


def _is_image(shape: tuple[int, ...]) -> bool:
    """Samples (C, H, W) or (H, W) with more than one pixel, as opposed to (D,) or (D, 1, 1)."""
    return len(shape) > 1 and math.prod(shape[1:]) > 1


def _floored(std: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The per-channel stds, none below the VAR_FLOOR one; a warning (through logging, once per
    fit) names how many were raised. All-constant inputs keep scale 1."""
    floor = float(np.sqrt(VAR_FLOOR * np.mean(std ** 2)))
    if floor == 0:
        return np.ones_like(std)
    quiet = std < floor
    if quiet.any():
        what = "channel" if _is_image(shape) else "feature"
        _log.warning(f"warning: {int(quiet.sum())} of {quiet.size} input {what}s are near "
                     f"constant (variance below {VAR_FLOOR:g} of the mean; the first is {what} "
                     f"{int(np.argmax(quiet.ravel()))}); 'standard' divides them by {floor:.3g}, "
                     f"not by their own std")
    return np.maximum(std, floor)


def _grouped(x: np.ndarray, channels: int | None) -> np.ndarray:
    """x as (N, C, pixels) when its vector samples are flattened C-channel images, else x."""
    if channels is None or channels == x.shape[1]:
        return x
    if x.shape[1] % channels or math.prod(x.shape[2:]) != 1:
        raise DataError(f"inputs of shape {x.shape[1:]} are not images of {channels} channels "
                        f"flattened into a vector")
    return x.reshape(len(x), channels, -1)


def _per_index(values: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Per-channel statistics as one value per index of x's axis 1 (each channel's value
    repeated for its pixels when x holds flattened images), shaped to broadcast over x[i]."""
    return np.repeat(values.ravel(), x.shape[1] // values.size).reshape(
        (x.shape[1],) + (1,) * (x.ndim - 2))


def _chunks(x: np.ndarray) -> Iterator[np.ndarray]:
    for start in range(0, len(x), _CHUNK):
        yield x[start:start + _CHUNK].astype(np.float64)


@dataclass(frozen=True, eq=False)
class Normalizer:
    """A fitted standardisation; arrays a mode does not use are empty."""

    mode: str  # one of MODES
    shape: tuple[int, ...]  # the per-sample shape it was fitted on and accepts
    # mean: per channel, (C, 1, 1) or (D,), for mean/standard; flattened (D,) for pca/zca
    mean: np.ndarray = field(default_factory=_empty)
    scale: np.ndarray = field(default_factory=_empty)  # standard: 1/std, shaped like mean
    matrix: np.ndarray = field(default_factory=_empty)  # pca/zca: (D, D); out = (x - mean) @ it
    eps: float = 0.0  # pca/zca: the relative eps it was fitted with

    @classmethod
    def fit(cls, mode: str, x: np.ndarray, *, eps: float = 1e-3,
            channels: int | None = None) -> Normalizer:
        """Fit on training inputs x of shape (N, ...); N must be at least 1. channels: the
        samples are images of that many channels flattened channel by channel into a vector
        (`input 784` for 1x28x28 data), and mean/standard use per-channel statistics, as for the
        images themselves, not per-pixel ones."""
        if mode not in MODES:
            raise DataError(f"unknown normalisation {mode!r}", hint="one of " + ", ".join(MODES))
        x = np.asarray(x)
        shape, n = tuple(x.shape[1:]), len(x)
        if x.ndim < 2 or n == 0 or eps < 0:
            raise DataError(f"cannot fit a normalisation on inputs of shape {x.shape} "
                            f"with eps {eps}")
        if mode == "none":
            return cls(mode, shape)
        if mode == "pca" and _is_image(shape):
            raise DataError(f"pca whitening scrambles the pixel layout of the "
                            f"{'x'.join(map(str, shape))} image inputs, which convolutions need",
                            hint="use zca (whitening that keeps the layout) or standard; a fully "
                                 "connected network can take its input as a vector (input 784)")
        if mode in ("mean", "standard"):
            grouped = _grouped(x, channels)
            axes, count = (0,) + tuple(range(2, grouped.ndim)), grouped.size // grouped.shape[1]
            mean = sum(c.sum(axis=axes, keepdims=True) for c in _chunks(grouped))[0] / count
            if mode == "mean":
                return cls(mode, shape, _per_index(mean, x).astype(np.float32))
            var = sum(((c - mean) ** 2).sum(axis=axes, keepdims=True)
                      for c in _chunks(grouped))[0]
            scale = 1 / _floored(np.sqrt(var / count), grouped.shape[1:])
            return cls(mode, shape, _per_index(mean, x).astype(np.float32),
                       _per_index(scale, x).astype(np.float32))
        flat = x.reshape(n, -1)
        mean = sum(c.sum(axis=0) for c in _chunks(flat)) / n
        cov = sum((c - mean).T @ (c - mean) for c in _chunks(flat)) / n
        lam, vec = np.linalg.eigh(cov)
        lam, vec = np.clip(lam[::-1], 0, None), vec[:, ::-1]  # largest variance first
        vec *= np.sign(vec[np.abs(vec).argmax(axis=0), np.arange(len(lam))])  # fix signs
        floor = eps * lam.mean() if lam.mean() > 0 else eps
        if lam[-1] + floor <= 0:
            raise DataError(f"the inputs' covariance is singular, so {mode} needs eps > 0")
        matrix = vec / np.sqrt(lam + floor)
        if mode == "zca":
            matrix = matrix @ vec.T
        return cls(mode, shape, mean.astype(np.float32), matrix=matrix.astype(np.float32),
                   eps=eps)

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Normalised float32 copy of x (N, *shape)."""
        if tuple(x.shape[1:]) != self.shape:
            raise DataError(f"inputs of shape {tuple(x.shape[1:])} but the normalisation was "
                            f"fitted on {self.shape}")
        x = np.asarray(x, dtype=np.float32)
        if self.mode == "none":
            return x.copy()
        if self.mode in ("pca", "zca"):
            return ((x.reshape(len(x), -1) - self.mean) @ self.matrix).reshape(x.shape)
        out = x - self.mean
        return out * self.scale if self.mode == "standard" else out

    def to_dict(self) -> dict[str, np.ndarray]:
        """Plain arrays only (np.savez-safe, no pickle)."""
        return {"mode": np.array(self.mode), "shape": np.array(self.shape, dtype=np.int64),
                "mean": self.mean, "scale": self.scale, "matrix": self.matrix,
                "eps": np.array(self.eps)}

    @classmethod
    def from_dict(cls, d: Mapping[str, np.ndarray]) -> Normalizer:
        try:
            mode, shape = str(d["mode"]), tuple(int(s) for s in d["shape"])
            arrays = [np.asarray(d[k], dtype=np.float32) for k in ("mean", "scale", "matrix")]
            norm = cls(mode, shape, *arrays, eps=float(d["eps"]))
            chan, size = (shape[0],) + (1,) * (len(shape) - 1), int(np.prod(shape))
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise DataError(f"stored normalisation is incomplete or malformed ({e})") from None
        expect = {"none": ((0,), (0,), (0,)), "mean": (chan, (0,), (0,)),
                  "standard": (chan, chan, (0,)), "pca": ((size,), (0,), (size, size)),
                  "zca": ((size,), (0,), (size, size))}
        if expect.get(mode) != tuple(a.shape for a in arrays):
            raise DataError(f"stored normalisation is inconsistent: mode {mode!r}, shape {shape}, "
                            f"arrays {[a.shape for a in arrays]}")
        return norm
