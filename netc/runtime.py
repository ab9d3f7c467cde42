"""Network and Model: compile a spec through codegen and build, own its two arenas, call the C.

Every argument is validated here before anything reaches C (InputError), so a wrong call raises
and can never crash the process. Never writes C (netc.codegen) and never runs the compiler itself
(netc.build). A Model is not thread-safe: a call made while another thread's call is running
raises InputError instead of racing on the arenas. What the checks rely on (dtype, shapes, batch,
arenas, views) is read-only after construction.
"""
from __future__ import annotations

import functools
import math
import numbers
import operator
import os
import threading
import zipfile
import zlib
from pathlib import Path
from types import MappingProxyType

import numpy as np

from . import build, codegen, ir
from .errors import BuildError, DataError, InputError
from .files import atomic_file, open_regular
from .passes import memory
from .passes.shapes import Shapes, infer_shapes

ALIGN = 64  # bytes: arenas start on a cache line, as every buffer offset in the plan does
# The plan holds one gradient copy and workspace per thread: more threads than any machine netc
# targets has cores is a typo, and 2**40 of them would never finish planning.
MAX_THREADS = 1024


def load(path_or_text: str | os.PathLike, **params: float) -> Network:
    """A `.net` file (path) or spec text → Network; keyword arguments override its `param`s."""
    from .lower import load_spec
    return Network(load_spec(path_or_text, params or None))


def _read_only(attr: str, doc: str) -> property:
    """A public attribute that assignment cannot change: the input checks and the C calls rely
    on it, so rebinding it would let a wrong array reach C."""
    return property(operator.attrgetter(attr), doc=doc)


class Network:
    """The IR of one spec and its reports; `compile` turns it into a runnable Model."""

    net = _read_only("_net", "the ir.Net")
    shapes = _read_only("_shapes", "every layer's input and output shapes (the C is made from "
                                   "them)")

    def __init__(self, net: ir.Net):
        self._net = net
        self._shapes: Shapes = infer_shapes(net)

    @functools.cached_property
    def analysis(self):
        from .passes import analyze
        return analyze(self.net)

    @functools.cached_property
    def per_sample_norms(self) -> tuple[tuple[str, ir.Shape], ...]:
        """(label, input shape) of each BatchNorm layer with one value per channel per sample
        (after an fc, or on 1x1 maps): trained on a single sample, its batch variance is 0."""
        return _per_sample_norms(self.net, self.shapes)

    @property
    def min_train_batch(self) -> int:
        return 2 if self.per_sample_norms else 1

    def check_train_batch(self, b: int, hint: str) -> None:
        """Refuse training on batches of b samples where a BatchNorm's batch variance would be
        0; `hint` says what to change where the caller is (an argument, an option)."""
        if b < self.min_train_batch:
            raise InputError(_one_value_per_channel(self.per_sample_norms[0], b), hint=hint)

    def report(self, batch: int = 32, optimizer: str = "sgd") -> str:
        from . import report
        return report.render(report.data(self.net, self.analysis, batch, optimizer))

    def plan(self, batch: int = 32, dtype: str = "float32", optimizer: str = "sgd",
             threads: int = 1, deterministic: bool = False, training: bool = True):
        """The memory plan; training=False plans an inference build (the forward alone)."""
        return memory.plan(self.net, self.shapes, batch, dtype, optimizer, threads, deterministic,
                           training)

    def emit(self, batch: int = 32, dtype: str = "float32", optimizer: str = "sgd",
             threads: int = 1, deterministic: bool = False,
             training: bool = True) -> codegen.CSource:
        """The C; training=False gives an inference build: the same templates without backward,
        loss and optimizer, exporting codegen.INFERENCE_CDEF (netc.compile loads only training
        builds)."""
        return codegen.emit(self.net, self.shapes,
                            self.plan(batch, dtype, optimizer, threads, deterministic, training))

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
    """A compiled network with its memory: parameters, gradients, optimizer state, activations.

    One call at a time: a call made while another thread's call runs raises InputError. Every
    attribute below but `threads` and `input_grad` is read-only; the arrays' contents (weights,
    arenas) are writable."""

    net = _read_only("_net", "the ir.Net it was compiled from")
    shapes = _read_only("_shapes", "the layer shapes it was compiled from")
    plan = _read_only("_plan", "the memory plan: every buffer's place in the arenas")
    source = _read_only("_source", "the generated C (codegen.CSource)")
    library = _read_only("_library", "the loaded build (build.Library)")
    ffi = _read_only("_ffi", "the cffi FFI of the library")
    lib = _read_only("_lib", "the library's entry points")
    dtype = _read_only("_dtype", "the real type: float32 or float64")
    batch = _read_only("_batch", "the largest batch a call accepts")
    input_shape = _read_only("_input_shape", "one sample's input shape (C, H, W)")
    output_shape = _read_only("_output_shape", "one sample's output: (C,) after an fc, else "
                                               "(C, H, W)")
    mem = _read_only("_mem", "the real arena (parameters, gradients, activations, ...)")
    imem = _read_only("_imem", "the int32 arena (generator state, threads, arg-max indices)")
    params = _read_only("_params", "name → writable view of each parameter")
    grads = _read_only("_grads", "name → writable view of each parameter's gradient")
    buffers = _read_only("_buffers", "name → writable view of each running statistic")
    optimizer_state = _read_only("_optimizer_state", "momentum, or Adam's m and v, and the step")
    rng_state = _read_only("_rng_state", "the dropout generator's state words (int32 view)")
    min_train_batch = _read_only("_min_train_batch", "the smallest batch training mode takes")

    def __init__(self, net: ir.Net, shapes: Shapes, plan: memory.Plan, source: codegen.CSource,
                 library: build.Library):
        self._net, self._shapes, self._plan, self._source, self._library = (
            net, shapes, plan, source, library)
        # Held by every call that reads or writes the arenas, taken without waiting (try/finally
        # around it, not a `with` helper: that costs ~3x as much on forward's hot path).
        self._lock = threading.Lock()
        self._ffi, self._lib = library.ffi, library.lib
        self._dtype = np.dtype(plan.dtype)
        self._batch = plan.batch
        self._check_library()
        self._mem = _aligned_zeros(plan.mem_size, self._dtype)
        self._imem = _aligned_zeros(plan.imem_size, np.int32)
        self._pmem = self._ffi.from_buffer(self._mem)
        self._pimem = self._ffi.from_buffer("int[]", self._imem)
        self._input_shape: tuple[int, ...] = net.input
        # what x may look like: (b, *input_shape), or (b, n) when the input is a vector
        self._sample_shapes = ((net.input,) + ((net.input[:1],) if net.input[1:] == (1, 1)
                                                else ()))
        out = shapes.outputs[-1]
        self._output_shape: tuple[int, ...] = (out[0],) if out[1:] == (1, 1) else out
        self._classes = out[0] * out[1] * out[2]
        self._labels = np.zeros(plan.batch, np.int32)
        self._plabels = self._ffi.from_buffer("int[]", self._labels)
        self._targets = np.zeros((plan.batch, self._classes), self._dtype)
        self._ptargets = self._ffi.from_buffer(self._targets)
        self._out = self._view(f"{net.layers[-1].label}.out")
        self._dx = self._view("input.grad")
        self._params = self._views("params", "")
        self._grads = self._views("grads", ".grad")
        self._buffers = self._views("buffers", "")
        self._optimizer_state = MappingProxyType({
            b.name.split(".", 1)[1]: self._view(b.name) for b in plan.by_role("optimizer")})
        self._rng_state = self._view("rng.state")
        self.input_grad: np.ndarray | None = None
        self._per_sample_norms = _per_sample_norms(net, shapes)
        self._min_train_batch = 2 if self._per_sample_norms else 1
        self.threads = plan.threads
        self.init(0)

    @property
    def threads(self) -> int:
        """Threads a step uses (OpenMP builds; 1 otherwise). Results depend on the plan's parts
        only: with `deterministic=True` they are identical for any count."""
        return int(self._imem[self._plan.buffer("threads").offset])

    @threads.setter
    def threads(self, n: int) -> None:
        _check_threads(n)
        if not self._lock.acquire(blocking=False):
            raise _in_use()
        try:
            self._lib.netc_set_threads(self._pimem, int(n))
        finally:
            self._lock.release()

    def set_threads(self, n: int) -> None:
        self.threads = n

    def profile(self, reset: bool = False) -> tuple[list[float], list[float]]:
        """Per-layer (forward, backward) seconds summed over calls, from a build with
        -DNETC_PROFILE in its flags (bench/perf.py); ([], []) from a normal build."""
        n = len(self._net.layers)
        out = self._ffi.new("double[]", 2 * n)
        if not self._lock.acquire(blocking=False):
            raise _in_use()
        try:
            if not self._lib.netc_profile(out, int(bool(reset))):
                return [], []
        finally:
            self._lock.release()
        return list(out[0:n]), list(out[n:2 * n])

    def profile_reset(self) -> None:
        if not self._lock.acquire(blocking=False):
            raise _in_use()
        try:
            self._lib.netc_profile(self._ffi.NULL, 1)
        finally:
            self._lock.release()

    @property
    def nbytes(self) -> int:
        """Bytes of the two arenas: exactly the plan's total_bytes."""
        return self._mem.nbytes + self._imem.nbytes

    def activation(self, label: str) -> np.ndarray:
        """The arena view (batch, C, H, W) of a layer's output: after a call, its first B
        samples hold what that call computed (the logits, a layer's feature maps)."""
        return self._view(f"{label}.out")

    # ---- running

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        """Outputs (b, *output_shape), a copy: probabilities when the net ends in softmax.
        train=True uses batch statistics (and updates the running ones) and drops out."""
        if not self._lock.acquire(blocking=False):
            raise _in_use()
        try:
            b = self._check_x(x, _flag("train", train))
            self._lib.netc_forward(self._pmem, self._pimem, self._ffi.from_buffer(x), b,
                                   int(train))
            return self._out[:b].reshape(b, *self._output_shape).copy()
        finally:
            self._lock.release()

    def loss_and_grad(self, x: np.ndarray, y, *, input_grad: bool = False,
                      train: bool = True) -> float:
        """The loss (mean over the batch), with `grads` filled (zeroed first) and, when asked,
        `input_grad` (b, *input_shape)."""
        input_grad = _flag("input_grad", input_grad)
        if not self._lock.acquire(blocking=False):
            raise _in_use()
        try:
            b = self._check_x(x, _flag("train", train))
            labels, targets = self._check_y(y, b)
            loss = self._lib.netc_loss_and_grad(
                self._pmem, self._pimem, self._ffi.from_buffer(x), labels, targets, b,
                int(train), int(input_grad))
            self.input_grad = self._dx[:b].reshape(x.shape).copy() if input_grad else None
        finally:
            self._lock.release()
        return float(loss)

    def train_step(self, x: np.ndarray, y, *, lr: float = 0.01, momentum: float = 0.0,
                   weight_decay: float = 0.0, beta1: float = 0.9, beta2: float = 0.999,
                   eps: float = 1e-8) -> float:
        """Forward, loss, backward and one optimizer update in a single C call; the loss.
        sgd uses lr, momentum, weight_decay; adam lr, beta1, beta2, eps, weight_decay."""
        hyper = _hyperparameters(lr, momentum, weight_decay, beta1, beta2, eps)
        if not self._lock.acquire(blocking=False):
            raise _in_use()
        try:
            b = self._check_x(x, train=True)
            labels, targets = self._check_y(y, b)
            return float(self._lib.netc_train_step(
                self._pmem, self._pimem, self._ffi.from_buffer(x), labels, targets, b, *hyper))
        finally:
            self._lock.release()

    def update(self, *, lr: float = 0.01, momentum: float = 0.0, weight_decay: float = 0.0,
               beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8) -> None:
        """train_step's optimizer update alone, from the gradients as they are now: after
        loss_and_grad and a change to them (data-parallel training sums them over processes)."""
        hyper = _hyperparameters(lr, momentum, weight_decay, beta1, beta2, eps)
        if not self._lock.acquire(blocking=False):
            raise _in_use()
        try:
            self._lib.netc_update(self._pmem, self._pimem, *hyper)
        finally:
            self._lock.release()

    @property
    def gradient(self) -> np.ndarray:
        """Every parameter's gradient in one writable view, in `params` order (the `grads`
        views are slices of it; the alignment gaps between them hold 0): one buffer to sum."""
        start = self._plan.region("grads")[0]
        return self._mem[start:start + self._plan.param_count]

    def seed(self, seed: int) -> None:
        """Seed the dropout generator (its state lives in imem: `rng_state`)."""
        seed = _seed64(seed)
        if not self._lock.acquire(blocking=False):
            raise _in_use()
        try:
            self._lib.netc_seed(self._pimem, seed)
        finally:
            self._lock.release()

    # ---- state

    def init(self, seed: int = 0) -> None:
        """Fresh parameters matched to each layer's activation (He for relu, Glorot uniform for
        tanh and sigmoid, LeCun normal otherwise), seeded; biases 0; subsample coefficients and
        BN scales 1; running mean 0, variance 1; optimizer state 0; dropout generator seeded."""
        seed = _seed64(seed)
        rng = np.random.default_rng(seed)
        if not self._lock.acquire(blocking=False):
            raise _in_use()
        try:
            for i, layer in enumerate(self._net.layers):
                w = self._params.get(f"{layer.label}.weight")
                if w is not None:
                    if isinstance(layer, (ir.Subsample, ir.BatchNorm)):
                        w[...] = 1
                    else:
                        w[...] = _init_weight(rng, w.shape,
                                              *_fans(layer, self._shapes.inputs[i]),
                                              _activation_after(self._net, i))
                if f"{layer.label}.bias" in self._params:
                    self._params[f"{layer.label}.bias"][...] = 0
                if isinstance(layer, ir.BatchNorm):
                    self._buffers[f"{layer.label}.running_mean"][...] = 0
                    self._buffers[f"{layer.label}.running_var"][...] = 1
            for arr in self._optimizer_state.values():
                arr[...] = 0
            self._lib.netc_seed(self._pimem, seed)
        finally:
            self._lock.release()

    def save(self, path: str | os.PathLike) -> None:
        """Parameters and buffers to an .npz, atomically (temp file, fsync, rename)."""
        if not self._lock.acquire(blocking=False):  # a step meanwhile would tear the weights
            raise _in_use()
        try:
            write_npz_atomic(Path(path), {**self._params, **self._buffers})
        finally:
            self._lock.release()

    def load(self, path: str | os.PathLike) -> None:
        """Parameters and buffers from an .npz written by save(); refuses anything else before
        changing the model. Reads no more than the tensors the network has."""
        wanted = {**self._params, **self._buffers}
        arrays = _read_weights(path, wanted, self._net.name)
        if not self._lock.acquire(blocking=False):
            raise _in_use()
        try:
            for name, arr in arrays.items():
                wanted[name][...] = arr
        finally:
            self._lock.release()

    # ---- validation: nothing reaches C unchecked

    def _check_x(self, x, train: bool) -> int:
        if not isinstance(x, np.ndarray):
            raise InputError(f"x must be a numpy array, not {type(x).__name__}")
        if x.dtype != self._dtype:
            raise InputError(f"x has dtype {x.dtype}, but the model was compiled for "
                             f"{self._dtype}", hint=f"pass x.astype(np.{self._dtype})")
        if x.ndim < 1 or x.shape[1:] not in self._sample_shapes:
            want = " or ".join(f"(b, {', '.join(map(str, s))})" for s in self._sample_shapes)
            raise InputError(f"x has shape {x.shape}, the network takes {want}")
        b = x.shape[0]
        if not 1 <= b <= self._batch:
            raise InputError(f"a batch of {b} samples, but the model was compiled for 1 to "
                             f"{self._batch}", hint="split the batch, or compile with a larger "
                             "batch=")
        if not x.flags.c_contiguous:
            raise InputError("x is not C-contiguous", hint="pass np.ascontiguousarray(x)")
        if train and b < self._min_train_batch:
            raise InputError(_one_value_per_channel(self._per_sample_norms[0], b),
                             hint=f"train on batches of at least {self._min_train_batch} "
                             "samples, or evaluate with train=False")
        return b

    def _check_y(self, y, b: int):
        """(labels pointer, targets pointer) for the C: one of them, the other NULL."""
        try:
            y = np.asarray(y)
        except (TypeError, ValueError) as e:  # ragged lists, objects numpy cannot hold
            raise InputError(f"y is not an array of labels or targets: {e}") from None
        k = self._classes
        if y.dtype.kind in "iu":
            if y.shape != (b,):
                raise InputError(f"labels have shape {y.shape}, expected ({b},): one class "
                                 f"index per sample")
            # one mse output learns the label itself (0 or 1, as `netc train` does); else a
            # label is a class index, the output it makes 1 (or the softmax's target)
            binary = k == 1 and self._net.loss != "cross_entropy"
            classes = 2 if binary else k
            if b and (y.min() < 0 or y.max() >= classes):
                bad = y[(y < 0) | (y >= classes)][0]
                raise InputError(
                    f"label {bad} is out of range: " + (
                        "a network with one output takes labels 0 and 1" if binary else
                        f"the network has {k} outputs, one per class 0 to {k - 1}"))
            if binary:
                self._targets[:b, 0] = y
                return self._ffi.NULL, self._ptargets
            self._labels[:b] = y
            return self._plabels, self._ffi.NULL
        if self._net.loss == "cross_entropy":
            raise InputError(f"cross-entropy needs integer class labels, not {y.dtype} values")
        if y.dtype.kind != "f":
            raise InputError(f"mse targets must be floats (or integer labels), not {y.dtype}")
        shapes = [(b, *self._output_shape), (b, k)]
        if y.shape not in shapes:
            raise InputError(f"targets have shape {y.shape}, expected {shapes[0]}")
        if not np.isfinite(y).all():
            raise InputError("targets contain NaN or infinity")
        self._targets[:b] = y.reshape(b, -1)
        return self._ffi.NULL, self._ptargets

    # ---- plumbing

    def _view(self, name: str) -> np.ndarray:
        buf = self._plan.buffer(name)
        arena = self._mem if buf.arena == "mem" else self._imem
        return arena[buf.offset:buf.offset + buf.size].reshape(buf.shape)

    def _views(self, role: str, suffix: str) -> MappingProxyType:
        """Read-only mapping (rebinding a name would not reach C) of writable arena views,
        in network order, keyed without the suffix."""
        order = {layer.label: i for i, layer in enumerate(self._net.layers)}
        bufs = sorted((b for b in self._plan.by_role(role) if b.arena == "mem" and b.layer),
                      key=lambda b: (order[b.layer], b.offset))
        return MappingProxyType({b.name.removesuffix(suffix): self._view(b.name) for b in bufs})

    def _check_library(self) -> None:
        lib, p = self._lib, self._plan
        got = (lib.netc_abi_version(), lib.netc_real_size(), lib.netc_mem_size(),
               lib.netc_imem_size(), lib.netc_max_batch())
        want = (codegen.ABI_VERSION, self._dtype.itemsize, p.mem_size, p.imem_size, p.batch)
        if got != want:
            raise BuildError(f"the library {self._library.path} does not match its memory plan "
                             f"(abi, real size, mem, imem, batch: {got} != {want})")


def _check_threads(n) -> None:
    if not isinstance(n, numbers.Integral) or isinstance(n, bool) or not 1 <= n <= MAX_THREADS:
        raise InputError(f"threads must be an integer from 1 to {MAX_THREADS}, not {n!r}")


def _in_use() -> InputError:
    return InputError("this Model is in use by another thread: a Model runs one call at a time "
                      "(concurrent calls would race in its arenas)",
                      hint="give each thread its own Model (compiling the same spec again reuses "
                           "the cached build), or serialise the calls with a lock")


def _flag(name: str, value) -> bool:
    """A True/False argument: "yes" or 2 is a mistake, not a truth value."""
    if not isinstance(value, (bool, np.bool_)):
        raise InputError(f"{name} must be True or False, not {value!r}")
    return bool(value)


def _hyperparameter(name: str, value) -> float:
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:  # an int beyond float range
            number = math.inf
        if math.isfinite(number) and number >= 0:
            return number
    raise InputError(f"{name} must be a finite number ≥ 0, not {value!r}")


def _hyperparameters(lr, momentum, weight_decay, beta1, beta2, eps) -> list[float]:
    """The optimizer's arguments in the C entry points' order, each checked."""
    return [_hyperparameter(name, v) for name, v in (
        ("lr", lr), ("momentum", momentum), ("weight_decay", weight_decay),
        ("beta1", beta1), ("beta2", beta2), ("eps", eps))]


def _per_sample_norms(net: ir.Net, shapes: Shapes) -> tuple[tuple[str, ir.Shape], ...]:
    return tuple((layer.label, shape) for layer, shape in zip(net.layers, shapes.inputs)
                 if isinstance(layer, ir.BatchNorm) and shape[1:] == (1, 1))


def _one_value_per_channel(norm: tuple[str, ir.Shape], b: int) -> str:
    label, (c, h, w) = norm
    return (f"BatchNorm layer '{label}' gets an input of shape ({b}, {c}, {h}, {w}) in training "
            "mode: one value per channel, so its batch variance is 0 and it would normalise by "
            "eps alone")


def _read_weights(path: str | os.PathLike, wanted: dict[str, np.ndarray],
                  network: str) -> dict[str, np.ndarray]:
    """The arrays of an .npz written by Model.save, each checked against the tensor it will fill
    (name, shape, a real dtype) from its header before its data is read."""
    where = f"cannot read weights from '{os.fspath(path)}'"
    with open_regular(path, "weights") as f:
        if f.read(4) not in (b"PK\x03\x04", b"PK\x05\x06"):  # a zip's first record, or none
            raise DataError(f"{where}: it is not an .npz archive",
                            hint="Model.load reads the .npz files that Model.save writes")
        f.seek(0)
        try:
            with zipfile.ZipFile(f) as z:
                members = {m.removesuffix(".npy"): m for m in z.namelist()}
                if "meta" in members and any(k.startswith("param/") for k in members):
                    raise DataError(f"'{os.fspath(path)}' is a training checkpoint (written by "
                                    "netc train), not weights written by Model.save",
                                    hint="netc.load_trained(spec, path) restores it: its "
                                         ".model is the trained Model")
                missing = sorted(set(wanted) - set(members))
                extra = sorted(set(members) - set(wanted))
                if missing or extra:
                    raise DataError(f"{os.fspath(path)} does not match network '{network}': "
                                    f"missing {missing or 'nothing'}, unexpected "
                                    f"{extra or 'nothing'}",
                                    hint="load weights saved from the same spec and parameters")
                arrays = {}
                for name, member in members.items():
                    _check_header(z, member, name, wanted[name], where)
                    with z.open(member) as m:
                        arrays[name] = np.lib.format.read_array(m, allow_pickle=False)
                return arrays
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error,
                NotImplementedError) as e:  # NotImplementedError: an unknown compression
            raise DataError(f"{where}: {e}") from None


def _check_header(z: zipfile.ZipFile, member: str, name: str, want: np.ndarray,
                  where: str) -> None:
    with z.open(member) as m:
        version = np.lib.format.read_magic(m)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if read_header is None:
            raise DataError(f"{where}: {name} is in .npy format version {version}, which "
                            "Model.save does not write")
        shape, _, dtype = read_header(m)
    if dtype.kind not in "fiu":
        raise DataError(f"{where}: {name} holds {dtype} values, not numbers")
    if shape != want.shape:
        raise DataError(f"{where}: {name} has shape {shape}, the network needs {want.shape}")


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
    """The activation that follows layer i's weights: its own, or the first Act on the way to
    the next layer with weights, following the first reader at each step (BN, dropout, pooling,
    flatten, add and concat in between do not change it)."""
    act = getattr(net.layers[i], "act", None)
    if act is not None:
        return act.kind
    readers = net.consumers(i)
    while readers:
        layer = net.layers[readers[0]]
        if isinstance(layer, ir.Act):
            return layer.fn.kind
        if not isinstance(layer, (ir.BatchNorm, ir.Dropout, ir.Pool, ir.GlobalAvgPool,
                                  ir.Flatten, ir.Add, ir.Concat)):
            return None
        readers = net.consumers(readers[0])
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
    with atomic_file(path, "the weights") as f:
        np.savez(f, **arrays)
