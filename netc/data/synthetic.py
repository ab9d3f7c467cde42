"""Built-in tiny data sets: XOR, the course's example of a problem no linear model solves."""
from __future__ import annotations

import numpy as np

from .dataset import Dataset, Split


def xor(*, signed: bool = False, regression: bool = False) -> Dataset:
    """The four XOR points; inputs in {0,1}² or, with signed=True, in {-1,1}².

    y holds class labels 0/1 (for a softmax output) or, with regression=True, float targets of
    shape (4, 1) in the inputs' encoding (0/1, or -1/1 when signed) for a single tanh or logistic
    output with squared error. The test split is the same four points.
    """
    bits = np.array([[0, 0], [0, 1], [1, 0], [1, 1]])
    label = bits[:, 0] ^ bits[:, 1]
    x = 2 * bits - 1 if signed else bits
    y = ((2 * label - 1) if signed else label)[:, None] if regression else label
    split = Split(x, y)
    return Dataset("xor-signed" if signed else "xor", split, split, ("0", "1"))
