"""Fitting a person's picture to what a network was trained on, for `netc predict`: channels,
size and background polarity, each change described in words (docs/data.md, "Pictures").

All of it is numpy on float (C, H, W) images in [0, 1]; no Pillow. The training side is
summed up by describe(): the samples' shape and the mean of their border, stored in checkpoints.
"""
from __future__ import annotations

import numpy as np

from .images import LUMA

# The training data has a background polarity only when its borders are clearly dark or light
# (MNIST's border mean is 0.0012); photographs' borders are anything, and inverting them is wrong.
DARK, LIGHT, MIDPOINT = 0.25, 0.75, 0.5


def border(x: np.ndarray) -> np.ndarray:
    """The pixels of the outer ring of (..., H, W) images, 1/14 of the shorter side wide (2 of
    28) and at least one: where a drawing or a digit's background is."""
    h, w = x.shape[-2:]
    k = max(1, min(h, w) // 14)
    ring = np.ones((h, w), bool)
    ring[k:h - k, k:w - k] = False
    return x[..., ring]


def describe(x: np.ndarray) -> dict | None:
    """What predict needs of the training samples x (N, C, H, W): their shape and border mean.
    None for samples that are not images (features, XOR points)."""
    if x.ndim != 4 or len(x) == 0:
        return None
    return {"shape": list(x.shape[1:]), "border_mean": float(border(x).mean(dtype=np.float64))}


def conform(image: np.ndarray, channels: int, size: tuple[int, int] | None, *,
            background: float | None = None, resize_smaller: bool = True
            ) -> tuple[np.ndarray, list[str]]:
    """image (C, H, W) as `channels` channels of `size` (H, W), and what was done, in words.

    Alpha (the last of 2 or 4 channels, when the network does not take it) is composited on
    white; RGB becomes gray by BT.601 luma, gray becomes RGB by replication. The image is scaled
    to fit inside `size` keeping its aspect ratio (area averaging to shrink, bilinear to
    enlarge) and centred, the rest filled with its border's mean. resize_smaller=False leaves an
    image that fits inside `size` as it is (the caller pads it). With `background` (the
    training samples' border mean), an image whose border lies on the other side of the
    midpoint is inverted (1 - x); None, or a training border near the midpoint, never inverts.
    """
    notes: list[str] = []
    c = image.shape[0]
    if c != channels and c in (2, 4):
        alpha = image[-1:]
        image = image[:-1] * alpha + (1 - alpha)
        notes.append("alpha composited on white")
        c -= 1
    if c != channels:
        if c == 3 and channels == 1:
            image = np.tensordot(LUMA, image, axes=1)[None]
            notes.append("RGB converted to gray (BT.601 luma)")
        elif c == 1 and channels == 3:
            image = np.repeat(image, 3, axis=0)
            notes.append("gray replicated to RGB")
    h, w = image.shape[1:]
    if size is not None and (h, w) != tuple(size) and (
            resize_smaller or h > size[0] or w > size[1]):
        image, note = fit_size(image, size)
        notes.append(note)
    trained_on = None if background is None else polarity(background)
    if trained_on is not None:
        light = float(border(image).mean(dtype=np.float64)) > MIDPOINT
        if light != (trained_on == "light"):
            image = 1 - image
            notes.append(f"inverted ({'light' if light else 'dark'} background)")
    return image.astype(np.float32), notes


def polarity(border_mean: float) -> str | None:
    """'dark' or 'light' for a training border mean clearly on one side, else None."""
    if border_mean < DARK:
        return "dark"
    if border_mean > LIGHT:
        return "light"
    return None


def fit_size(image: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, str]:
    """(C, H, W) scaled by one factor to fit inside size, centred, the margins filled with each
    channel's border mean; and a note naming the method: 'area' shrinking, 'bilinear'
    enlarging."""
    h, w = image.shape[1:]
    scale = min(size[0] / h, size[1] / w)
    sh, sw = (min(t, max(1, round(n * scale))) for n, t in ((h, size[0]), (w, size[1])))
    scaled = resize(image, sh, sw)
    out = np.empty((image.shape[0], *size), np.float64)
    out[...] = border(scaled).mean(axis=-1, dtype=np.float64)[:, None, None]
    top, left = (size[0] - sh) // 2, (size[1] - sw) // 2
    out[:, top:top + sh, left:left + sw] = scaled
    note = f"resized {w}x{h} -> {sw}x{sh} ({'area' if scale < 1 else 'bilinear'})"
    return out, note + (f", centred in {size[1]}x{size[0]}" if (sh, sw) != tuple(size) else "")


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """(C, H, W) → (C, height, width), each axis on its own: out = Wy · image · Wxᵀ."""
    rows, cols = _weights(image.shape[1], height), _weights(image.shape[2], width)
    return rows @ image.astype(np.float64) @ cols.T


def _weights(n: int, m: int) -> np.ndarray:
    """The (m, n) matrix taking n samples to m. Shrinking: area averaging, output i the mean of
    input span [i·n/m, (i+1)·n/m), partial pixels weighted by their overlap. Enlarging: bilinear
    between pixel centres (output i samples input position (i + ½)·n/m − ½, clamped to the
    edge pixels): the half-pixel-centre convention."""
    if m == n:
        return np.eye(n)
    if m < n:
        s = n / m
        start, end = np.arange(m)[:, None] * s, (np.arange(m)[:, None] + 1) * s
        j = np.arange(n)[None, :]
        return np.clip(np.minimum(end, j + 1) - np.maximum(start, j), 0, None) / s
    x = np.clip((np.arange(m) + 0.5) * n / m - 0.5, 0, n - 1)
    left = np.floor(x).astype(int)
    right = np.minimum(left + 1, n - 1)
    frac = x - left
    weights = np.zeros((m, n))
    np.add.at(weights, (np.arange(m), left), 1 - frac)
    np.add.at(weights, (np.arange(m), right), frac)
    return weights
