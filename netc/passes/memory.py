"""THE layout decision: NCHW tensors in two flat arenas, and the offset of every buffer in them.

Pure: no I/O, no compiler. The generated C prints these offsets as constants, the runtime allocates
exactly `mem_size` reals and `imem_size` int32s, and the report shows `total_bytes`: one plan.

Layout. `mem` (float32 or float64) holds, in this order, each region contiguous:

    params | grads | optimizer | buffers | activations | act_grads | saved | workspace | io

and `imem` (int32) holds `buffers` (the dropout RNG state) | `optimizer` (the step counter) |
`saved` (max-pool arg-max). Within `params` the weights (the L2-decayed tensors) come first, then
biases, subsample coefficients' biases and BN scale/shift, so weight decay covers the prefix
`[0, decay_count)` and the optimizer is one loop over `param_count`. `grads` mirrors `params`
exactly (grad offset = param offset + param_count); sgd keeps one momentum copy of the region,
adam two (m, v). Activations and their gradients are [batch, C, H, W] per layer output; a call with
B < batch uses the first B samples. Every buffer starts on a 64-byte boundary (except a BN
layer's running_var, which directly follows its running_mean so that one pointer reaches both).
`workspace` is one scratch buffer shared by all layers: the largest need of one batch chunk
(`workspace_size`: a conv's im2col and backward scratch, an fc's transposed chunk).

Threads. A step splits the batch into `parts` fixed chunks (chunk p: samples [p·c, (p+1)·c) with
c = ceil(B / parts)) that threads share; chunk p accumulates its parameter gradients into its own
copy and uses its own workspace, and the copies are added into the `grads` mirror in part order.
So the result depends on `parts` only, never on how many threads ran: `parts` = `threads`
(same threads, same results) or, `deterministic`, DETERMINISTIC_PARTS whatever the threads. Part
0 is the mirror and `workspace` itself; parts 1.. add `grads.part<p>` (param_count reals, in the
`grads` region after the mirror) and `workspace.part<p>`. imem's `threads` word (after the RNG
state) holds the run-time thread count.

Tiny example, fc(2) with bias on a (3, 1, 1) input, mse, batch 4, float32, sgd (offsets in
elements; 64 bytes = 16 floats):

    fc.weight           params       (2, 3)         mem + 0     fc.bias       params    mem + 16
    fc.weight.grad      grads        (2, 3)         mem + 32    fc.bias.grad  grads     mem + 48
    optimizer.momentum  optimizer    (32,)          mem + 64
    fc.out              activations  (4, 2, 1, 1)   mem + 96
    fc.out.grad         act_grads    (4, 2, 1, 1)   mem + 112
    input.grad          io           (4, 3, 1, 1)   mem + 128   -> mem_size 144
    rng.state           buffers      (4,)           imem + 0    threads       buffers   imem + 4
    optimizer.step      optimizer    (1,)           imem + 16   -> imem_size 32; 704 bytes
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .. import ir
from ..errors import InputError
from .shapes import LIMIT, Shapes

ROLES = ("params", "grads", "optimizer", "buffers", "activations", "act_grads", "saved",
         "workspace", "io")
DTYPES = {"float32": 4, "float64": 8}
ELEMENT_BYTES = {**DTYPES, "int32": 4}
OPTIMIZERS = ("sgd", "adam")
DETERMINISTIC_PARTS = 8  # batch chunks of a deterministic plan: results equal for 1 to 8 threads
ALIGN_BYTES = 64
RNG_WORDS = 4  # xoshiro128** state


@dataclass(frozen=True, slots=True)
class Buffer:
    name: str  # unique: "conv1.weight", "conv1.weight.grad", "conv1.out", "pool1.argmax", ...
    role: str  # one of ROLES
    layer: str  # the owning layer's label; "" for net-wide buffers
    shape: tuple[int, ...]
    arena: str  # "mem" (real) or "imem" (int32)
    dtype: str  # the element type: the plan's dtype in mem, "int32" in imem
    offset: int  # in elements from the start of its arena

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.size * ELEMENT_BYTES[self.dtype]


@dataclass(frozen=True, slots=True)
class Plan:
    batch: int  # the compiled (largest) batch
    dtype: str  # "float32" | "float64"
    optimizer: str  # "sgd" | "adam"
    buffers: tuple[Buffer, ...]
    mem_size: int  # reals in `mem`
    imem_size: int  # int32s in `imem`
    param_count: int  # length of the params region (= grads region), alignment padding included
    decay_count: int  # the weights prefix of params that L2 weight decay applies to
    regions: tuple[tuple[str, int, int], ...]  # (role, start, end) in `mem`, in layout order
    imem_regions: tuple[tuple[str, int, int], ...]  # the same for `imem`
    threads: int = 1  # threads a step uses (run time: the imem `threads` word)
    parts: int = 1  # batch chunks, each with its own gradient copy and workspace
    deterministic: bool = False  # parts fixed (DETERMINISTIC_PARTS), not threads

    @property
    def real_bytes(self) -> int:
        return DTYPES[self.dtype]

    @property
    def total_bytes(self) -> int:
        return self.mem_size * self.real_bytes + self.imem_size * 4

    def bytes_by_role(self) -> dict[str, int]:
        """Bytes per role, alignment padding included (each role's region), in ROLES order."""
        out = dict.fromkeys(ROLES, 0)
        for role, start, end in self.regions:
            out[role] += (end - start) * self.real_bytes
        for role, start, end in self.imem_regions:
            out[role] += (end - start) * 4
        return out

    def find(self, name: str) -> Buffer | None:
        return next((b for b in self.buffers if b.name == name), None)

    def buffer(self, name: str) -> Buffer:
        found = self.find(name)
        if found is None:
            raise KeyError(name)
        return found

    def region(self, role: str) -> tuple[int, int]:
        """[start, end) of a role's region in `mem`."""
        for r, start, end in self.regions:
            if r == role:
                return start, end
        raise KeyError(role)

    def by_role(self, role: str) -> tuple[Buffer, ...]:
        return tuple(b for b in self.buffers if b.role == role)


class _Arena:
    """Hands out aligned offsets in one arena, region by region."""

    def __init__(self, name: str, dtype: str):
        self.name, self.dtype, self.top = name, dtype, 0
        self.align = ALIGN_BYTES // ELEMENT_BYTES[dtype]
        self.buffers: list[Buffer] = []
        self.regions: list[tuple[str, int, int]] = []
        self._role, self._start = None, 0

    def begin(self, role: str) -> None:
        self._role, self._start = role, self.top

    def end(self) -> None:
        self.top = self._aligned(self.top)
        self.regions.append((self._role, self._start, self.top))

    def add(self, name: str, layer: str, shape: tuple[int, ...], *, align: bool = True) -> Buffer:
        offset = self._aligned(self.top) if align else self.top
        buf = Buffer(name, self._role, layer, tuple(shape), self.name, self.dtype, offset)
        self.top = offset + buf.size
        self.buffers.append(buf)
        return buf

    def aligned_top(self) -> int:
        return self._aligned(self.top)

    def _aligned(self, n: int) -> int:
        return -(-n // self.align) * self.align


def param_shapes(layer: ir.AnyLayer, in_shape: ir.Shape) -> list[tuple[str, tuple[int, ...], bool]]:
    """(suffix, shape, decayed) of each parameter tensor of a layer, in PyTorch naming."""
    c, h, w = in_shape
    match layer:
        case ir.Conv(table=ir.Table() as t):
            kh, kw = layer.kernel
            conns = sum(sum(row) for row in t.rows)
            return [("weight", (conns, kh, kw), True)] + _bias(layer.bias, layer.out_channels)
        case ir.Conv():
            kh, kw = layer.kernel
            return ([("weight", (layer.out_channels, c // layer.groups, kh, kw), True)]
                    + _bias(layer.bias, layer.out_channels))
        case ir.FC():
            return [("weight", (layer.units, c * h * w), True)] + _bias(layer.bias, layer.units)
        case ir.Subsample():
            return [("weight", (c,), True), ("bias", (c,), False)]
        case ir.BatchNorm():
            return [("weight", (c,), False), ("bias", (c,), False)]
        case (ir.Pool() | ir.GlobalAvgPool() | ir.Act() | ir.Softmax() | ir.Dropout() | ir.Flatten()
              | ir.Add() | ir.Concat()):
            return []
        case _:
            raise NotImplementedError(layer.kind)


def _bias(has: bool, n: int) -> list[tuple[str, tuple[int, ...], bool]]:
    return [("bias", (n,), False)] if has else []


def workspace_size(layer: ir.AnyLayer, in_shape: ir.Shape, out_shape: ir.Shape,
                   chunk: int = 1) -> int:
    """Scratch reals one layer needs for one batch chunk (templates/layers/conv.c.j2 lays it out
    with the same arithmetic and checks it against this at compile time): a conv's backward
    keeps ∂Wᵀ of the chunk (CI·KK × COP), one sample's ∂Zᵀ (P × COP), the flipped weight of a
    direct input gradient (CI·CO·KK), then the column area: the im2col matrix (CI·KK × P, the
    forward uses only this), or for a direct input gradient the larger of it and the im2col
    matrix of ∂Z (CO·KK × HI·WI). COP is CO rounded up to LANE_PAD, so every vector is full.
    A fully connected layer (or a conv run as one) with chunks of at least LANE_PAD samples
    transposes its chunk: inputs (IN × MP) and outputs (OUT × MP), MP = chunk rounded up to
    LANE_PAD (`fc_transposed`); smaller chunks need nothing. A conv whose ∂W goes by rows
    (`weight_grad_by_rows`) keeps no ∂Wᵀ or ∂Zᵀ but the areas the template lists. A conv whose
    forward goes by rows (`conv_by_rows`) needs, at offset 0, the zero-padded input
    (CI·HP·WP + LR) and its output in rows (CO × LR), LR = HO·WP rounded up to LANE_PAD; the
    workspace is the larger of the two needs."""
    match layer:
        case ir.FC() | ir.Conv() if isinstance(layer, ir.FC) or conv_as_fc(layer, in_shape):
            if not fc_transposed(chunk):
                return 0
            mp = -(-chunk // LANE_PAD) * LANE_PAD
            return (_prod(in_shape) + _prod(out_shape)) * mp
        case ir.Conv():
            (ci, hi, wi), (co, ho, wo) = in_shape, out_shape
            kh, kw = layer.kernel
            kk, p, cop = kh * kw, ho * wo, -(-co // LANE_PAD) * LANE_PAD
            hp, wp = ho + kh - 1, wo + kw - 1
            lr = -(-ho * wp // LANE_PAD) * LANE_PAD
            rows = conv_by_rows(layer, in_shape, out_shape)
            forward = ci * hp * wp + lr + co * lr if rows else 0
            col = ci * kk * p if needs_im2col(layer) else 0
            if direct_input_grad(layer, in_shape, out_shape):
                col = ci * co * kk + max(col, co * kk * hi * wi)
            if weight_grad_by_rows(layer, in_shape, out_shape):
                # after the column area: ∂W in lanes (CO·CI·KK × LANE_PAD), ∂Z with rows
                # WP long (CO × LR), the zero-padded input (CI·HP·WP + LR)
                return max(forward, col + co * ci * kk * LANE_PAD + co * lr + ci * hp * wp + lr)
            return max(forward, ci * kk * cop + p * cop + col)
        case _:
            return 0


def fc_transposed(chunk: int) -> bool:
    """A fully connected forward over chunks of `chunk` samples computes outᵀ = W·inpᵀ (the
    samples along the vector lanes) when the chunk fills a vector; dot products otherwise."""
    return chunk >= LANE_PAD


def _prod(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


LANE_PAD = 16  # conv ∂W scratch rows rounded up to this many reals (AVX-512 float32 lanes)


def conv_by_rows(conv: ir.Conv, in_shape: ir.Shape, out_shape: ir.Shape) -> bool:
    """The forward by rows (`_rows_pay`) where the extra columns cost at most 1/8 of the products:
    below that the column matrix it saves is cheaper than they are."""
    return _rows_pay(conv, in_shape, out_shape, waste=1 / 8)


def weight_grad_by_rows(conv: ir.Conv, in_shape: ir.Shape, out_shape: ir.Shape) -> bool:
    """∂W by rows: ∂W[oc][(c·KH + i)·KW + j] = Σ_t ∂Zp[oc][t] Xp[(c·HP + i)·WP + j + t] (the extra
    entries of ∂Zp are zeros), up to 1/4 extra columns (LeNet-5's and MNIST-BASE's first convs):
    the alternative builds the column matrix a second time and takes dot products."""
    return _rows_pay(conv, in_shape, out_shape, waste=1 / 4)


def _rows_pay(conv: ir.Conv, in_shape: ir.Shape, out_shape: ir.Shape, waste: float) -> bool:
    """A dense stride-1 conv with a short inner dimension (CI·KK ≤ 64, e.g. a first layer on RGB)
    can work on its zero-padded input read in rows WP = WO + KW - 1 long, where every kernel tap
    (c, i, j) is one contiguous offset (c·HP + i)·WP + j: products over whole rows with no column
    matrix, at the price of KW - 1 extra columns per row, at most `waste` of the products."""
    (ci, _, _), (_, _, wo) = in_shape, out_shape
    kh, kw = conv.kernel
    return (conv.table is None and conv.groups == 1 and conv.stride == (1, 1)
            and ci * kh * kw <= 64 and wo + kw - 1 <= (1 + waste) * wo)


def direct_input_grad(conv: ir.Conv, in_shape: ir.Shape, out_shape: ir.Shape) -> bool:
    """A dense stride-1 'same' conv computes ∂X as a convolution of ∂Z with the flipped weight
    (one GEMM with a long inner dimension, no col2im); it does no more work than ∂col = Wᵀ∂Z
    only when the output is as large as the input."""
    return (conv.table is None and conv.groups == 1 and conv.stride == (1, 1)
            and tuple(in_shape[1:]) == tuple(out_shape[1:]))


def conv_as_fc(conv: ir.Conv, in_shape: ir.Shape) -> bool:
    """A dense, unpadded conv whose kernel covers its whole input (a 1×1 output) is a fully
    connected layer with the same weight layout: the generated C runs it as one."""
    return (conv.table is None and conv.groups == 1 and conv.pad == (0, 0)
            and conv.kernel == tuple(in_shape[1:]))


def needs_im2col(conv: ir.Conv) -> bool:
    """A 1×1, stride-1, unpadded conv reads its input as the column matrix directly."""
    return not (conv.kernel == (1, 1) and conv.stride == (1, 1) and conv.pad == (0, 0))


def fused_softmax_xent(net: ir.Net) -> bool:
    """Cross-entropy fuses with the final softmax: the loss writes the logits' gradient."""
    return net.loss == "cross_entropy" and bool(net.layers) and isinstance(net.layers[-1],
                                                                          ir.Softmax)


def parts_for(threads: int, deterministic: bool) -> int:
    """Batch chunks of a plan: one per thread, or a fixed number whatever the threads."""
    return DETERMINISTIC_PARTS if deterministic else threads


def plan(net: ir.Net, shapes: Shapes, batch: int, dtype: str = "float32",
         optimizer: str = "sgd", threads: int = 1, deterministic: bool = False) -> Plan:
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, not {dtype!r}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, not {optimizer!r}")
    if batch < 1:
        raise ValueError(f"batch must be at least 1, not {batch}")
    if not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer, not {threads!r}")
    parts = parts_for(threads, deterministic)
    mem = _Arena("mem", dtype)
    imem = _Arena("imem", "int32")
    layers = list(zip(net.layers, shapes.inputs, shapes.outputs))

    # params: weights (decayed) first, then the rest; grads mirror them exactly.
    tensors = [(f"{layer.label}.{suffix}", layer.label, shape, decayed)
               for layer, i, _ in layers for suffix, shape, decayed in param_shapes(layer, i)]
    ordered = [t for t in tensors if t[3]] + [t for t in tensors if not t[3]]
    mem.begin("params")
    for name, label, shape, _ in (t for t in ordered if t[3]):
        mem.add(name, label, shape)
    decay_count = mem.aligned_top()
    for name, label, shape, _ in (t for t in ordered if not t[3]):
        mem.add(name, label, shape)
    mem.end()
    param_count = mem.top
    mem.begin("grads")
    for b in list(mem.buffers):
        mem.add(f"{b.name}.grad", b.layer, b.shape)
    for p in range(1, parts):  # each batch chunk's own gradients, added into the mirror
        mem.add(f"grads.part{p}", "", (param_count,))
    mem.end()
    mem.begin("optimizer")
    for slot in (("momentum",) if optimizer == "sgd" else ("m", "v")):
        mem.add(f"optimizer.{slot}", "", (param_count,))
    mem.end()

    mem.begin("buffers")
    for layer, (c, _, _), _ in layers:
        if isinstance(layer, ir.BatchNorm):
            mem.add(f"{layer.label}.running_mean", layer.label, (c,))
            mem.add(f"{layer.label}.running_var", layer.label, (c,), align=False)
    mem.end()

    mem.begin("activations")
    for layer, _, o in layers:
        mem.add(f"{layer.label}.out", layer.label, (batch, *o))
    mem.end()
    mem.begin("act_grads")
    fused = fused_softmax_xent(net)
    for k, (layer, _, o) in enumerate(layers):
        if not (fused and k == len(layers) - 1):
            mem.add(f"{layer.label}.out.grad", layer.label, (batch, *o))
    mem.end()

    mem.begin("saved")
    for layer, (c, _, _), o in layers:
        if isinstance(layer, ir.Dropout):
            mem.add(f"{layer.label}.mask", layer.label, (batch, *o))
        elif isinstance(layer, ir.BatchNorm):
            mem.add(f"{layer.label}.batch_stats", layer.label, (2, c))  # batch mean, batch variance
    mem.end()
    mem.begin("workspace")
    chunk = -(-batch // parts)  # samples of the largest batch chunk
    ws = max((workspace_size(layer, i, o, chunk) for layer, i, o in layers), default=0)
    if ws:
        mem.add("workspace", "", (ws,))
        for p in range(1, parts):
            mem.add(f"workspace.part{p}", "", (ws,))
    mem.end()
    mem.begin("io")
    mem.add("input.grad", "", (batch, *net.input))
    mem.end()

    imem.begin("buffers")
    imem.add("rng.state", "", (RNG_WORDS,))
    imem.add("threads", "", (1,), align=False)
    imem.end()
    imem.begin("optimizer")
    imem.add("optimizer.step", "", (1,))
    imem.end()
    imem.begin("saved")
    for layer, _, o in layers:
        if isinstance(layer, ir.Pool) and layer.mode == "max":
            imem.add(f"{layer.label}.argmax", layer.label, (batch, *o))
    imem.end()

    # The generated C indexes within one buffer with int (and takes the batch as an int).
    largest = max(mem.buffers + imem.buffers, key=lambda b: b.size)
    if largest.size > LIMIT:
        raise InputError(f"batch {batch:,} is too large for this network: {largest.name} would "
                         f"hold {largest.size:,} elements, more than {LIMIT:,}")
    return Plan(batch, dtype, optimizer, tuple(mem.buffers + imem.buffers), mem.top, imem.top,
                param_count, decay_count, tuple(mem.regions), tuple(imem.regions), threads, parts,
                deterministic)

