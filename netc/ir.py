"""The IR every stage after parsing works on: a fully resolved, immutable graph of layers.

Repetition, blocks, parameters, defaults and `act=` have all been resolved by lowering: every
number here is final. `Net.layers` is in topological order: each layer reads the outputs of
earlier layers (`Net.inputs_of`, by index; INPUT is the network's input), and the last layer is
the network's output. A layer that reads just the one before it, a link of a chain, keeps
`inputs` None, so a chain's IR is the same however it was written or built. Shapes are
(C, H, W); a vector of n features is (n, 1, 1). Spans never take part in equality, so two nets
written differently but meaning the same compare equal.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Union

from .span import Span

Shape = tuple[int, int, int]  # (C, H, W), NCHW without the batch
Pair = tuple[int, int]  # (height-wise, width-wise)

LOSSES = ("cross_entropy", "mse")
INPUT = -1  # the index that stands for the network's input in `Net.inputs_of`


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
    inputs: tuple[int, ...] | None = None  # indices of the layers it reads; None: the one before
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


@dataclass(frozen=True, slots=True, kw_only=True)
class Add(Layer):
    """The elementwise sum of two or more inputs of one shape (a residual connection)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Concat(Layer):
    """The channels of two or more inputs of one height and width, in input order (inception)."""


AnyLayer = Union[Conv, Pool, Subsample, GlobalAvgPool, FC, Act, Softmax, Dropout, BatchNorm,
                 Flatten, Add, Concat]
LAYER_KINDS: tuple[type, ...] = (
    Conv, Pool, Subsample, GlobalAvgPool, FC, Act, Softmax, Dropout, BatchNorm, Flatten, Add,
    Concat,
)
MERGES: tuple[type, ...] = (Add, Concat)  # the kinds that read several inputs


@dataclass(frozen=True, slots=True)
class Net:
    name: str
    input: Shape
    layers: tuple[AnyLayer, ...]
    loss: str = "cross_entropy"  # one of LOSSES; cross_entropy requires a final Softmax
    params: tuple[tuple[str, float], ...] = ()  # the parameter values it was lowered with
    source: str = field(default="", compare=False, repr=False)  # the spec text, for checkpoints

    def __post_init__(self):
        """`inputs` (i - 1,) becomes None, and the graph is checked: inputs are earlier layers
        (so the order is topological and there is no cycle), a merge has two or more, any other
        kind one, and every layer but the last is read by a later one."""
        layers = tuple(dataclasses.replace(layer, inputs=None) if layer.inputs == (i - 1,)
                       else layer for i, layer in enumerate(self.layers))
        object.__setattr__(self, "layers", layers)
        read = set()
        for i, layer in enumerate(layers):
            inputs, many = self.inputs_of(i), isinstance(layer, MERGES)
            if len(inputs) < 1 + many or (not many and len(inputs) > 1):
                raise ValueError(f"{layer.label}: a {layer.kind} layer reads "
                                 f"{'two or more inputs' if many else 'one input'}, "
                                 f"not {len(inputs)}")
            if not all(INPUT <= j < i for j in inputs):
                raise ValueError(f"{layer.label}: inputs {inputs} must be earlier layers "
                                 f"(0 to {i - 1}) or the input ({INPUT})")
            read.update(inputs)
        unread = [layer.label for i, layer in enumerate(layers[:-1]) if i not in read]
        if unread:
            raise ValueError(f"the output of {unread[0]} is never read: only the last layer "
                             f"may be the network's output")

    def layer(self, label: str) -> AnyLayer:
        for layer in self.layers:
            if layer.label == label:
                return layer
        raise KeyError(label)

    def index(self, label: str) -> int:
        for i, layer in enumerate(self.layers):
            if layer.label == label:
                return i
        raise KeyError(label)

    def inputs_of(self, i: int) -> tuple[int, ...]:
        """The indices of what layer i reads, in order (INPUT: the network's input)."""
        inputs = self.layers[i].inputs
        return (i - 1,) if inputs is None else inputs

    @property
    def is_chain(self) -> bool:
        """Every layer reads the one before it."""
        return all(layer.inputs is None for layer in self.layers)

    def consumers(self, i: int) -> tuple[int, ...]:
        """The layers that read layer i's output (i = INPUT: the network's input), in order;
        a layer that reads it twice (add[ | ]) is listed once."""
        return tuple(k for k in range(len(self.layers)) if i in self.inputs_of(k))

    def input_label(self, j: int) -> str:
        """What an index in `inputs` names: a layer's label, or "input"."""
        return "input" if j == INPUT else self.layers[j].label
