"""Training checkpoints: one uncompressed .npz holding everything a run needs to go on bit for bit.

Arrays (plain NumPy, loaded without pickle): `param/<name>` and `buffer/<name>` (the model's
tensors), `optim/<name>` (momentum, or Adam's m and v, and the step counter), `rng/dropout` (the C
generator's state words), `norm/<key>` (the fitted input standardisation) and `meta`, a JSON string:
format and version, the spec text, its sha256 and the parameter values it was lowered with, the
epoch, the numpy shuffling generator's state, the config, the history, the class names and the
training data's sha256. Writes are atomic (temp file, fsync, rename, fsync of the folder).

read() is the one place a checkpoint file is trusted: it refuses anything but a regular file
holding an uncompressed .npz, reads every member's .npy header before any data, checks each
declared shape against what the checkpoint's own network needs, and validates every meta field,
so a crafted or damaged file gives one DataError, never a traceback or a huge allocation.
Details: docs/training.md.
"""
from __future__ import annotations

import hashlib
import json
import math
import numbers
import os
import zipfile
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np

from . import __version__
from .data import MODES, Normalizer
from .data.augment import Augment
from .errors import DataError, NetcError
from .files import open_regular
from .lower import lower
from .parse import parse
from .passes.memory import DTYPES
from .runtime import Model, Network, write_npz_atomic
from .span import Source

FORMAT, VERSION = "netc-checkpoint", 2
# The meta JSON as numpy stores it (4 bytes a character). Measured: 556 bytes an epoch of
# history (500 epochs: 278 KB), so this bound holds about 120,000 epochs and still caps memory.
MAX_META_BYTES = 64 << 20
OPTIMIZERS, SCHEDULES = ("sgd", "adam"), ("const", "step", "cosine")
DEFAULT_LR = {"sgd": 0.05, "adam": 0.001}
_REAL = "a finite number"


@dataclass(frozen=True)
class Config:
    """Everything that determines a run's numbers; stored in every checkpoint."""

    data: str = "mnist-10k"  # a data set name or path (netc.data.load)
    epochs: int = 20
    batch: int = 32  # 1: online learning; 0 or "full": full batch (the whole training split)
    lr: float | None = None  # None: 0.05 for sgd, 0.001 for adam
    momentum: float = 0.9  # sgd only
    weight_decay: float = 5e-4  # L2: adds ½λ‖W‖² to the loss, weights only (not biases)
    optimizer: str = "sgd"
    schedule: str = "cosine"  # const; step: ×0.1 after 50% and 75% of the epochs; cosine: to 0
    normalize: str = "standard"  # fitted on the training split only
    val_split: float = 0.1  # the held-out fraction of the training split; 0 for none
    seed: int = 0  # initialisation, validation split, shuffling and dropout
    threads: int = 1  # OpenMP threads over each batch; results depend on it unless deterministic
    deterministic: bool = False  # fixed batch chunks: the same results for any thread count
    early_stop: int = 0  # stop after this many epochs without a better validation loss; 0: off
    augment: str = ""  # training batches only, e.g. "crop:4,flip" (data/augment.py); "": off

    def __post_init__(self):
        if self.batch == "full":  # as the CLI's --batch full
            object.__setattr__(self, "batch", 0)
        if self.lr is None and self.optimizer in DEFAULT_LR:
            object.__setattr__(self, "lr", DEFAULT_LR[self.optimizer])
        for f in fields(self):  # types first, so the range checks below cannot raise TypeError
            value, kind = getattr(self, f.name), _KINDS[f.name]
            if not _is(value, kind):
                raise NetcError(f"bad training option: {f.name} must be {kind}, not {value!r}")
        checks = [(self.optimizer in OPTIMIZERS, f"optimizer must be one of {OPTIMIZERS}"),
                  (self.schedule in SCHEDULES, f"schedule must be one of {SCHEDULES}"),
                  (self.normalize in MODES, f"normalize must be one of {MODES}"),
                  (self.epochs >= 1 and self.batch >= 0 and self.threads >= 1,
                   "epochs ≥ 1, batch ≥ 0 and threads ≥ 1"),
                  (0 <= self.val_split < 1, "val_split must be in [0, 1)"),
                  (self.early_stop >= 0, "early_stop must be ≥ 0"),
                  (self.seed >= 0, "seed must be ≥ 0"),
                  (self.early_stop == 0 or self.val_split > 0,
                   "early stopping watches the validation loss: give a val_split > 0"),
                  (all(v >= 0 for v in (self.lr, self.momentum, self.weight_decay)),
                   "lr, momentum and weight_decay must be ≥ 0")]
        for ok, message in checks:
            if not ok:
                raise NetcError(f"bad training option: {message}")
        try:
            Augment.parse(self.augment)
        except NetcError as e:
            raise NetcError(f"bad training option: {e.message}") from None

    @classmethod
    def from_dict(cls, d: dict) -> Config:
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


_KINDS = {"data": "a string", "epochs": "an integer", "batch": "an integer or 'full'",
          "lr": _REAL, "momentum": _REAL, "weight_decay": _REAL, "optimizer": "a string",
          "schedule": "a string", "normalize": "a string", "val_split": _REAL,
          "seed": "an integer", "threads": "an integer", "deterministic": "true or false",
          "early_stop": "an integer", "augment": "a string"}


def _is(value, kind: str) -> bool:
    """Whether a JSON or Python value is of the kind a message names (bool is no number)."""
    if kind == "true or false":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if kind == _REAL:
        return isinstance(value, numbers.Real) and math.isfinite(value)
    if kind.startswith("an integer"):
        return isinstance(value, numbers.Integral)
    return isinstance(value, str)


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    meta: dict  # validated: every field below is present and of its type
    arrays: dict[str, np.ndarray]  # validated: exactly the members the network needs
    network: Network  # lowered again from the checkpoint's own spec text and parameters
    config: Config
    normalizer: Normalizer

    def group(self, prefix: str) -> dict[str, np.ndarray]:
        return {k.split("/", 1)[1]: v for k, v in self.arrays.items() if k.startswith(prefix + "/")}

    def nonfinite(self) -> list[str]:
        """Names of the parameters holding NaN or infinity: such weights output garbage."""
        return [k for k, v in self.group("param").items() if not np.isfinite(v).all()]


def spec_sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def tensors(model: Model) -> dict[str, np.ndarray]:
    """Copies of the model state a checkpoint keeps: param/, buffer/, optim/ and rng/."""
    arrays = {f"param/{k}": v.copy() for k, v in model.params.items()}
    arrays |= {f"buffer/{k}": v.copy() for k, v in model.buffers.items()}
    arrays |= {f"optim/{k}": v.copy() for k, v in model.optimizer_state.items()}
    arrays["rng/dropout"] = model.rng_state.copy()
    return arrays


def save(path: str | os.PathLike, model: Model, normalizer: Normalizer, meta: dict,
         state: dict[str, np.ndarray] | None = None) -> None:
    """Write model state (or `state`, taken earlier with tensors(model)), normalisation and
    meta (the network's fields are added here)."""
    net = model.net
    meta = {"format": FORMAT, "version": VERSION, "netc": __version__, "network": net.name,
            "spec": net.source, "spec_sha256": spec_sha256(net.source),
            "params": dict(net.params), "dtype": str(model.dtype),
            "optimizer": model.plan.optimizer, **meta}
    arrays = {"meta": np.array(json.dumps(meta))}
    arrays |= tensors(model) if state is None else state
    arrays |= {f"norm/{k}": v for k, v in normalizer.to_dict().items()}
    write_npz_atomic(Path(path), arrays)


def untrained_meta(config: Config | None = None) -> dict:
    """The meta `save` needs for weights that no `netc train` run produced (a benchmark's or a
    test's initialisation): epoch 0 of `config`, no classes, no data fingerprint, so that eval,
    predict and export take the checkpoint and train --resume starts at its first epoch."""
    return {"config": asdict(config or Config()), "classes": None, "data_sha256": "",
            "shuffle_rng": np.random.PCG64(0).state,
            "state": {"epoch": 0, "history": [], "best_loss": None, "best_epoch": 0,
                      "stale": 0}}


# ---- reading: nothing is trusted until checked

def read(path: str | os.PathLike) -> Checkpoint:
    path = Path(path)
    with open_regular(path, "checkpoint") as f:
        size = os.fstat(f.fileno()).st_size
        try:
            with zipfile.ZipFile(f) as zf:
                return _read(path, zf, size)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as e:
            raise DataError(f"{path}: not a readable netc checkpoint ({_why(e)})",
                            hint=_HINT) from None


_HINT = "eval, predict and --resume take the checkpoint.npz written by `netc train`"


def _why(e: Exception) -> str:
    return str(e).split("\n")[0] or type(e).__name__


def _read(path: Path, zf: zipfile.ZipFile, size: int) -> Checkpoint:
    headers = _headers(path, zf, size)
    if "meta" not in headers:
        raise DataError(f"{path}: not a netc checkpoint (no 'meta' member)", hint=_HINT)
    shape, dtype, _ = headers["meta"]
    if shape != () or dtype.kind != "U" or dtype.itemsize > MAX_META_BYTES:
        raise DataError(f"{path}: 'meta' must be a string of at most {MAX_META_BYTES:,} bytes, "
                        f"not {dtype} {shape}")
    try:
        meta = json.loads(str(_load(zf, headers["meta"][2])))
    except (ValueError, RecursionError) as e:
        raise DataError(f"{path}: its 'meta' is not valid JSON ({_why(e)})") from None
    config = _check_meta(path, meta)
    network = _network(path, meta)
    c, h, w = network.shapes.outputs[-1]
    classes = max(c * h * w, 2)  # one output: two classes
    if meta["classes"] is not None and len(meta["classes"]) != classes:
        raise DataError(f"{path}: it names {len(meta['classes'])} classes, its network has "
                        f"{classes}")
    if meta.get("samples") and math.prod(meta["samples"]["shape"]) > math.prod(network.net.input):
        raise DataError(f"{path}: its training samples of shape {meta['samples']['shape']} "
                        f"are larger than its network's input {network.net.input}")
    want = _members(network, meta)
    _check_members(path, headers, want, math.prod(network.net.input))
    arrays = {name: _load(zf, info) for name, (_, _, info) in headers.items() if name != "meta"}
    try:
        normalizer = Normalizer.from_dict({k[5:]: v for k, v in arrays.items()
                                           if k.startswith("norm/")})
    except DataError as e:
        raise DataError(f"{path}: {e.message}") from None
    if normalizer.shape != network.net.input:
        raise DataError(f"{path}: its normalisation takes samples of shape {normalizer.shape}, "
                        f"the network's input is {network.net.input}")
    return Checkpoint(path, meta, arrays, network, config, normalizer)


def _headers(path: Path, zf: zipfile.ZipFile, size: int):
    """name → (shape, dtype, ZipInfo) of every member, from the .npy headers alone. A member
    must be stored uncompressed and hold exactly the bytes its header declares, so reading it
    can never allocate more than the file's own size (a header may declare 2^40 elements)."""
    headers = {}
    for info in zf.infolist():
        name = info.filename.removesuffix(".npy")
        if name == info.filename or name in headers:
            raise DataError(f"{path}: member {info.filename!r} is not one .npy array", hint=_HINT)
        if info.compress_type != zipfile.ZIP_STORED or info.compress_size > size:
            raise DataError(f"{path}: member {info.filename!r} is compressed or larger than "
                            f"the file", hint="netc writes checkpoints uncompressed")
        with zf.open(info) as member:
            try:
                version = np.lib.format.read_magic(member)
                if version not in ((1, 0), (2, 0)):
                    raise ValueError(f".npy format version {version}")
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, fortran, dtype = read_header(member)
            except (ValueError, TypeError, SyntaxError) as e:
                raise DataError(f"{path}: member {info.filename!r} is not a valid .npy array "
                                f"({_why(e)})") from None
            start = member.tell()
        if dtype.hasobject or fortran:
            raise DataError(f"{path}: member {info.filename!r} holds {dtype} data"
                            + (" in Fortran order" if fortran else "")
                            + "; checkpoints hold plain numbers and strings only")
        if info.file_size != start + math.prod(shape) * dtype.itemsize:
            raise DataError(f"{path}: member {info.filename!r} declares {shape} {dtype} but "
                            f"holds {info.file_size:,} bytes")
        headers[name] = (tuple(shape), dtype, info)
    return headers


def _load(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    with zf.open(info) as member:
        return np.lib.format.read_array(member, allow_pickle=False)


_META = {"netc": str, "network": str, "spec": str, "spec_sha256": str, "params": dict,
         "dtype": str, "optimizer": str, "config": dict, "state": dict, "shuffle_rng": dict,
         "data_sha256": str}
_STATE = {"epoch": "an integer ≥ 0", "history": "a list of records", "best_loss": _REAL,
          "best_epoch": "an integer ≥ 0", "stale": "an integer ≥ 0"}


def _check_meta(path: Path, meta) -> Config:
    """Every field of meta, or a DataError naming the first one that is missing or wrong."""
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DataError(f"{path}: not a netc checkpoint", hint=_HINT)
    if meta.get("version") != VERSION:
        raise DataError(f"{path}: checkpoint format version {meta.get('version')!r}, this netc "
                        f"reads version {VERSION}", hint="retrain, or use the netc that wrote it")

    def bad(field: str, what: str):
        return DataError(f"{path}: its meta field '{field}' must be {what}, not "
                         f"{_short(meta.get(field, 'missing'))}")
    for key, kind in _META.items():
        if not isinstance(meta.get(key), kind):
            raise bad(key, f"a {kind.__name__}")
    if meta["spec_sha256"] != spec_sha256(meta["spec"]):
        raise DataError(f"{path}: its spec text does not match its spec_sha256: the file was "
                        f"altered")
    if not all(isinstance(k, str) and _is(v, _REAL) for k, v in meta["params"].items()):
        raise bad("params", "names with finite numbers")
    if meta["dtype"] not in DTYPES:
        raise bad("dtype", " or ".join(DTYPES))
    if meta["optimizer"] not in OPTIMIZERS:
        raise bad("optimizer", " or ".join(OPTIMIZERS))
    classes = meta.get("classes", "missing")
    if classes is not None and not (isinstance(classes, list)
                                    and all(isinstance(c, str) for c in classes)):
        raise bad("classes", "a list of names or null")
    samples = meta.get("samples")  # optional: older checkpoints lack it (docs/training.md)
    if samples is not None and not (
            isinstance(samples, dict) and set(samples) == {"shape", "border_mean"}
            and isinstance(samples["shape"], list) and len(samples["shape"]) == 3
            and all(_is(n, "an integer") and n > 0 for n in samples["shape"])
            and _is(samples["border_mean"], _REAL)):
        raise bad("samples", "null or an object with a shape [C, H, W] and a border_mean")
    # a checkpoint written before augmentation existed has no `augment`: it trained without
    missing = [f.name for f in fields(Config) if f.name not in meta["config"] | {"augment": ""}]
    if missing:
        raise DataError(f"{path}: its config lacks {', '.join(missing)}")
    try:
        config = Config.from_dict(meta["config"])
    except NetcError as e:
        raise DataError(f"{path}: its config is invalid: {e.message}") from None
    state = meta["state"]
    if set(state) != set(_STATE):
        raise bad("state", f"an object with {', '.join(_STATE)}")
    counts = [state[k] for k in ("epoch", "best_epoch", "stale")]
    if not all(_is(v, "an integer") and v >= 0 for v in counts):
        raise bad("state", "an object with epoch, best_epoch and stale integers ≥ 0")
    if not (isinstance(state["history"], list) and len(state["history"]) == state["epoch"]
            and all(isinstance(r, dict) for r in state["history"])):
        raise bad("state", "an object whose history holds one record per finished epoch")
    if state["best_loss"] is not None and not _is(state["best_loss"], _REAL):
        raise bad("state", "an object whose best_loss is a finite number or null")
    try:  # the generator checks its own state: bit_generator name, integers in range
        np.random.PCG64().state = meta["shuffle_rng"]
    except (TypeError, ValueError, KeyError, OverflowError) as e:
        raise DataError(f"{path}: its shuffle_rng is not a PCG64 state ({_why(e)})") from None
    return config


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _network(path: Path, meta: dict) -> Network:
    """The checkpoint's network from its own spec text: always text, never a file name."""
    try:
        net = lower(parse(Source(f"{path} (its spec)", meta["spec"])), meta["params"])
        return Network(net)
    except NetcError as e:
        raise DataError(f"{path}: its stored spec does not lower: {e.message}") from None


def _members(network: Network, meta: dict) -> dict[str, tuple[tuple[int, ...], str]]:
    """Every model tensor a checkpoint of this network holds: name → (shape, dtype)."""
    plan = network.plan(1, meta["dtype"], meta["optimizer"])
    groups = {"params": "param", "buffers": "buffer"}
    want = {f"{groups[b.role]}/{b.name}": (b.shape, b.dtype) for b in plan.buffers
            if b.role in groups and b.arena == "mem" and b.layer}
    want |= {f"optim/{b.name.split('.', 1)[1]}": (b.shape, b.dtype)
             for b in plan.by_role("optimizer")}
    rng = plan.buffer("rng.state")
    want["rng/dropout"] = (rng.shape, rng.dtype)
    return want


_NORM = ("mode", "shape", "mean", "scale", "matrix", "eps")


def _check_members(path: Path, headers: dict, want: dict, features: int) -> None:
    """Members exactly as the network needs them; the normalisation's arrays no larger than a
    whitening matrix over the network's input (features²)."""
    names = set(headers) - {"meta"}
    norm = {f"norm/{k}" for k in _NORM}
    missing, extra = sorted((set(want) | norm) - names), sorted(names - set(want) - norm)
    if missing or extra:
        raise DataError(f"{path} does not match the network it names: missing "
                        f"{', '.join(missing) or 'nothing'}, unexpected "
                        f"{', '.join(extra) or 'nothing'}")
    for name, (shape, dtype) in want.items():
        got_shape, got_dtype, _ = headers[name]
        if (got_shape, str(got_dtype)) != (tuple(shape), dtype):
            raise DataError(f"{path}: {name} is {got_dtype} {got_shape}, the network needs "
                            f"{dtype} {tuple(shape)}")
    for name in norm:
        if math.prod(headers[name][0]) > features * features:
            raise DataError(f"{path}: {name} holds {math.prod(headers[name][0]):,} values, "
                            f"more than a normalisation of {features:,} features needs")


# ---- using a checkpoint

def check_network(ckpt: Checkpoint, network: Network, where: str = "the spec") -> None:
    """Refuse a checkpoint trained on a different network (layers, input, loss or parameters);
    the name, comments and layout of the spec text may differ."""
    theirs, ours = ckpt.network.net, network.net
    if replace(theirs, name=ours.name) == ours:
        return
    if theirs.params != ours.params:
        diff = f"parameters {_params(theirs.params)} (here {_params(ours.params)})"
    elif theirs.input != ours.input:
        diff = f"input {'x'.join(map(str, theirs.input))} (here {'x'.join(map(str, ours.input))})"
    elif len(theirs.layers) != len(ours.layers):
        diff = f"{len(theirs.layers)} layers (here {len(ours.layers)})"
    elif theirs.loss != ours.loss:
        diff = f"loss {theirs.loss} (here {ours.loss})"
    else:
        a, b = next((a, b) for a, b in zip(theirs.layers, ours.layers) if a != b)
        diff = f"layer {a.label!r} = {a!r} (here {b.label!r} = {b!r})"
    raise DataError(f"{ckpt.path} was trained on a different network: {diff}",
                    hint=f"use the checkpoint with the spec it was trained on (network "
                         f"'{ckpt.meta['network']}', spec sha256 {ckpt.meta['spec_sha256'][:12]}) "
                         f"and the same -D values; {where} differs")


def _params(params: tuple[tuple[str, float], ...]) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in params) or "none"


def restore(model: Model, ckpt: Checkpoint, *, training: bool = True) -> None:
    """Copy the checkpoint's tensors into the model; training=True also restores the optimizer
    state and the dropout generator (the model must use the checkpoint's optimizer)."""
    groups = [("param", model.params), ("buffer", model.buffers)]
    if training:
        if model.plan.optimizer != ckpt.meta["optimizer"]:
            raise DataError(f"{ckpt.path} holds {ckpt.meta['optimizer']} state; cannot resume "
                            f"with {model.plan.optimizer}",
                            hint="resume with the optimizer the run was started with")
        groups += [("optim", model.optimizer_state), ("rng", {"dropout": model.rng_state})]
    for prefix, views in groups:
        stored = ckpt.group(prefix)
        for name, view in views.items():
            if name not in stored or stored[name].shape != view.shape:
                raise DataError(f"{ckpt.path}: {prefix}/{name} is missing or has the wrong "
                                f"shape; the file does not match the network")
            view[...] = stored[name]
