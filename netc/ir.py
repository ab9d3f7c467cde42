"""The IR every stage after parsing works on: a flat, fully resolved, immutable layer sequence.

Repetition, parameters, defaults and `act=` have all been resolved by lowering: every number here
is final. Shapes are (C, H, W); a vector of n features is (n, 1, 1). Spans never take part in
equality, so two nets written differently but meaning the same compare equal.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from .span import Span

Shape = tuple[int, int, int]  # (C, H, W), NCHW without the batch
Pair = tuple[int, int]  # (height-wise, width-wise)

LOSSES = ("cross_entropy", "mse")


@dataclass(frozen=True, slots=True)
class Activation:
    """An elementwise squashing function; its derivative is computable from its output alone."""

    kind: str  # "relu" | "sigmoid" (1/(1+exp(-a v))) | "tanh" (a tanh(b v))
    a: float = 1.0  # sigmoid slope, or tanh amplitude
    b: float = 1.0  # tanh slope (unused by relu and sigmoid)


@dataclass(frozen=True, slots=True)
class Table:
    """A connection table: rows are input channels, columns output channels, True = connected."""

    name: str
    rows: tuple[tuple[bool, ...], ...]
    span: Span | None = field(default=None, compare=False, repr=False)

    @property
    def in_channels(self) -> int:
        return len(self.rows)

    @property
    def out_channels(self) -> int:
        return len(self.rows[0]) if self.rows else 0

    def inputs_of(self, out_channel: int) -> tuple[int, ...]:
        """The input channels one output channel sees, in ascending order."""
        return tuple(i for i, row in enumerate(self.rows) if row[out_channel])


@dataclass(frozen=True, slots=True, kw_only=True)
class Layer:
    label: str  # unique in the net; parameter names are "<label>.weight" etc.
    span: Span | None = field(default=None, compare=False, repr=False)
    origin: tuple[int, ...] = field(default=(), compare=False)  # repeat path: copy i of each ( )*N

    @property
    def kind(self) -> str:
        return type(self).__name__.lower()


@dataclass(frozen=True, slots=True, kw_only=True)
class Conv(Layer):
    out_channels: int
    kernel: Pair
    stride: Pair = (1, 1)
    pad: Pair = (0, 0)  # zeros added on each side
    bias: bool = True
    groups: int = 1
    table: Table | None = None  # replaces groups: sparse input-to-output connections
    act: Activation | None = None  # applied to the output in the same layer


@dataclass(frozen=True, slots=True, kw_only=True)
class Pool(Layer):
    mode: str  # "max" | "avg"; avg divides by the full window, padding included
    kernel: Pair
    stride: Pair
    pad: Pair = (0, 0)


@dataclass(frozen=True, slots=True, kw_only=True)
class Subsample(Layer):
    """LeNet-1998's S layers: window average x a trained coefficient + a trained bias, per map."""

    kernel: Pair
    stride: Pair
    act: Activation | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class GlobalAvgPool(Layer):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class FC(Layer):
    """Fully connected over the flattened (C*H*W) input; flattening is implicit."""

    units: int
    bias: bool = True
    act: Activation | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Act(Layer):
    fn: Activation


@dataclass(frozen=True, slots=True, kw_only=True)
class Softmax(Layer):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class Dropout(Layer):
    p: float  # probability of dropping; inverted dropout scales kept units by 1/(1-p)


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchNorm(Layer):
    """Per channel (per feature after an fc): learned scale and shift, running statistics."""

    eps: float = 1e-5
    momentum: float = 0.1  # running = (1 - momentum) * running + momentum * batch, as PyTorch


@dataclass(frozen=True, slots=True, kw_only=True)
class Flatten(Layer):
    pass


AnyLayer = Union[Conv, Pool, Subsample, GlobalAvgPool, FC, Act, Softmax, Dropout, BatchNorm,
                 Flatten]
LAYER_KINDS: tuple[type, ...] = (
    Conv, Pool, Subsample, GlobalAvgPool, FC, Act, Softmax, Dropout, BatchNorm, Flatten,
)


@dataclass(frozen=True, slots=True)
class Net:
    name: str
    input: Shape
    layers: tuple[AnyLayer, ...]
    loss: str = "cross_entropy"  # one of LOSSES; cross_entropy requires a final Softmax
    params: tuple[tuple[str, float], ...] = ()  # the parameter values it was lowered with
    source: str = field(default="", compare=False, repr=False)  # the spec text, for checkpoints

    def layer(self, label: str) -> AnyLayer:
        for layer in self.layers:
            if layer.label == label:
                return layer
        raise KeyError(label)
