"""Network and Model: compile a spec through codegen and build, own its two arenas, call the C.

Every argument is validated here before anything reaches C (InputError), so a wrong call raises
and can never crash the process. Never writes C (netc.codegen) and never runs the compiler itself
(netc.build). A Model is not thread-safe: one call at a time.
"""
from __future__ import annotations

import functools
import math
import numbers
import os
import tempfile
from pathlib import Path
from types import MappingProxyType

import numpy as np

from . import build, codegen, ir
from .errors import BuildError, DataError, InputError
from .passes import memory
from .passes.shapes import Shapes, infer_shapes

ALIGN = 64  # bytes: arenas start on a cache line, as every buffer offset in the plan does


def load(path_or_text: str | os.PathLike, **params: float) -> Network:
    """A `.net` file (path) or spec text → Network; keyword arguments override its `param`s."""
    from .lower import load_spec
    return Network(load_spec(path_or_text, params or None))


class Network:
    """The IR of one spec and its reports; `compile` turns it into a runnable Model."""

    def __init__(self, net: ir.Net):
        self.net = net
        self.shapes: Shapes = infer_shapes(net)

    @functools.cached_property
    def analysis(self):
        from .passes import analyze
        return analyze(self.net)

    def report(self, batch: int = 32, optimizer: str = "sgd") -> str:
        from . import report
        return report.render(report.data(self.net, self.analysis, batch, optimizer))

    def plan(self, batch: int = 32, dtype: str = "float32", optimizer: str = "sgd",
             threads: int = 1, deterministic: bool = False):
        return memory.plan(self.net, self.shapes, batch, dtype, optimizer, threads, deterministic)

    def emit(self, batch: int = 32, dtype: str = "float32", optimizer: str = "sgd",
             threads: int = 1, deterministic: bool = False) -> codegen.CSource:
        return codegen.emit(self.net, self.shapes,
                            self.plan(batch, dtype, optimizer, threads, deterministic))

    def compile(self, batch: int = 32, dtype: str = "float32", flags=None, optimizer: str = "sgd",
                cache_dir: str | os.PathLike | None = None, threads: int = 1,
                deterministic: bool = False) -> Model:
        """Generate, build (or reuse the cached build) and load; the model starts as init(0).

        threads: OpenMP threads over the batch (each with its own gradient copy in the plan);
        the same threads give the same results. deterministic: a fixed number of batch chunks
        (memory.DETERMINISTIC_PARTS) instead, so results are identical whatever the threads;
        `model.threads = n` changes the count later without recompiling."""
        if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
            raise InputError(f"batch must be a positive integer, not {batch!r}")
        if dtype not in memory.DTYPES:
            raise InputError(f"dtype must be 'float32' or 'float64', not {dtype!r}")
        if optimizer not in memory.OPTIMIZERS:
            raise InputError(f"optimizer must be 'sgd' or 'adam', not {optimizer!r}")
        _check_threads(threads)
        plan = self.plan(batch, dtype, optimizer, threads, bool(deterministic))
        source = codegen.emit(self.net, self.shapes, plan)
        library = build.build(source.text, source.cdef, name=source.name, flags=flags,
                              cache_dir=Path(cache_dir) if cache_dir else None)
        return Model(self.net, self.shapes, plan, source, library)


class Model:
    """A compiled network with its memory: parameters, gradients, optimizer state, activations."""

    def __init__(self, net: ir.Net, shapes: Shapes, plan: memory.Plan, source: codegen.CSource,
                 library: build.Library):
        self.net, self.shapes, self.plan, self.source, self.library = (
            net, shapes, plan, source, library)
        self.ffi, self.lib = library.ffi, library.lib
        self.dtype = np.dtype(plan.dtype)
        self.batch = plan.batch
        self._check_library()
        self.mem = _aligned_zeros(plan.mem_size, self.dtype)
        self.imem = _aligned_zeros(plan.imem_size, np.int32)
        self._pmem = self.ffi.from_buffer(self.mem)
        self._pimem = self.ffi.from_buffer("int[]", self.imem)
        self.input_shape: tuple[int, ...] = net.input
        out = shapes.outputs[-1]
        self.output_shape: tuple[int, ...] = (out[0],) if out[1:] == (1, 1) else out
        self._classes = out[0] * out[1] * out[2]
        self._labels = np.zeros(plan.batch, np.int32)
        self._plabels = self.ffi.from_buffer("int[]", self._labels)
        self._targets = np.zeros((plan.batch, self._classes), self.dtype)
        self._ptargets = self.ffi.from_buffer(self._targets)
        self._out = self._view(f"{net.layers[-1].label}.out")
        self._dx = self._view("input.grad")
        self.params = self._views("params", "")
        self.grads = self._views("grads", ".grad")
        self.buffers = self._views("buffers", "")
        self.optimizer_state = MappingProxyType({
            b.name.split(".", 1)[1]: self._view(b.name) for b in plan.by_role("optimizer")})
        self.rng_state = self._view("rng.state")
        self.input_grad: np.ndarray | None = None
        # BatchNorm layers with one value per channel per sample (after an fc, or on 1x1 maps):
        # trained on a single sample, their batch variance is 0
        self._per_sample_norms = [(layer.label, shape) for layer, shape in
                                  zip(net.layers, shapes.inputs)
                                  if isinstance(layer, ir.BatchNorm) and shape[1:] == (1, 1)]
        self.min_train_batch = 2 if self._per_sample_norms else 1
        self.threads = plan.threads
        self.init(0)

    @property
    def threads(self) -> int:
        """Threads a step uses (OpenMP builds; 1 otherwise). Results depend on the plan's parts
        only: with `deterministic=True` they are identical for any count."""
        return int(self.imem[self.plan.buffer("threads").offset])

    @threads.setter
    def threads(self, n: int) -> None:
        _check_threads(n)
        self.lib.netc_set_threads(self._pimem, n)

    def set_threads(self, n: int) -> None:
        self.threads = n

    def profile(self, reset: bool = False) -> tuple[list[float], list[float]]:
        """Per-layer (forward, backward) seconds summed over calls, from a build with
        -DNETC_PROFILE in its flags (bench/perf.py); ([], []) from a normal build."""
        n = len(self.net.layers)
        out = self.ffi.new("double[]", 2 * n)
        if not self.lib.netc_profile(out, int(reset)):
            return [], []
        return list(out[0:n]), list(out[n:2 * n])

    def profile_reset(self) -> None:
        self.lib.netc_profile(self.ffi.NULL, 1)

    @property
    def nbytes(self) -> int:
        """Bytes of the two arenas: exactly the plan's total_bytes."""
        return self.mem.nbytes + self.imem.nbytes

    # ---- running

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        """Outputs (b, *output_shape), a copy: probabilities when the net ends in softmax.
        train=True uses batch statistics (and updates the running ones) and drops out."""
        b = self._check_x(x, train)
        self.lib.netc_forward(self._pmem, self._pimem, self.ffi.from_buffer(x), b, int(train))
        return self._out[:b].reshape(b, *self.output_shape).copy()

    def loss_and_grad(self, x: np.ndarray, y, *, input_grad: bool = False,
                      train: bool = True) -> float:
        """The loss (mean over the batch), with `grads` filled (zeroed first) and, when asked,
        `input_grad` (b, *input_shape)."""
        b = self._check_x(x, train)
        labels, targets = self._check_y(y, b)
        loss = self.lib.netc_loss_and_grad(self._pmem, self._pimem, self.ffi.from_buffer(x),
                                           labels, targets, b, int(train), int(input_grad))
        self.input_grad = self._dx[:b].reshape(x.shape).copy() if input_grad else None
        return float(loss)

    def train_step(self, x: np.ndarray, y, *, lr: float = 0.01, momentum: float = 0.0,
                   weight_decay: float = 0.0, beta1: float = 0.9, beta2: float = 0.999,
                   eps: float = 1e-8) -> float:
        """Forward, loss, backward and one optimizer update in a single C call; the loss.
        sgd uses lr, momentum, weight_decay; adam lr, beta1, beta2, eps, weight_decay."""
        b = self._check_x(x, train=True)
        labels, targets = self._check_y(y, b)
        hyper = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, beta1=beta1,
                     beta2=beta2, eps=eps)
        for name, v in hyper.items():
            if not isinstance(v, numbers.Real) or not math.isfinite(v) or v < 0:
                raise InputError(f"{name} must be a finite number ≥ 0, not {v!r}")
        return float(self.lib.netc_train_step(
            self._pmem, self._pimem, self.ffi.from_buffer(x), labels, targets, b,
            *map(float, hyper.values())))

    def seed(self, seed: int) -> None:
        """Seed the dropout generator (its state lives in imem: `rng_state`)."""
        self.lib.netc_seed(self._pimem, _seed64(seed))

    # ---- state

    def init(self, seed: int = 0) -> None:
        """Fresh parameters matched to each layer's activation (He for relu, Glorot uniform for
        tanh and sigmoid, LeCun normal otherwise), seeded; biases 0; subsample coefficients and
        BN scales 1; running mean 0, variance 1; optimizer state 0; dropout generator seeded."""
        rng = np.random.default_rng(_seed64(seed))
        for i, layer in enumerate(self.net.layers):
            w = self.params.get(f"{layer.label}.weight")
            if w is not None:
                if isinstance(layer, (ir.Subsample, ir.BatchNorm)):
                    w[...] = 1
                else:
                    w[...] = _init_weight(rng, w.shape, *_fans(layer, self.shapes.inputs[i]),
                                          _activation_after(self.net, i))
            if f"{layer.label}.bias" in self.params:
                self.params[f"{layer.label}.bias"][...] = 0
            if isinstance(layer, ir.BatchNorm):
                self.buffers[f"{layer.label}.running_mean"][...] = 0
                self.buffers[f"{layer.label}.running_var"][...] = 1
        for arr in self.optimizer_state.values():
            arr[...] = 0
        self.seed(seed)

    def save(self, path: str | os.PathLike) -> None:
        """Parameters and buffers to an .npz, atomically (temp file, fsync, rename)."""
        write_npz_atomic(Path(path), {**self.params, **self.buffers})

    def load(self, path: str | os.PathLike) -> None:
        """Parameters and buffers from an .npz written by save(); refuses a mismatch."""
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError) as e:
            raise DataError(f"cannot read weights from {path}: {e}") from None
        wanted = {**self.params, **self.buffers}
        missing, extra = sorted(set(wanted) - set(arrays)), sorted(set(arrays) - set(wanted))
        if missing or extra:
            raise DataError(f"{path} does not match network '{self.net.name}': "
                            f"missing {missing or 'nothing'}, unexpected {extra or 'nothing'}",
                            hint="load weights saved from the same spec and parameters")
        for name, arr in arrays.items():
            if arr.shape != wanted[name].shape:
                raise DataError(f"{path}: {name} has shape {arr.shape}, the network "
                                f"'{self.net.name}' needs {wanted[name].shape}")
        for name, arr in arrays.items():
            wanted[name][...] = arr

    # ---- validation: nothing reaches C unchecked

    def _check_x(self, x, train: bool) -> int:
        if not isinstance(x, np.ndarray):
            raise InputError(f"x must be a numpy array, not {type(x).__name__}")
        if x.dtype != self.dtype:
            raise InputError(f"x has dtype {x.dtype}, but the model was compiled for "
                             f"{self.dtype}", hint=f"pass x.astype(np.{self.dtype})")
        shapes = [self.input_shape] + ([self.input_shape[:1]]
                                       if self.input_shape[1:] == (1, 1) else [])
        if x.ndim < 1 or x.shape[1:] not in shapes:
            want = " or ".join(f"(b, {', '.join(map(str, s))})" for s in shapes)
            raise InputError(f"x has shape {x.shape}, the network takes {want}")
        b = x.shape[0]
        if not 1 <= b <= self.batch:
            raise InputError(f"a batch of {b} samples, but the model was compiled for 1 to "
                             f"{self.batch}", hint="split the batch, or compile with a larger "
                             "batch=")
        if not x.flags.c_contiguous:
            raise InputError("x is not C-contiguous", hint="pass np.ascontiguousarray(x)")
        if train and b < self.min_train_batch:
            label, (c, h, w) = self._per_sample_norms[0]
            raise InputError(f"BatchNorm layer '{label}' gets an input of shape ({b}, {c}, {h}, "
                             f"{w}) in training mode: one value per channel, so its batch "
                             "variance is 0 and it would normalise by eps alone",
                             hint=f"train on batches of at least {self.min_train_batch} samples, "
                             "or evaluate with train=False")
        return b

    def _check_y(self, y, b: int):
        """(labels pointer, targets pointer) for the C: one of them, the other NULL."""
        y = np.asarray(y)
        if y.dtype.kind in "iu":
            if y.shape != (b,):
                raise InputError(f"labels have shape {y.shape}, expected ({b},): one class "
                                 f"index per sample")
            if b and (y.min() < 0 or y.max() >= self._classes):
                bad = y[(y < 0) | (y >= self._classes)][0]
                raise InputError(f"label {bad} is out of range: the network has "
                                 f"{self._classes} classes (0 to {self._classes - 1})")
            self._labels[:b] = y
            return self._plabels, self.ffi.NULL
        if self.net.loss == "cross_entropy":
            raise InputError(f"cross-entropy needs integer class labels, not {y.dtype} values")
        if y.dtype.kind != "f":
            raise InputError(f"mse targets must be floats (or integer labels), not {y.dtype}")
        shapes = [(b, *self.output_shape), (b, self._classes)]
        if y.shape not in shapes:
            raise InputError(f"targets have shape {y.shape}, expected {shapes[0]}")
        if not np.isfinite(y).all():
            raise InputError("targets contain NaN or infinity")
        self._targets[:b] = y.reshape(b, -1)
        return self.ffi.NULL, self._ptargets

    # ---- plumbing

    def _view(self, name: str) -> np.ndarray:
        buf = self.plan.buffer(name)
        arena = self.mem if buf.arena == "mem" else self.imem
        return arena[buf.offset:buf.offset + buf.size].reshape(buf.shape)

    def _views(self, role: str, suffix: str) -> MappingProxyType:
        """Read-only mapping (rebinding a name would not reach C) of writable arena views,
        in network order, keyed without the suffix."""
        order = {layer.label: i for i, layer in enumerate(self.net.layers)}
        bufs = sorted((b for b in self.plan.by_role(role) if b.arena == "mem" and b.layer),
                      key=lambda b: (order[b.layer], b.offset))
        return MappingProxyType({b.name.removesuffix(suffix): self._view(b.name) for b in bufs})

    def _check_library(self) -> None:
        lib, p = self.lib, self.plan
        got = (lib.netc_abi_version(), lib.netc_real_size(), lib.netc_mem_size(),
               lib.netc_imem_size(), lib.netc_max_batch())
        want = (codegen.ABI_VERSION, self.dtype.itemsize, p.mem_size, p.imem_size, p.batch)
        if got != want:
            raise BuildError(f"the library {self.library.path} does not match its memory plan "
                             f"(abi, real size, mem, imem, batch: {got} != {want})")


def _check_threads(n) -> None:
    if not isinstance(n, numbers.Integral) or isinstance(n, bool) or n < 1:
        raise InputError(f"threads must be a positive integer, not {n!r}")


def _aligned_zeros(n: int, dtype) -> np.ndarray:
    dtype = np.dtype(dtype)
    raw = np.zeros(n * dtype.itemsize + ALIGN, np.uint8)
    start = -raw.ctypes.data % ALIGN
    return raw[start:start + n * dtype.itemsize].view(dtype)


def _seed64(seed: int) -> int:
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise InputError(f"seed must be an integer, not {seed!r}")
    return int(seed) % 2**64


def _fans(layer: ir.AnyLayer, in_shape: ir.Shape) -> tuple[float, float]:
    """(fan_in, fan_out) of a weight, as PyTorch counts them; a table conv averages its
    connections over output (fan_in) and input (fan_out) channels."""
    c, h, w = in_shape
    match layer:
        case ir.Conv(table=ir.Table() as t):
            kk = layer.kernel[0] * layer.kernel[1]
            conns = sum(sum(row) for row in t.rows)
            return conns * kk / layer.out_channels, conns * kk / c
        case ir.Conv():
            kk = layer.kernel[0] * layer.kernel[1]
            return c // layer.groups * kk, layer.out_channels * kk
        case ir.FC():
            return c * h * w, layer.units
        case _:
            raise NotImplementedError(layer.kind)


def _activation_after(net: ir.Net, i: int) -> str | None:
    """The activation that follows layer i's weights: its own, or the first Act before the next
    layer with weights (BN, dropout, pooling and flatten in between do not change it)."""
    act = getattr(net.layers[i], "act", None)
    if act is not None:
        return act.kind
    for layer in net.layers[i + 1:]:
        if isinstance(layer, ir.Act):
            return layer.fn.kind
        if not isinstance(layer, (ir.BatchNorm, ir.Dropout, ir.Pool, ir.GlobalAvgPool,
                                  ir.Flatten)):
            return None
    return None


def _init_weight(rng: np.random.Generator, shape, fan_in: float, fan_out: float,
                 act: str | None) -> np.ndarray:
    if act == "relu":  # He: keeps the variance through relu, which zeroes half
        return rng.normal(0.0, math.sqrt(2.0 / fan_in), shape)
    if act in ("tanh", "sigmoid"):  # Glorot/Xavier uniform
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        return rng.uniform(-bound, bound, shape)
    return rng.normal(0.0, math.sqrt(1.0 / fan_in), shape)  # LeCun


def write_npz_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """The file appears complete or not at all: a crash mid-write leaves the old one intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:  # the rename itself survives a power cut only once the folder is synced
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
