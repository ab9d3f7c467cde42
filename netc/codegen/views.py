"""Every number and pointer expression a template prints, computed here where tests can see it.

Pure: no I/O. `net_view(net, shapes, plan)` returns plain dicts and lists: one view per layer
(its template, shape constants, the `Slots` pointers it gets) plus the net-wide constants.

Text reaches C only as one of the C text types of env.py, the only strs its templates print:
`Comment` (any text, escaped to safe ASCII, for `//` comments only), `Ident` (a checked C
identifier) and `Code` (C built here from numbers and fixed words). The view holds no other text
a template could print: a spec's names and labels are Comments.
"""
from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass

import numpy as np

from .. import __version__, ir
from ..errors import SpecError
from ..passes.memory import Plan
from ..passes.schedule import LANE_PAD, Kernel
from ..passes.shapes import Shapes
from .env import ByteString, Code, Comment, Ident

ABI_VERSION = 1
REAL = {"float32": "float", "float64": "double"}
ACTIVATIONS = ("identity", "relu", "sigmoid", "tanh")  # the act_<name> functions of the prelude


def lit(v: float, dtype: str) -> Code:
    """A C literal of type `real`: 0.5f in the float build, 0.5 in the double build."""
    if not math.isfinite(v):
        raise SpecError(f"a layer argument is {v!r}: every number must be finite")
    text = repr(float(v))
    return Code(text + "f" if dtype == "float32" else text)


def act_name(act: ir.Activation | None, span=None) -> Ident:
    name = "identity" if act is None else act.kind
    if name not in ACTIVATIONS:
        raise SpecError(f"unknown activation {name!r}", span,
                        hint=f"one of {', '.join(ACTIVATIONS[1:])}")
    return Ident(name)


def describe(layer: ir.AnyLayer, in_shape: ir.Shape, out_shape: ir.Shape) -> Comment:
    """One line for the C comments: label, kind, arguments, shapes."""
    def pair(p):
        return f"{p[0]}x{p[1]}"
    match layer:
        case ir.Conv():
            conn = f", table {layer.table.name}" if layer.table else (
                f", groups {layer.groups}" if layer.groups > 1 else "")
            what = (f"conv {layer.out_channels} {pair(layer.kernel)} stride {pair(layer.stride)} "
                    f"pad {pair(layer.pad)}{conn}{'' if layer.bias else ', no bias'}")
        case ir.Pool():
            what = (f"{layer.mode} pool {pair(layer.kernel)} stride {pair(layer.stride)} "
                    f"pad {pair(layer.pad)}")
        case ir.Subsample():
            what = f"subsample {pair(layer.kernel)} stride {pair(layer.stride)}"
        case ir.FC():
            what = f"fc {layer.units}{'' if layer.bias else ', no bias'}"
        case ir.Act():
            what = _act_text(layer.fn)
        case ir.Dropout():
            what = f"dropout p={layer.p}"
        case ir.BatchNorm():
            what = f"batchnorm eps={layer.eps} momentum={layer.momentum}"
        case _:
            what = layer.kind
    act = getattr(layer, "act", None)
    if act is not None and not isinstance(layer, ir.Act):
        what += f", {_act_text(act)}"
    fmt = ", ".join
    return Comment(f"{layer.label}: {what}: ({fmt(map(str, in_shape))}) -> "
                   f"({fmt(map(str, out_shape))})")


def _act_text(act: ir.Activation) -> str:
    if act.kind == "relu":
        return "relu"
    if act.kind == "sigmoid":
        return f"sigmoid a={act.a}"
    return f"tanh a={act.a} b={act.b}"


LIBRARY_ENTRIES = ("run(const float* x, float* y, void* arena)",
                   "run_batch(const float* x, float* y, int n, void* arena)",
                   "classify(const float* x, void* arena)")
NORMALIZATIONS = ("none", "mean", "standard", "matrix")


@dataclass(frozen=True)
class Library:
    """The standalone library target (templates/targets/library.*): the prefix of its symbols
    and the input normalisation its entry points apply, from a checkpoint's Normalizer: `mean`
    x - mean[c] and `standard` (x - mean[c]) · scale[c] with one statistic for each `group`
    consecutive inputs (a channel), `matrix` (x - mean) · M (PCA or ZCA whitening)."""

    prefix: str  # a C identifier; macros take it upper-cased
    normalize: str = "none"  # one of NORMALIZATIONS
    mode: str = "none"  # the checkpoint's name for it (standard, zca, ...), for the comments
    stats: int = 0  # mean, standard: the statistics (channels); matrix: the input size
    group: int = 1  # mean, standard: the inputs each statistic covers

    def __post_init__(self):
        Ident(self.prefix)
        if self.normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize must be one of {NORMALIZATIONS}, not {self.normalize!r}")

    @property
    def constants(self) -> int:
        """Floats of <prefix>_normalization: the mean, then the scale or the matrix."""
        return {"none": 0, "mean": self.stats, "standard": 2 * self.stats,
                "matrix": self.stats + self.stats ** 2}[self.normalize]


def net_view(net: ir.Net, shapes: Shapes, plan: Plan, library: Library | None = None) -> dict:
    dt = plan.dtype
    if net.loss not in ir.LOSSES:  # it names the loss template
        raise SpecError(f"unknown loss {net.loss!r}", hint=f"one of {', '.join(ir.LOSSES)}")
    off = {b.name: b.offset for b in plan.buffers}
    at = {b.name: f"{b.arena} + {b.offset}" for b in plan.buffers}  # its C pointer expression
    fused = plan.schedule.fused_loss
    if net.loss == "cross_entropy" and not fused:
        raise SpecError("the cross-entropy loss needs the network to end in a softmax",
                        net.layers[-1].span if net.layers else None,
                        hint="end the network with softmax, or use the mse loss")
    layers = []
    for i, (layer, ins, outs) in enumerate(zip(net.layers, shapes.inputs, shapes.outputs)):
        kernel = plan.schedule.kernels[i]
        v = dict(
            index=i, label=Comment(layer.label), comment=describe(layer, ins, outs),
            template=f"layers/{kernel.template}.c.j2",
            c_in=ins[0], h_in=ins[1], w_in=ins[2], c_out=outs[0], h_out=outs[1], w_out=outs[2],
            in_size=ins[0] * ins[1] * ins[2], out_size=outs[0] * outs[1] * outs[2],
            in_shape=_tuple(ins), out_shape=_tuple(outs),
            reads=Comment(", ".join(net.input_label(j) for j in net.inputs_of(i))),
            n_inputs=len(net.inputs_of(i)),  # a merge: each input's size and its offset in out
            input_sizes=_tuple(map(_size, shapes.sources[i])),
            input_offsets=_tuple(sum(map(_size, shapes.sources[i][:k]))
                                 for k in range(len(net.inputs_of(i)))),
        )
        v.update(_kind_view(layer, ins, dt))
        # batch-parallel: every sample independent (batch statistics and the dropout generator
        # couple them: those layers run on one thread over the whole batch)
        v["parallel"] = int(not isinstance(layer, (ir.BatchNorm, ir.Dropout)))
        v["runner"] = Ident("run_parts" if v["parallel"] else "run_whole")
        # running statistics, updated after a training call unless its loss is not finite
        v["keeps_stats"] = int(isinstance(layer, ir.BatchNorm))
        v.update(_kernel_view(kernel, plan))
        # the activation of the conv this one reads, whose derivative it applies (dx_act)
        j = net.inputs_of(i)[0]
        v["dx_act"] = _act_args(net.layers[j].act, dt, layer.span) if kernel.dx_act else None
        v["slots"] = _slots(net, i, at, kernel.workspace)
        v["merge_slots"] = _merge_slots(net, i, at)
        v["waits"] = plan.waits[i]
        layers.append(v)
    backward = [v for v in reversed(layers) if not (fused and v["index"] == len(layers) - 1)]
    grads_start, _ = plan.region("grads")
    view = dict(
        name=Comment(net.name), ident=Ident(identifier(net.name)), version=Comment(__version__),
        abi=ABI_VERSION, dtype=Ident(dt), real=Ident(REAL[dt]),
        batch=plan.batch, mem_size=plan.mem_size, imem_size=plan.imem_size,
        param_count=plan.param_count, decay_count=plan.decay_count, grads_offset=grads_start,
        optimizer_slots=_optimizer_slots(plan),
        training=int(plan.training),  # 0: an inference build, the forward alone
        step_offset=off.get("optimizer.step", 0), rng_offset=off.get("rng.state", 0),
        dx_offset=off.get("input.grad", 0),
        input_shape=_tuple(net.input), output_shape=_tuple(shapes.outputs[-1]),
        layers=layers, backward=backward,
        threads=plan.threads, parts=plan.parts, threads_offset=off.get("threads", 0),
        part_grads=_tuple([0] + [off[f"grads.part{p}"] - grads_start if plan.training else 0
                                 for p in range(1, plan.parts)]),
        part_ws=_tuple([0] + [off[f"workspace.part{p}"] - off["workspace"]
                              if "workspace" in off else 0 for p in range(1, plan.parts)]),
        fused=[v for v in layers if v not in backward],
        loss_template=f"loss/{net.loss}.c.j2", last=len(layers) - 1,
        optimizer_template=f"optim/{plan.optimizer}.c.j2",
        classes=_size(shapes.outputs[-1]),
        max_inputs=max(len(net.inputs_of(i)) for i in range(len(net.layers))),
        regions=[dict(role=Ident(r), start=s, end=e) for r, s, e in plan.regions],
        buffers=[dict(name=Comment(b.name), role=Ident(b.role), arena=Ident(b.arena),
                      offset=b.offset, shape=_tuple(b.shape)) for b in plan.buffers],
        weights_size=plan.weights_size,
        weights_regions=[dict(role=Ident(r), start=s, end=e) for r, s, e in plan.weights_regions],
    )
    if library is not None:
        view.update(_library_view(net, shapes, plan, library, off))
    return view


def _library_view(net: ir.Net, shapes: Shapes, plan: Plan, library: Library, off: dict) -> dict:
    """What the library target's templates print beyond the network."""
    lib = library
    formula = {"none": "none: x is used as it is", "mean": "x - mean[c]",
               "standard": "(x - mean[c]) * scale[c]", "matrix": "(x - mean) M"}[lib.normalize]
    norm_doc = ("It is used as it is." if lib.normalize == "none" else
                f"The checkpoint's input normalisation ({lib.mode}: {formula}) is applied inside.")
    out = net.layers[-1]
    return dict(
        prefix=Ident(lib.prefix), PREFIX=Ident(lib.prefix.upper()),
        input_size=_size(net.input), output_size=_size(shapes.outputs[-1]),
        input_offset=off["input"], output_offset=off[out.label + ".out"],
        arena_bytes=plan.mem_size * plan.real_bytes,
        normalize=Ident(lib.normalize), norm_mode=Comment(lib.mode), norm_formula=Comment(formula),
        norm_stats=lib.stats, norm_group=lib.group, norm_offset=plan.weights_size,
        weights_floats=plan.weights_size + lib.constants,
        norm_doc=Comment(norm_doc),
        output_doc=Comment(f", {out.label}: probabilities that sum to 1"
                           if isinstance(out, ir.Softmax) else f", {out.label}"),
    )


def weights_view(plan: Plan, library: Library, values: dict, normalization) -> dict:
    """<prefix>_weights.c's view: the plan's `weights` arena (each buffer from `values`, the
    alignment gaps zero) then the normalisation constants, as the bytes of little-endian
    float32s, one piece per tensor."""
    arena = np.zeros(plan.weights_size + library.constants, "<f4")
    pieces, top = [], 0
    for b in sorted((b for b in plan.buffers if b.arena == "weights"), key=lambda b: b.offset):
        pieces.append((f"{b.name} ({', '.join(map(str, b.shape))}) at {b.offset}", top,
                       b.offset + b.size))
        arena[b.offset:b.offset + b.size] = np.asarray(values[b.name], np.float32).ravel()
        top = b.offset + b.size
    if library.constants:
        pieces.append((f"the input normalisation at {plan.weights_size}", top, len(arena)))
        arena[plan.weights_size:] = np.asarray(normalization, np.float32).ravel()
    if not np.isfinite(arena).all():
        raise ValueError("a weight is NaN or infinite")
    data = arena.tobytes()
    return dict(prefix=Ident(library.prefix), size=len(arena),
                tensors=[dict(name=Comment(name), bytes=ByteString(data[4 * lo:4 * hi]))
                         for name, lo, hi in pieces])


_TRAILING_ZEROS = re.compile(r"\.?0+p")


def hex_floats(values, per_line: int = 6) -> Code:
    """float32 values as C99 hexadecimal literals (0x1.8p+3f), which any C compiler reads back
    bit for bit, `per_line` to a line."""
    flat = np.asarray(values, dtype=np.float32).ravel()
    if not np.isfinite(flat).all():
        raise ValueError("a weight is NaN or infinite")
    words = [h + "f" for h in _TRAILING_ZEROS.sub("p", " ".join(
        map(float.hex, flat.astype(np.float64).tolist()))).split(" ")] if flat.size else []
    lines = (", ".join(words[i:i + per_line]) for i in range(0, len(words), per_line))
    return Code(",\n    ".join(lines))


def _slots(net: ir.Net, i: int, at: dict, ws_size: int) -> list[tuple[Ident, Code]]:
    """(field, C expression) pairs that fill layer i's `Slots`; absent fields stay NULL. A layer
    that reads the network's input reads the caller's x (or a standalone library's copy of it)
    and accumulates into dx (NULL unless the input gradient is wanted)."""
    layer = net.layers[i]
    label = layer.label
    inp, dinp = _source(net, net.inputs_of(i)[0], at)
    s = [("out", at[label + ".out"]), ("inp", inp)]
    if label + ".out.grad" in at:  # absent for a softmax fused with the cross-entropy loss
        s.append(("dout", at[label + ".out.grad"]))
    s.append(("dinp", dinp))
    params = [(field, f"{label}.{suffix}") for field, suffix in (("w", "weight"), ("b", "bias"))
              if f"{label}.{suffix}" in at]
    s += [(field, at[name]) for field, name in params]
    s += [("d" + field, at[name + ".grad"]) for field, name in params if name + ".grad" in at]
    for field, name in (("buf", f"{label}.running_mean"), ("aux", f"{label}.mask"),
                        ("aux", f"{label}.batch_stats"), ("iaux", f"{label}.argmax")):
        if name in at:
            s.append((field, at[name]))
    if isinstance(layer, ir.Dropout) and "rng.state" in at:
        s.append(("iaux", at["rng.state"]))
    if label + ".scratch" in at:  # a one-chunk inference plan: scratch of its own, by liveness
        s.append(("ws", at[label + ".scratch"]))
    elif ws_size and "workspace" in at:
        s.append(("ws", at["workspace"]))
    return [(Ident(field), Code(expr)) for field, expr in s]


def _merge_slots(net: ir.Net, i: int, at: dict) -> list[tuple[int, Code, Code]]:
    """(k, input k, its gradient) of a merge: the `ins` and `dins` of its Slots."""
    if not isinstance(net.layers[i], ir.MERGES):
        return []
    return [(k, Code(x), Code(dx)) for k, (x, dx) in
            enumerate(_source(net, j, at) for j in net.inputs_of(i))]


def _source(net: ir.Net, j: int, at: dict) -> tuple[str, str]:
    """The C expressions of what index j in `inputs` names, and of its gradient."""
    if j == ir.INPUT:
        return at.get("input", "x"), "dx"
    label = net.layers[j].label
    return at[label + ".out"], at.get(label + ".out.grad", "NULL")


def _kernel_view(kernel: Kernel, plan: Plan) -> dict:
    """The schedule's choices for one layer, as the template prints them."""
    return dict(ws_size=kernel.workspace, ws=dict(kernel.slices), first=kernel.first[0],
                firsts=_tuple(kernel.first), fc_transposed=int(kernel.fc_transposed),
                chunk_pad=plan.schedule.chunk_pad, im2col=int(kernel.im2col),
                direct_dx=int(kernel.direct_dx), dw_rows=int(kernel.dw_rows),
                fwd_rows=int(kernel.fwd_rows), dz_ready=int(kernel.dz_ready),
                tile_rows=kernel.tile_rows,
                lane_pad=LANE_PAD)


def _act_args(act: ir.Activation | None, dt: str, span=None) -> tuple[Ident, Code, Code]:
    return (act_name(act, span), lit(act.a if act else 1.0, dt), lit(act.b if act else 1.0, dt))


def _kind_view(layer: ir.AnyLayer, ins: ir.Shape, dt: str) -> dict:
    act = getattr(layer, "act", None)
    name, a, b = _act_args(act, dt, layer.span)
    common = dict(act=name, has_act=int(act is not None), act_a=a, act_b=b)
    match layer:
        case ir.Conv():
            (kh, kw), (sh, sw), (ph, pw) = layer.kernel, layer.stride, layer.pad
            return dict(common, kh=kh, kw=kw, sh=sh, sw=sw, ph=ph, pw=pw,
                        blocks=[_tuple(b) for b in conv_blocks(layer, ins[0])])
        case ir.Pool():
            (kh, kw), (sh, sw), (ph, pw) = layer.kernel, layer.stride, layer.pad
            return dict(common, kh=kh, kw=kw, sh=sh, sw=sw, ph=ph, pw=pw,
                        is_max=int(layer.mode == "max"), inv_window=lit(1 / (kh * kw), dt))
        case ir.Subsample():
            (kh, kw), (sh, sw) = layer.kernel, layer.stride
            return dict(common, kh=kh, kw=kw, sh=sh, sw=sw, inv_window=lit(1 / (kh * kw), dt))
        case ir.GlobalAvgPool():
            return dict(common, inv_window=lit(1 / (ins[1] * ins[2]), dt))
        case ir.Act():
            return dict(common, act=act_name(layer.fn, layer.span), act_a=lit(layer.fn.a, dt),
                        act_b=lit(layer.fn.b, dt))
        case ir.Dropout():
            keep = 1.0 - layer.p
            return dict(common, p=lit(layer.p, dt), scale=lit(1 / keep if keep > 0 else 0.0, dt))
        case ir.BatchNorm():
            return dict(common, eps=lit(layer.eps, dt), momentum=lit(layer.momentum, dt))
        case ir.FC() | ir.Softmax() | ir.Flatten() | ir.Add() | ir.Concat():
            return common
        case _:
            raise NotImplementedError(layer.kind)


def conv_blocks(conv: ir.Conv, c_in: int) -> list[tuple[int, int, int, int, int, int]]:
    """The dense sub-matrices of a conv's weight, one GEMM each:
    (first out channel, out channels, first in channel, in channels, weight offset, row length),
    offsets and row lengths in reals. Dense: one block; groups: one per group; a table: one per
    run of consecutive connected inputs of an output channel (its weights are contiguous because
    the table weight [connections, kh, kw] is out-major with inputs ascending)."""
    kk = conv.kernel[0] * conv.kernel[1]
    if conv.table is None:
        g = conv.groups
        co, ci = conv.out_channels // g, c_in // g
        return [(k * co, co, k * ci, ci, k * co * ci * kk, ci * kk) for k in range(g)]
    blocks, conn = [], 0
    for j in range(conv.out_channels):
        inputs = conv.table.inputs_of(j)
        start = 0
        for k in range(1, len(inputs) + 1):
            if k == len(inputs) or inputs[k] != inputs[k - 1] + 1:
                run = k - start
                blocks.append((j, 1, inputs[start], run, (conn + start) * kk, run * kk))
                start = k
        conn += len(inputs)
    return blocks


def identifier(name: str) -> str:
    """The net's name as a C identifier (for the header guard and the library name)."""
    ident = "".join(ch if ch.isascii() and (ch.isalnum() or ch == "_") else "_"
                    for ch in name) or "net"
    return ident if ident[0].isalpha() or ident[0] == "_" else "net_" + ident


def _optimizer_slots(plan: Plan) -> list[tuple[Ident, int]]:
    """("OFF_MOMENTUM", offset), or OFF_M and OFF_V for adam."""
    return [(Ident("OFF_" + b.name.split(".", 1)[1].upper()), b.offset)
            for b in plan.by_role("optimizer") if b.arena == "mem"]


def _size(shape) -> int:
    return shape[0] * shape[1] * shape[2]


def _tuple(values) -> Code:
    """Whole numbers as a C list: 1, 6, 6."""
    return Code(", ".join(str(operator.index(v)) for v in values))
