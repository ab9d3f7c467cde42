"""Receptive fields in input pixels, per axis (height, width), as in Araujo, Norris & Sim,
"Computing Receptive Fields of Convolutional Neural Networks" (Distill, 2019).

    conv(k=3, pad=1) -> pool(2) on 224×224:  size 3, jump 1, start 0  ->  size 4, jump 2, start 0.5

Conventions: pixel centres are 0-indexed, so the input's first pixel is at 0; padding is included,
so a field may reach outside the image and be larger than it. For each layer's output:
size = the side of the input region one element depends on; jump = the distance in input pixels
between neighbouring elements (the effective stride); start = the centre of the first element's
field. An fc, flatten or global pool is a window covering its whole input (a conv whose kernel is
the input's size); elementwise layers change nothing.

Forward, per layer with window k, stride s, pad p:  size += (k − 1)·jump,
start += ((k − 1)/2 − p)·jump, jump *= s.  Backward (rf_from), from one element of a layer's
output down to the input: size = (size − 1)·s + k.

On a graph a layer with several inputs (add, concat: a 1×1 window) takes, per axis, the field of
the input whose field is largest there (its size, jump and start): the largest over the paths that
reach it, so a residual block's sum sees what its longer branch sees. rf_from walks back along
every path from the chosen layer; where paths meet again (the layer that fanned out), the
largest extent is kept.
"""
from __future__ import annotations

from dataclasses import dataclass

from .. import ir
from .shapes import Shapes


@dataclass(frozen=True, slots=True)
class Field:
    size: ir.Pair  # input pixels one output element depends on, padding included
    jump: ir.Pair  # input pixels between neighbouring output elements
    start: tuple[float, float]  # centre of the first output element's field (0-indexed)


PIXEL = Field((1, 1), (1, 1), (0.0, 0.0))  # the input's own field: one pixel


@dataclass(frozen=True, slots=True)
class Reach:
    """The extent of one element of `label`'s output in the input and in the output of each
    layer up to it: None for a layer that is on no path to it."""

    label: str
    inputs: tuple[ir.Pair | None, ...]  # aligned with net.layers up to and including `label`
    outputs: tuple[ir.Pair | None, ...]  # the same in each layer's output; (1, 1) for `label`


def receptive_fields(net: ir.Net, shapes: Shapes) -> tuple[Field, ...]:
    """Each layer's output field, in the net's input pixels."""
    fields: list[Field] = []
    for i, (layer, shape) in enumerate(zip(net.layers, shapes.inputs)):
        reads = [PIXEL if j == ir.INPUT else fields[j] for j in net.inputs_of(i)]
        widest = [max(reads, key=lambda f: f.size[a]) for a in (0, 1)]  # the first of equals
        size = tuple(widest[a].size[a] for a in (0, 1))
        jump = tuple(widest[a].jump[a] for a in (0, 1))
        start = tuple(widest[a].start[a] for a in (0, 1))
        k, s, p = _window(layer, shape)
        size = tuple(r + (k[a] - 1) * jump[a] for a, r in enumerate(size))
        start = tuple(u + ((k[a] - 1) / 2 - p[a]) * jump[a] for a, u in enumerate(start))
        jump = tuple(j * s[a] for a, j in enumerate(jump))
        fields.append(Field(size, jump, start))
    return tuple(fields)


def feature_index(net: ir.Net, shapes: Shapes) -> int:
    """The last layer whose output is still a feature map: what the first layer that reduces its
    whole input to 1×1 reads (an fc, flatten, global pool, or a conv as large as its input).
    -1 when that is the input itself; the last layer when no layer does."""
    for i, (layer, shape_in, shape_out) in enumerate(zip(net.layers, shapes.inputs,
                                                          shapes.outputs)):
        kh, kw = _window(layer, shape_in)[0]
        if shape_out[1:] == (1, 1) and kh >= shape_in[1] and kw >= shape_in[2]:
            return net.inputs_of(i)[0]
    return len(net.layers) - 1


def rf_from(net: ir.Net, shapes: Shapes, label: str) -> Reach:
    """Walk back from one element of `label`'s output (1×1) along every path to the input."""
    index = net.index(label)  # KeyError when there is no such layer
    outputs: list[ir.Pair | None] = [None] * (index + 1)
    inputs: list[ir.Pair | None] = [None] * (index + 1)
    outputs[index] = (1, 1)
    for i in range(index, -1, -1):
        if outputs[i] is None:
            continue
        k, s, _ = _window(net.layers[i], shapes.inputs[i])
        inputs[i] = tuple((r - 1) * s[a] + k[a] for a, r in enumerate(outputs[i]))
        for j in net.inputs_of(i):
            if j != ir.INPUT:
                seen = outputs[j] or (0, 0)
                outputs[j] = tuple(max(seen[a], inputs[i][a]) for a in (0, 1))
    return Reach(label, tuple(inputs), tuple(outputs))


def _window(layer: ir.AnyLayer, shape_in: ir.Shape) -> tuple[ir.Pair, ir.Pair, ir.Pair]:
    """(kernel, stride, pad) of the layer seen as a spatial window over its input."""
    match layer:
        case ir.Conv() | ir.Pool():
            return layer.kernel, layer.stride, layer.pad
        case ir.Subsample():
            return layer.kernel, layer.stride, (0, 0)
        case ir.FC() | ir.Flatten() | ir.GlobalAvgPool():
            return shape_in[1:], (1, 1), (0, 0)
        case ir.Act() | ir.Softmax() | ir.Dropout() | ir.BatchNorm() | ir.Add() | ir.Concat():
            return (1, 1), (1, 1), (0, 0)
        case _:
            raise NotImplementedError(layer.kind)
