"""Trainable parameters, buffers and LeCun's connection count of every layer.

    conv(6, k=5) on (1, 32, 32) -> weights 150, biases 6, connections 28·28·(150 + 6) = 122,304

Only connected channel pairs own weights: a conv with groups g or a connection table counts
kh·kw per (input, output) pair it connects. Connections are per sample, as LeCun et al. (1998)
count them: every use of a weight plus one per bias per output element; a layer with nothing to
train has none. Batchnorm's running mean and variance are buffers (saved, never trained).
"""
from __future__ import annotations

from dataclasses import dataclass

from .. import ir
from .shapes import Shapes


@dataclass(frozen=True, slots=True)
class LayerParams:
    weights: int  # trainable multipliers: conv/fc weights, subsample coefficients, bn gamma
    biases: int  # trainable offsets: conv/fc/subsample biases, bn beta
    buffers: int  # state saved with the model but not trained: bn running mean and variance
    connections: int  # per sample: weight uses + one per bias per output element

    @property
    def total(self) -> int:
        return self.weights + self.biases


@dataclass(frozen=True, slots=True)
class Params:
    layers: tuple[LayerParams, ...]  # aligned with net.layers

    @property
    def weights(self) -> int:
        return sum(p.weights for p in self.layers)

    @property
    def biases(self) -> int:
        return sum(p.biases for p in self.layers)

    @property
    def total(self) -> int:
        return self.weights + self.biases

    @property
    def buffers(self) -> int:
        return sum(p.buffers for p in self.layers)

    @property
    def connections(self) -> int:
        return sum(p.connections for p in self.layers)


def count_params(net: ir.Net, shapes: Shapes) -> Params:
    return Params(tuple(_count(layer, i, o)
                        for layer, i, o in zip(net.layers, shapes.inputs, shapes.outputs)))


def _connected_pairs(conv: ir.Conv, in_channels: int) -> int:
    """How many (input channel, output channel) pairs a conv connects."""
    if conv.table is not None:
        return sum(map(sum, conv.table.rows))
    return in_channels // conv.groups * conv.out_channels


def _count(layer: ir.AnyLayer, shape_in: ir.Shape, shape_out: ir.Shape) -> LayerParams:
    c_out, h_out, w_out = shape_out
    match layer:
        case ir.Conv():
            weights = _connected_pairs(layer, shape_in[0]) * layer.kernel[0] * layer.kernel[1]
            biases = c_out if layer.bias else 0
            return LayerParams(weights, biases, 0, h_out * w_out * (weights + biases))
        case ir.FC():
            weights = shape_in[0] * shape_in[1] * shape_in[2] * layer.units
            biases = layer.units if layer.bias else 0
            return LayerParams(weights, biases, 0, weights + biases)
        case ir.Subsample():
            # one coefficient scales the window sum, so each window input counts as a connection
            window = layer.kernel[0] * layer.kernel[1]
            return LayerParams(c_out, c_out, 0, c_out * h_out * w_out * (window + 1))
        case ir.BatchNorm():
            # gamma scales each element once and beta shifts it once
            return LayerParams(c_out, c_out, 2 * c_out, 2 * c_out * h_out * w_out)
        case (ir.Pool() | ir.GlobalAvgPool() | ir.Act() | ir.Softmax() | ir.Dropout()
              | ir.Flatten() | ir.Add() | ir.Concat()):
            return LayerParams(0, 0, 0, 0)
        case _:
            raise NotImplementedError(layer.kind)
