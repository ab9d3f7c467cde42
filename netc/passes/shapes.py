"""Output shape of every layer: (C, H, W) with the course's floor rule ⌊(W − K + 2P)/S⌋ + 1.

    conv(6, k=5) on (1, 32, 32) -> (6, 28, 28);  pool(max, 2) on (6, 28, 28) -> (6, 14, 14)

Impossible shapes raise SpecError at the offending layer; a window that does not tile its input
exactly is allowed but produces a warning when the last rows or columns it never sees hold input,
not only padding (a window narrower than its stride, which skips rows by design, never warns).
Absurd sizes are refused up front: more than LIMIT elements in one layer's output (per sample) or
in one layer's weight tensor, or more than LIMIT parameters in the whole net.
"""
from __future__ import annotations

from dataclasses import dataclass

from .. import ir
from ..errors import SpecError

LIMIT = 2**31 - 1  # elements: 8 GiB of float32, and the most a C int can count


@dataclass(frozen=True, slots=True)
class ShapeWarning:
    message: str
    layer: ir.AnyLayer

    def format(self) -> str:
        where = f"{self.layer.span}: " if self.layer.span else ""
        return f"{where}warning: {self.layer.label}: {self.message}"


@dataclass(frozen=True, slots=True)
class Shapes:
    inputs: tuple[ir.Shape, ...]  # per layer, what it reads (a merge: its first input)
    outputs: tuple[ir.Shape, ...]  # per layer, what it writes
    warnings: tuple[ShapeWarning, ...]
    sources: tuple[tuple[ir.Shape, ...], ...]  # per layer, each of its inputs, in order


def infer_shapes(net: ir.Net) -> Shapes:
    sources, outputs, warnings = [], [], []
    total = 0
    for i, layer in enumerate(net.layers):
        reads = tuple(net.input if j == ir.INPUT else outputs[j] for j in net.inputs_of(i))
        sources.append(reads)
        weights = _weight_bound(layer, reads[0])
        total += weights
        shape = _merged(layer, reads) if isinstance(layer, ir.MERGES) else \
            _output(layer, reads[0], warnings)
        outputs.append(shape)
        _check_size(layer, shape, weights, total)
    return Shapes(tuple(r[0] for r in sources), tuple(outputs), tuple(warnings), tuple(sources))


def _weight_bound(layer: ir.AnyLayer, shape: ir.Shape) -> int:
    """The layer's weight tensor as stored densely: exact, or an upper bound for a table."""
    c, h, w = shape
    match layer:
        case ir.Conv():
            return layer.out_channels * c // layer.groups * layer.kernel[0] * layer.kernel[1]
        case ir.FC():
            return layer.units * c * h * w
        case _:
            return 0  # per-channel parameters are bounded by the output check


def _check_size(layer: ir.AnyLayer, out: ir.Shape, weights: int, total: int) -> None:
    hint = "the network could not fit in memory; check the sizes and the parameters"
    for what, n in ((f"output {_fmt(out)}", out[0] * out[1] * out[2]),
                    ("weight tensor", weights), ("weights up to this layer", total)):
        if n > LIMIT:
            raise SpecError(f"{layer.label}: {what}: {n:,} elements, more than netc's limit of "
                            f"{LIMIT:,} (2**31 - 1)", layer.span, hint=hint)


def window_out(size: int, kernel: int, stride: int, pad: int) -> int:
    """⌊(size − kernel + 2·pad)/stride⌋ + 1, or ≤ 0 when the window does not fit."""
    return (size - kernel + 2 * pad) // stride + 1


def _windowed(layer, shape: ir.Shape, channels: int, pad: ir.Pair, warnings: list) -> ir.Shape:
    c, h, w = shape
    (kh, kw), (sh, sw) = layer.kernel, layer.stride
    for axis, size, k, p in (("height", h, kh, pad[0]), ("width", w, kw, pad[1])):
        if k > size + 2 * p:
            raise SpecError(
                f"{layer.label}: kernel {k} is larger than the padded input {axis} "
                f"{size}{f' + 2×{p}' if p else ''} (input is {_fmt(shape)})",
                layer.span,
                hint="use a smaller kernel, more padding, or fewer pooling layers before it",
            )
    oh, ow = window_out(h, kh, sh, pad[0]), window_out(w, kw, sw, pad[1])
    # the rows past the last window, less those that are padding: what is lost of the input;
    # windows narrower than their stride skip rows everywhere by design (a 1x1 stride-2 conv)
    rows = (h + 2 * pad[0] - kh) % sh - pad[0] if kh >= sh else 0
    cols = (w + 2 * pad[1] - kw) % sw - pad[1] if kw >= sw else 0
    lost = ([f"{rows} row(s)"] if rows > 0 else []) + ([f"{cols} column(s)"] if cols > 0 else [])
    if lost:
        warnings.append(ShapeWarning(
            f"the window does not tile the input {_fmt(shape)} exactly: the last "
            f"{' and '.join(lost)} are never seen", layer))
    return (channels, oh, ow)


def _output(layer: ir.AnyLayer, shape: ir.Shape, warnings: list) -> ir.Shape:
    c, h, w = shape
    match layer:
        case ir.Conv():
            _check_connectivity(layer, c)
            return _windowed(layer, shape, layer.out_channels, layer.pad, warnings)
        case ir.Pool():
            if layer.pad[0] * 2 > layer.kernel[0] or layer.pad[1] * 2 > layer.kernel[1]:
                raise SpecError(f"{layer.label}: pool padding {layer.pad} is more than half the "
                                f"window {layer.kernel}", layer.span,
                                hint="a window could then lie entirely in the padding")
            return _windowed(layer, shape, c, layer.pad, warnings)
        case ir.Subsample():
            return _windowed(layer, shape, c, (0, 0), warnings)
        case ir.GlobalAvgPool():
            return (c, 1, 1)
        case ir.FC():
            return (layer.units, 1, 1)
        case ir.Flatten():
            return (c * h * w, 1, 1)
        case ir.Act() | ir.Softmax() | ir.Dropout() | ir.BatchNorm():
            return shape
        case _:
            raise NotImplementedError(layer.kind)


def _merged(layer: ir.AnyLayer, reads: tuple[ir.Shape, ...]) -> ir.Shape:
    """add: every input the same shape; concat: the same height and width, channels summed."""
    first = reads[0]
    same = (lambda r: r == first) if isinstance(layer, ir.Add) else \
        (lambda r: r[1:] == first[1:])
    k = next((k for k, r in enumerate(reads) if not same(r)), None)
    if k is not None:
        if isinstance(layer, ir.Add):
            raise SpecError(f"{layer.label}: the branches of add[ ] must have one shape, but "
                            f"branch 1 gives {_fmt(first)} and branch {k + 1} gives "
                            f"{_fmt(reads[k])}", layer.span,
                            hint="where a branch changes the shape, project the other one to "
                                 "match: e.g. conv(128, k=1, stride=2, bias=off) - bn")
        raise SpecError(f"{layer.label}: the branches of concat[ ] must have one height and "
                        f"width, but branch 1 gives {_fmt(first)} and branch {k + 1} gives "
                        f"{_fmt(reads[k])}", layer.span,
                        hint="pad each branch's windows to keep the size, e.g. "
                             "conv(32, k=3, pad=1) or maxpool(3, stride=1, pad=1)")
    if isinstance(layer, ir.Add):
        return first
    return (sum(r[0] for r in reads), first[1], first[2])


def _check_connectivity(conv: ir.Conv, in_channels: int) -> None:
    if conv.table is not None:
        t = conv.table
        if (t.in_channels, t.out_channels) != (in_channels, conv.out_channels):
            raise SpecError(
                f"{conv.label}: table '{t.name}' is {t.in_channels}×{t.out_channels} (rows × "
                f"columns) but the layer connects {in_channels} input to {conv.out_channels} "
                f"output channels", conv.span,
                hint="a table has one row per input channel and one column per output channel")
        empty = [j for j in range(t.out_channels) if not t.inputs_of(j)]
        if empty:
            raise SpecError(f"{conv.label}: table '{t.name}' leaves output channel {empty[0]} "
                            f"with no input", conv.span)
    elif in_channels % conv.groups or conv.out_channels % conv.groups:
        raise SpecError(
            f"{conv.label}: groups={conv.groups} must divide both the input channels "
            f"({in_channels}) and the output channels ({conv.out_channels})", conv.span)


def _fmt(shape: ir.Shape) -> str:
    return "×".join(map(str, shape))
