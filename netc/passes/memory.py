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
(passes/schedule.py lays out each layer's: a conv's im2col and backward scratch, an fc's
transposed chunk).

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
from .schedule import Schedule, schedule
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
    schedule: Schedule  # each layer's kernel, fusions and workspace, for `parts` chunks
    threads: int = 1  # threads a step uses (run time: the imem `threads` word)
    parts: int = 1  # batch chunks, each with its own gradient copy and workspace
    deterministic: bool = False  # parts fixed (DETERMINISTIC_PARTS), not threads
    training: bool = True  # False: an inference build's plan (forward only)
    standalone: bool = False  # params and buffers in `weights`, compiled into a library
    weights_size: int = 0  # reals in the read-only `weights` arena of a standalone plan
    weights_regions: tuple[tuple[str, int, int], ...] = ()  # the same for `weights`
    # per layer: 1 where its output reuses memory another buffer held, so that with parts > 1
    # every chunk must be done with that buffer first (a barrier before the layer)
    waits: tuple[int, ...] = ()

    @property
    def real_bytes(self) -> int:
        return DTYPES[self.dtype]

    @property
    def total_bytes(self) -> int:
        return (self.mem_size + self.weights_size) * self.real_bytes + self.imem_size * 4

    def bytes_by_role(self) -> dict[str, int]:
        """Bytes per role, alignment padding included (each role's region), in ROLES order."""
        out = dict.fromkeys(ROLES, 0)
        for role, start, end in self.regions:
            out[role] += (end - start) * self.real_bytes
        for role, start, end in self.imem_regions:
            out[role] += (end - start) * 4
        for role, start, end in self.weights_regions:
            out[role] += (end - start) * self.real_bytes
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


def parts_for(threads: int, deterministic: bool) -> int:
    """Batch chunks of a plan: one per thread, or a fixed number whatever the threads."""
    return DETERMINISTIC_PARTS if deterministic else threads


def plan(net: ir.Net, shapes: Shapes, batch: int, dtype: str = "float32",
         optimizer: str = "sgd", threads: int = 1, deterministic: bool = False,
         training: bool = True, standalone: bool = False) -> Plan:
    """The layout for `batch` samples. training=False plans an inference build (the forward
    alone): no gradients, optimizer state, activation gradients, saved state or input gradient,
    and the forward's workspace; those regions stay, empty; and the activations share memory
    by liveness (`_share`). standalone=True, for an inference build that carries its weights (a
    library exported with `netc export --c`): params and buffers in a read-only arena `weights`
    that the library compiles in, the caller's input staged in `mem` (the arena it is given),
    and no imem."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, not {dtype!r}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, not {optimizer!r}")
    if batch < 1:
        raise ValueError(f"batch must be at least 1, not {batch}")
    if not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer, not {threads!r}")
    if standalone and training:
        raise ValueError("a standalone plan is an inference plan: training=False")
    parts = parts_for(threads, deterministic)
    kernels = schedule(net, shapes, batch, parts, training)
    mem = _Arena("mem", dtype)
    imem = _Arena("imem", "int32")
    weights = _Arena("weights", dtype) if standalone else mem
    layers = list(zip(net.layers, shapes.inputs, shapes.outputs))

    # params: weights (decayed) first, then the rest; grads mirror them exactly.
    tensors = [(f"{layer.label}.{suffix}", layer.label, shape, decayed)
               for layer, i, _ in layers for suffix, shape, decayed in param_shapes(layer, i)]
    ordered = [t for t in tensors if t[3]] + [t for t in tensors if not t[3]]
    weights.begin("params")
    for name, label, shape, _ in (t for t in ordered if t[3]):
        weights.add(name, label, shape)
    decay_count = weights.aligned_top()
    for name, label, shape, _ in (t for t in ordered if not t[3]):
        weights.add(name, label, shape)
    weights.end()
    param_count = weights.top
    mem.begin("grads")
    for b in list(weights.buffers) if training else ():
        mem.add(f"{b.name}.grad", b.layer, b.shape)
    for p in range(1, parts if training else 1):  # each chunk's gradients, added into these
        mem.add(f"grads.part{p}", "", (param_count,))
    mem.end()
    mem.begin("optimizer")
    for slot in (("momentum",) if optimizer == "sgd" else ("m", "v")) if training else ():
        mem.add(f"optimizer.{slot}", "", (param_count,))
    mem.end()

    weights.begin("buffers")
    for layer, (c, _, _), _ in layers:
        if isinstance(layer, ir.BatchNorm):
            weights.add(f"{layer.label}.running_mean", layer.label, (c,))
            weights.add(f"{layer.label}.running_var", layer.label, (c,), align=False)
    weights.end()

    mem.begin("activations")
    outputs = [(f"{layer.label}.out", layer.label, (batch, *o)) for layer, _, o in layers]
    if training:
        for name, label, shape in outputs:
            mem.add(name, label, shape)
    else:
        lives = [(i, max(net.consumers(i), default=len(layers))) for i in range(len(layers))]
        if standalone:  # the caller's input, copied (and normalised) into the arena
            outputs.append(("input", "", (batch, *net.input)))
            lives.append((-1, max(net.consumers(ir.INPUT))))
        scratch = [(i, k.forward_workspace) for i, k in enumerate(kernels.kernels)
                   if k.forward_workspace and parts == 1]
        _share(mem, outputs + [(f"{net.layers[i].label}.scratch", net.layers[i].label, (n,))
                               for i, n in scratch], lives + [(i, i) for i, _ in scratch])
    mem.end()
    mem.begin("act_grads")
    for k, (layer, _, o) in enumerate(layers if training else ()):
        if not (kernels.fused_loss and k == len(layers) - 1):
            mem.add(f"{layer.label}.out.grad", layer.label, (batch, *o))
    mem.end()

    mem.begin("saved")
    for layer, (c, _, _), o in layers if training else ():
        if isinstance(layer, ir.Dropout):
            mem.add(f"{layer.label}.mask", layer.label, (batch, *o))
        elif isinstance(layer, ir.BatchNorm):
            mem.add(f"{layer.label}.batch_stats", layer.label, (2, c))  # batch mean, batch variance
    mem.end()
    mem.begin("workspace")
    ws = kernels.workspace if training else kernels.forward_workspace
    if ws and (training or parts > 1):
        mem.add("workspace", "", (ws,))
        for p in range(1, parts):
            mem.add(f"workspace.part{p}", "", (ws,))
    mem.end()
    mem.begin("io")
    if training:
        mem.add("input.grad", "", (batch, *net.input))
    mem.end()

    imem.begin("buffers")
    if training:
        imem.add("rng.state", "", (RNG_WORDS,))
    if not standalone:  # a library takes its threads from OpenMP
        imem.add("threads", "", (1,), align=False)
    imem.end()
    imem.begin("optimizer")
    if training:
        imem.add("optimizer.step", "", (1,))
    imem.end()
    imem.begin("saved")
    for layer, _, o in layers if training else ():
        if isinstance(layer, ir.Pool) and layer.mode == "max":
            imem.add(f"{layer.label}.argmax", layer.label, (batch, *o))
    imem.end()

    # The generated C indexes within one buffer with int (and takes the batch as an int).
    every = mem.buffers + imem.buffers + (weights.buffers if standalone else [])
    largest = max(every, key=lambda b: b.size)
    if largest.size > LIMIT:
        raise InputError(f"batch {batch:,} is too large for this network: {largest.name} would "
                         f"hold {largest.size:,} elements, more than {LIMIT:,}")
    outs = [next(b for b in mem.buffers if b.name == name) for name, _, _ in outputs]
    waits = tuple(int(parts > 1 and any(_overlap(b, other) for other in outs if other is not b))
                  for b in outs[:len(layers)])
    return Plan(batch, dtype, optimizer, tuple(weights.buffers if standalone else [])
                + tuple(mem.buffers + imem.buffers), mem.top, imem.top, param_count,
                decay_count, tuple(mem.regions), tuple(imem.regions), kernels, threads, parts,
                deterministic, training, standalone, weights.top if standalone else 0,
                tuple(weights.regions) if standalone else (), waits)


def _share(arena: _Arena, tensors: list[tuple[str, str, tuple[int, ...]]],
           lives: list[tuple[int, int]]) -> None:
    """Place tensors that need not all exist at once: tensor k is written at step lives[k][0]
    and last read at lives[k][1], and two whose steps meet never overlap. Greedy by size (the
    largest first, each at the lowest aligned offset that leaves it clear of the placed ones it
    lives with); the buffers are listed in network order."""
    base = arena.aligned_top()
    sizes = [arena._aligned(math.prod(shape)) for _, _, shape in tensors]
    placed: list[tuple[int, int, int]] = []  # (offset, end, k)
    offsets = [0] * len(tensors)
    for k in sorted(range(len(tensors)), key=lambda k: (-sizes[k], k)):
        first, last = lives[k]
        at = 0
        for start, end, j in sorted(placed):
            if lives[j][0] <= last and first <= lives[j][1]:  # alive together
                if start - at >= sizes[k]:
                    break
                at = max(at, end)
        offsets[k] = at
        placed.append((at, at + sizes[k], k))
    for k, (name, label, shape) in enumerate(tensors):
        arena.top = base + offsets[k]
        arena.add(name, label, shape, align=False)
    arena.top = base + max((end for _, end, _ in placed), default=0)


def _overlap(a: Buffer, b: Buffer) -> bool:
    return a.offset < b.offset + b.size and b.offset < a.offset + a.size

