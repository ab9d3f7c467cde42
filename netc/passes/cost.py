"""Arithmetic and storage per sample: forward MACs, a training step's MACs, and bytes.

    conv(6, k=5) on (1, 32, 32) -> 28·28·150 = 117,600 MACs = 235,200 FLOPs, 6·28·28·4 B out

Conventions, stated once: FLOPs = 2 × MACs. A MAC is one use of a trained multiplier: a conv or fc
weight, a subsample coefficient (once per window input, as the window sum feeds it), a batchnorm
gamma (once per element, scale and shift). Biases, activations, pooling, softmax, dropout,
flattening, add and concat do no MACs and are not counted: they are elementwise and small next
to conv and fc.
A training step costs 3 × forward: backward computes both the input gradient and the weight
gradient, each as many MACs as the forward pass.
"""
from __future__ import annotations

from dataclasses import dataclass

from .. import ir
from .memory import DTYPES
from .params import Params
from .shapes import Shapes

TRAIN_FACTOR = 3  # forward + input gradient + weight gradient


@dataclass(frozen=True, slots=True)
class LayerCost:
    macs: int  # forward multiply-accumulates per sample
    param_bytes: int  # trainable parameters
    buffer_bytes: int  # saved, untrained state (batchnorm running statistics)
    act_bytes: int  # the layer's output, per sample

    @property
    def flops(self) -> int:
        return 2 * self.macs

    @property
    def train_macs(self) -> int:
        return TRAIN_FACTOR * self.macs


@dataclass(frozen=True, slots=True)
class Cost:
    layers: tuple[LayerCost, ...]  # aligned with net.layers
    dtype: str

    @property
    def macs(self) -> int:
        return sum(c.macs for c in self.layers)

    @property
    def flops(self) -> int:
        return 2 * self.macs

    @property
    def train_macs(self) -> int:
        return TRAIN_FACTOR * self.macs

    @property
    def train_flops(self) -> int:
        return 2 * self.train_macs

    @property
    def param_bytes(self) -> int:
        return sum(c.param_bytes for c in self.layers)

    @property
    def buffer_bytes(self) -> int:
        return sum(c.buffer_bytes for c in self.layers)

    @property
    def act_bytes(self) -> int:
        """Every layer's output for one sample (the input not included)."""
        return sum(c.act_bytes for c in self.layers)


def count_cost(net: ir.Net, shapes: Shapes, params: Params, dtype: str = "float32") -> Cost:
    size = DTYPES[dtype]  # bytes per element
    return Cost(tuple(
        LayerCost(_macs(layer, p.weights, out), size * p.total, size * p.buffers,
                  size * out[0] * out[1] * out[2])
        for layer, p, out in zip(net.layers, params.layers, shapes.outputs)), dtype)


def _macs(layer: ir.AnyLayer, weights: int, shape_out: ir.Shape) -> int:
    c, h, w = shape_out
    match layer:
        case ir.Conv():
            return h * w * weights  # every weight once per output position
        case ir.FC():
            return weights
        case ir.Subsample():
            return c * h * w * layer.kernel[0] * layer.kernel[1]
        case ir.BatchNorm():
            return c * h * w
        case (ir.Pool() | ir.GlobalAvgPool() | ir.Act() | ir.Softmax() | ir.Dropout()
              | ir.Flatten() | ir.Add() | ir.Concat()):
            return 0
        case _:
            raise NotImplementedError(layer.kind)
