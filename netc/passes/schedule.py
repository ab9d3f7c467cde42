"""Kernel choice: for every layer, which variant of its template runs, which fusions apply and
where its scratch lies in the workspace, decided once for a batch and a number of batch chunks.
The memory plan reads the workspace size from here and the generated C every choice; nothing
else decides one. The choices are CPU heuristics (vector lanes of 16 float32, cache-sized
blocks); docs/design.md says where each one pays.

    schedule(lenet5, shapes, batch=64, parts=1).kernels[0]
      -> Kernel(template="conv", fwd_rows=False, dw_rows=True, im2col=True, ...,
                workspace=..., slices=(("dzt", 0), ..., ("end", ...)))
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from .. import ir
from .shapes import Shapes

LANE_PAD = 16  # scratch rows rounded up to this many reals (AVX-512 float32 lanes)
# An inference build's column matrix: at most this many reals (32 KiB of float32, in L1 or L2)
# where that leaves at least TILE_COLUMNS columns, the GEMM's width; the whole matrix otherwise.
# It is most of a library's arena (VGG-16: 115 of 141 MB at batch 1), and a tile in cache costs
# the GEMM nothing.
TILE_BUDGET, TILE_COLUMNS = 8192, 64
ROWS_BUDGET = 32768  # reals of a padded input read whole per block of outputs (128 KiB, in L2)


@dataclass(frozen=True, slots=True)
class Kernel:
    """How one layer runs."""

    template: str  # templates/layers/<template>.c.j2: the layer's kind, or "fc" for a conv as fc
    first: tuple[int, ...]  # per input: 1 where backward is the first to write its gradient
    workspace: int = 0  # reals of scratch for one batch chunk
    forward_workspace: int = 0  # the part of it the forward uses, from offset 0
    # fc (and a conv run as one): outᵀ = W·inpᵀ with the chunk's samples along the vector lanes
    fc_transposed: bool = False
    # conv: the column matrix built (not a 1×1), ∂X as a convolution of ∂Z with the flipped
    # weight, ∂W and the forward on zero-padded rows
    im2col: bool = False
    direct_dx: bool = False
    dw_rows: bool = False
    fwd_rows: bool = False
    # conv→conv: this conv applies the activation derivative of the conv it reads (dx_act), and
    # that conv then takes its output gradient as ∂Z (dz_ready)
    dx_act: bool = False
    dz_ready: bool = False
    slices: tuple[tuple[str, int], ...] = ()  # named offsets in its workspace, in order
    # conv by im2col: the forward's column matrix covers this many output rows at a time (all of
    # them but in an inference build's large layers: TILE_BUDGET)
    tile_rows: int = 0


@dataclass(frozen=True, slots=True)
class Schedule:
    kernels: tuple[Kernel, ...]  # aligned with net.layers
    chunk: int  # samples of the largest batch chunk
    fused_loss: bool  # cross-entropy writes the logits' gradient: the softmax has no backward

    @property
    def workspace(self) -> int:
        """Reals of the one scratch buffer every layer of a chunk shares."""
        return max((k.workspace for k in self.kernels), default=0)

    @property
    def forward_workspace(self) -> int:
        """The same for the forward alone (an inference build)."""
        return max((k.forward_workspace for k in self.kernels), default=0)

    @property
    def chunk_pad(self) -> int:
        return -(-self.chunk // LANE_PAD) * LANE_PAD


def schedule(net: ir.Net, shapes: Shapes, batch: int, parts: int,
             training: bool = True) -> Schedule:
    chunk = -(-batch // parts)
    firsts = _first_writes(net)
    kernels = [_kernel(layer, shapes.inputs[i], shapes.outputs[i], chunk, firsts[i], training)
               for i, layer in enumerate(net.layers)]
    for i, layer in enumerate(net.layers):
        # a conv whose input is another conv's activated output, read by it alone, applies that
        # activation's derivative to its input gradient while the gradient and that output (its
        # input) are in cache; the other conv then takes its output gradient as dz
        (j,) = net.inputs_of(i) if len(net.inputs_of(i)) == 1 else (ir.INPUT,)
        if (j != ir.INPUT and net.consumers(j) == (i,) and kernels[i].template == "conv"
                and kernels[j].template == "conv" and net.layers[j].act is not None):
            kernels[i] = replace(kernels[i], dx_act=True)
            kernels[j] = replace(kernels[j], dz_ready=True)
    fused = net.loss == "cross_entropy" and isinstance(net.layers[-1], ir.Softmax)
    return Schedule(tuple(kernels), chunk, fused)


def _first_writes(net: ir.Net) -> list[tuple[int, ...]]:
    """Per layer, per input: 1 where its backward is the first to write that input's gradient
    (backward runs in reverse order, so the last reader; of two reads of one tensor in a merge,
    the first). It sets the gradient instead of adding to it, so no gradient needs zeroing before
    backward. The loss writes the last layer's output gradient (or, fused with a final softmax,
    its input's), first of all."""
    written: set[int] = set()
    firsts: list[tuple[int, ...]] = [()] * len(net.layers)
    for i in reversed(range(len(net.layers))):
        flags = []
        for j in net.inputs_of(i):
            flags.append(int(j not in written))
            written.add(j)
        firsts[i] = tuple(flags)
    return firsts


def _kernel(layer: ir.AnyLayer, ins: ir.Shape, outs: ir.Shape, chunk: int,
            first: tuple[int, ...], training: bool) -> Kernel:
    if isinstance(layer, ir.FC) or (isinstance(layer, ir.Conv) and conv_as_fc(layer, ins)):
        transposed = chunk >= LANE_PAD
        mp = -(-chunk // LANE_PAD) * LANE_PAD
        need = (_prod(ins) + _prod(outs)) * mp if transposed else 0  # the forward's alone
        return Kernel("fc", first, need, need, fc_transposed=transposed)
    if isinstance(layer, ir.Conv):
        return _conv(layer, ins, outs, first, training)
    return Kernel(layer.kind, first)


def _conv(conv: ir.Conv, ins: ir.Shape, outs: ir.Shape, first: tuple[int, ...],
          training: bool) -> Kernel:
    """A conv's variants and its workspace: backward keeps ∂Wᵀ of the chunk (CI·KK × COP), one
    sample's ∂Zᵀ (P × COP), the flipped weight of a direct ∂X (CI·CO·KK), then the column area
    (the im2col matrix, the forward uses only this; for a direct ∂X the larger of it and the
    im2col matrix of ∂Z, CO·KK × HI·WI). With ∂W by rows, instead of ∂Wᵀ and ∂Zᵀ, after the
    column area: ∂W in lanes (CO·CI·KK × LANE_PAD), ∂Z with rows WP long (CO × LR) and the
    zero-padded input (CI·HP·WP + LR). The forward by rows needs, at offset 0, the padded input
    (CI·HP·WP + LR) and its output in rows (CO × LR). COP is CO and LR is HO·WP rounded up to
    LANE_PAD, so every vector is full; the workspace is the larger of the two needs."""
    (ci, hi, wi), (co, ho, wo) = ins, outs
    kh, kw = conv.kernel
    kk, p, cop = kh * kw, ho * wo, -(-co // LANE_PAD) * LANE_PAD
    hp, wp = ho + kh - 1, wo + kw - 1
    lr = -(-ho * wp // LANE_PAD) * LANE_PAD
    im2col = not (conv.kernel == (1, 1) and conv.stride == (1, 1) and conv.pad == (0, 0))
    direct = direct_input_grad(conv, ins, outs)
    rows_dw = weight_grad_by_rows(conv, ins, outs)
    rows_fwd = conv_by_rows(conv, ins, outs)
    dzt = 0 if rows_dw else ci * kk * cop  # after ∂Wᵀ, at 0
    wflip = dzt + (0 if rows_dw else p * cop)
    col = wflip + (ci * co * kk if direct else 0)
    dwv = col + max(ci * kk * p if im2col else 0, co * kk * hi * wi if direct else 0)
    dzp = dwv + (co * ci * kk * LANE_PAD if rows_dw else 0)
    xp = dzp + (co * lr if rows_dw else 0)
    end = xp + (ci * hp * wp + lr if rows_dw else 0)
    yr = ci * hp * wp + lr  # the forward by rows: the padded input at 0, then its output rows
    tile = ho
    if im2col and not training and ci * kk * p > TILE_BUDGET:
        tile = min(ho, max(TILE_BUDGET // (ci * kk * wo), -(-TILE_COLUMNS // wo)))
    forward = yr + co * lr if rows_fwd else (ci * kk * tile * wo if im2col else 0)
    slices = (("dzt", dzt), ("wflip", wflip), ("col", col), ("dwv", dwv), ("dzp", dzp),
              ("xp", xp), ("end", end), ("yr", yr))
    return Kernel("conv", first, max(forward, end), forward, im2col=im2col, direct_dx=direct,
                  dw_rows=rows_dw, fwd_rows=rows_fwd, slices=slices, tile_rows=tile)


def _prod(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def conv_by_rows(conv: ir.Conv, in_shape: ir.Shape, out_shape: ir.Shape) -> bool:
    """The forward by rows (`_rows_pay`) where the extra columns cost at most 1/4 of the products
    for a short inner dimension, whose column matrix costs most beside its GEMM, and 1/8 past it.
    A longer inner dimension also needs the padded input in L2 (at most ROWS_BUDGET reals), as
    every block of output channels reads all of it: ResNet-20's 16- and 32-channel 3×3 convs
    then run at 81 GFLOP/s where their column matrices and GEMM ran at 40 to 55 (AVX2, batch 1)."""
    (ci, _, _), (_, ho, wo) = in_shape, out_shape
    kh, kw = conv.kernel
    short = ci * kh * kw <= 64
    return ((short or ci * (ho + kh - 1) * (wo + kw - 1) <= ROWS_BUDGET)
            and _rows_pay(conv, in_shape, out_shape, waste=1 / 4 if short else 1 / 8))


def weight_grad_by_rows(conv: ir.Conv, in_shape: ir.Shape, out_shape: ir.Shape) -> bool:
    """∂W by rows: ∂W[oc][(c·KH + i)·KW + j] = Σ_t ∂Zp[oc][t] Xp[(c·HP + i)·WP + j + t] (the extra
    entries of ∂Zp are zeros), up to 1/4 extra columns, for a short inner dimension (CI·KK ≤ 64,
    LeNet-5's and MNIST-BASE's first convs): the alternative builds the column matrix a second
    time and takes dot products."""
    (ci, _, _), kh, kw = in_shape, *conv.kernel
    return ci * kh * kw <= 64 and _rows_pay(conv, in_shape, out_shape, waste=1 / 4)


def _rows_pay(conv: ir.Conv, in_shape: ir.Shape, out_shape: ir.Shape, waste: float) -> bool:
    """A dense stride-1 conv can work on its zero-padded input read in rows WP = WO + KW - 1 long,
    where every kernel tap (c, i, j) is one contiguous offset (c·HP + i)·WP + j: products over
    whole rows with no column matrix, at the price of KW - 1 extra columns per row, at most
    `waste` of the products."""
    wo, kw = out_shape[2], conv.kernel[1]
    return (conv.table is None and conv.groups == 1 and conv.stride == (1, 1)
            and wo + kw - 1 <= (1 + waste) * wo)


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
