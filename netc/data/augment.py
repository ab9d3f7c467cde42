"""Training-time augmentation of image batches: random translation with zero fill and random
horizontal flips, vectorised over the batch (no Python loop over samples).

The option is a comma-separated list of operations (docs/training.md, "Augmentation"):
  crop:P   pad each side by P zeros, cut a random H×W window: a translation by -P..P pixels
  shift:S  a random translation by -S..S pixels in each axis, zero fill (the same law as crop:S)
  flip     mirror left-right with probability 1/2
  none     (alone, or an empty string) no augmentation
Each sample of (N, C, H, W) gets its own draws from the generator the caller passes, in a fixed
order (the translations of the whole batch, then the flips), so a generator seeded the same way
gives the same images. Only numpy and netc.errors are used here.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import as_strided

from netc.errors import NetcError

_OP = re.compile(r"(crop|shift|flip)(?::(.*))?")


@dataclass(frozen=True)
class Augment:
    """What one option string asks for: a translation of up to `translate` pixels (0: none),
    and whether to flip."""

    translate: int = 0
    flip: bool = False

    def __bool__(self) -> bool:
        return self.translate > 0 or self.flip

    @classmethod
    def parse(cls, text: str) -> Augment:
        """The operations of `crop:4,flip`-style text; NetcError naming the first bad one."""
        text = text.strip()
        if text in ("", "none"):
            return cls()
        translate, flip, seen = 0, False, set()
        for item in (part.strip() for part in text.split(",")):
            match = _OP.fullmatch(item)
            if match is None:
                raise NetcError(f"augment: unknown operation {item!r} in {text!r}; "
                                f"expected crop:P, shift:S or flip, separated by commas")
            op, arg = match.groups()
            if op in seen or (op != "flip" and seen - {"flip"}):
                raise NetcError(f"augment: {op} given twice in {text!r}" if op in seen else
                                "augment: crop and shift both translate; give one, not both")
            seen.add(op)
            if op == "flip":
                if arg is not None:
                    raise NetcError(f"augment: flip takes no number (got {item!r})")
                flip = True
            elif arg is None or not re.fullmatch(r"[0-9]{1,6}", arg) or int(arg) < 1:
                raise NetcError(f"augment: {op} takes a whole number of pixels ≥ 1, as "
                                f"{op}:{4 if op == 'crop' else 2} (got {item!r})")
            else:
                translate = int(arg)
        return cls(translate, flip)

    def check(self, shape: tuple[int, ...]) -> None:
        """Refuse augmenting samples of `shape` (the network's input, C×H×W) that are not
        images, or a translation that would leave nothing of them."""
        if not self:
            return
        what = "x".join(map(str, shape))
        op = "flip" if not self.translate else "crop/shift"
        if len(shape) != 3 or shape[1] * shape[2] == 1:
            raise NetcError(f"augment: {op} needs image samples (CxHxW), the network's input is "
                            f"the vector {what}", hint="augment only networks that take images")
        if self.flip and shape[2] == 1:
            raise NetcError(f"augment: flip mirrors left-right; the network's input {what} is one "
                            f"pixel wide")
        if self.translate >= min(shape[1:]):
            raise NetcError(f"augment: a translation of {self.translate} pixels must be smaller "
                            f"than the images ({what}): it would leave nothing of them")

    def pad(self, x: np.ndarray, fill: np.ndarray | None = None) -> np.ndarray:
        """The samples x (N, C, H, W) with the translation's border around them, made once per
        run so that each batch is one gather; x itself when there is no translation. The border
        is 0, or fill[c] in channel c (what 0 becomes when x is normalised)."""
        p = self.translate
        if not p:
            return x
        n, c, h, w = x.shape
        padded = np.empty((n, c, h + 2 * p, w + 2 * p), x.dtype)
        padded[...] = 0 if fill is None else np.asarray(fill, x.dtype).reshape(c, 1, 1)
        padded[:, :, p:p + h, p:p + w] = x
        return padded

    def take(self, padded: np.ndarray, idx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A new (len(idx), C, H, W) batch of the samples idx of pad(x), each translated and/or
        flipped at random."""
        p, n = self.translate, len(idx)
        if p:
            # The window at corner (a, b) of a padded sample is the sample moved by (p - a, p - b),
            # zeros where it moved away from: a strided view of every window, then one gather.
            count, c, h, w = padded.shape
            h, w = h - 2 * p, w - 2 * p
            s = padded.strides
            windows = as_strided(padded, (count, c, 2 * p + 1, 2 * p + 1, h, w),
                                 (*s, s[2], s[3]), writeable=False)
            corner = rng.integers(0, 2 * p + 1, size=(2, n))
            x = windows[idx, :, corner[0], corner[1]]
        else:
            x = padded[idx]
        if self.flip:
            mirrored = rng.random(n) < 0.5
            x[mirrored] = x[mirrored, :, :, ::-1]
        return x
