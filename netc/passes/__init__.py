"""Every analysis of a net, in order; each pass is a pure function of the IR and earlier results.

    analyze(lenet5) -> Analysis(shapes=Shapes(outputs=((6, 28, 28), ...)), params=Params(...),
                                rf=(Field(size=(5, 5), ...), ...), cost=Cost(...))

The memory plan is not here: it depends on the batch size (passes/memory.py, called with one).
"""
from __future__ import annotations

from dataclasses import dataclass

from .. import ir
from .cost import Cost, count_cost
from .params import Params, count_params
from .receptive import Field, receptive_fields
from .shapes import Shapes, infer_shapes


@dataclass(frozen=True, slots=True)
class Analysis:
    shapes: Shapes
    params: Params
    rf: tuple[Field, ...]  # aligned with net.layers: each output's field in input pixels
    cost: Cost


def analyze(net: ir.Net) -> Analysis:
    shapes = infer_shapes(net)  # (C, H, W) per layer; SpecError on impossible or absurd sizes
    params = count_params(net, shapes)  # weights, biases, buffers, connections per layer
    rf = receptive_fields(net, shapes)  # size, jump, start per layer output
    cost = count_cost(net, shapes, params)  # MACs and bytes per sample
    return Analysis(shapes, params, rf, cost)
