"""Training on real data: fit() runs epochs of mini-batches on a compiled model; evaluate() and
predict() use a trained one.

fit() owns what the user sees and keeps: a progress bar per epoch (stderr), one summary line per
epoch, a JSON-lines log, and atomic checkpoints (netc.checkpoint) that --resume continues from bit
for bit. Never parses specs or writes C: it drives runtime.Model. Guide: docs/training.md.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from . import checkpoint
from .data import MODES, Dataset, Normalizer, Split, validation_split
from .errors import DataError, NetcError
from .runtime import Model, Network

OPTIMIZERS, SCHEDULES = ("sgd", "adam"), ("const", "step", "cosine")
DEFAULT_LR = {"sgd": 0.05, "adam": 0.001}
SAVE_EVERY = 5.0  # seconds between checkpoints at least: XOR's epochs take microseconds
EVAL_BATCH = 256  # samples per forward call when evaluating with a model of its own


class Diverged(NetcError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""

    exit_code = 5


@dataclass(frozen=True)
class Config:
    """Everything that determines a run's numbers; stored in every checkpoint."""

    data: str = "mnist-10k"  # a data set name or path (netc.data.load)
    epochs: int = 20
    batch: int = 32  # 1: online learning; 0: full batch (the whole training split)
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

    def __post_init__(self):
        if self.lr is None and self.optimizer in DEFAULT_LR:
            object.__setattr__(self, "lr", DEFAULT_LR[self.optimizer])
        checks = [(self.optimizer in OPTIMIZERS, f"optimizer must be one of {OPTIMIZERS}"),
                  (self.schedule in SCHEDULES, f"schedule must be one of {SCHEDULES}"),
                  (self.normalize in MODES, f"normalize must be one of {MODES}"),
                  (self.epochs >= 1 and self.batch >= 0 and self.threads >= 1,
                   "epochs ≥ 1, batch ≥ 0 and threads ≥ 1"),
                  (0 <= self.val_split < 1, "val_split must be in [0, 1)"),
                  (self.early_stop >= 0, "early_stop must be ≥ 0"),
                  (self.early_stop == 0 or self.val_split > 0,
                   "early stopping watches the validation loss: give a val_split > 0"),
                  (all(math.isfinite(v) and v >= 0 for v in (
                      self.lr, self.momentum, self.weight_decay)),
                   "lr, momentum and weight_decay must be finite and ≥ 0")]
        for ok, message in checks:
            if not ok:
                raise NetcError(f"bad training option: {message}")

    @classmethod
    def from_dict(cls, d: dict) -> Config:
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


@dataclass
class Evaluation:
    loss: float  # mean over the samples: cross-entropy, or ½‖out − t‖² for mse
    accuracy: float
    errors: int
    count: int
    confusion: np.ndarray  # (classes, classes) counts: row = true class, column = predicted

    def summary(self) -> str:
        return (f"loss {self.loss:.4f}, accuracy {100 * self.accuracy:.2f}% "
                f"({self.errors:,} errors in {self.count:,})")


@dataclass
class Result:
    model: Model
    history: list[dict]  # the log's epoch records
    test: Evaluation | None
    checkpoint: Path  # the one the test was evaluated with
    normalizer: Normalizer


# ---- data: fitted to the network's input, standardised, labels turned into what the loss takes

def fit_input(x: np.ndarray, shape: tuple[int, ...], name: str = "the data") -> np.ndarray:
    """x (N, ...) as (N, *shape): reshaped when the sizes agree (e.g. 28×28 images for an fc
    input of 784), zero-padded around the centre when the images are smaller than the input
    (MNIST's 28×28 for LeNet-5's 32×32, as LeCun et al. 1998 did)."""
    n, want = len(x), tuple(shape)
    if x.shape[1:] == want:
        return x
    if int(np.prod(x.shape[1:])) == int(np.prod(want)):
        return x.reshape(n, *want)
    if x.ndim == 4 and x.shape[1] == want[0] and all(a <= b for a, b in zip(x.shape[2:], want[1:])):
        top, left = (want[1] - x.shape[2]) // 2, (want[2] - x.shape[3]) // 2
        out = np.zeros((n, *want), np.float32)
        out[:, :, top:top + x.shape[2], left:left + x.shape[3]] = x
        return out
    raise DataError(f"{name} has samples of shape {'x'.join(map(str, x.shape[1:]))}, the "
                    f"network's input is {'x'.join(map(str, want))}",
                    hint="the sizes must agree, or the images be smaller (they are zero-padded)")


def outputs(network: Network) -> int:
    c, h, w = network.shapes.outputs[-1]
    return c * h * w


def check_labels(labels: np.ndarray, k: int, name: str) -> None:
    classes = max(k, 2)  # one output: a two-class problem, output ≥ 0.5 means class 1
    if labels.ndim != 1:
        raise DataError(f"{name}: training takes class labels, not {labels.shape} targets")
    if len(labels) and labels.max() >= classes:
        raise DataError(f"{name} has class {labels.max()}, the network has {k} output"
                        f"{'s' if k > 1 else ''} ({classes} classes)")


def _target(labels: np.ndarray, k: int, dtype) -> np.ndarray:
    """A single output learns the label itself (mse on 0/1); several learn the class index."""
    return labels.astype(dtype)[:, None] if k == 1 else labels


def _predicted(out: np.ndarray, k: int) -> np.ndarray:
    out = out.reshape(len(out), k)
    return (out[:, 0] >= 0.5).astype(np.int64) if k == 1 else out.argmax(axis=1)


def prepare_split(network: Network, split: Split | None, normalizer: Normalizer | None,
                  name: str) -> Split | None:
    """A split fitted to the network's input (fit_input), labels checked, normalised."""
    if split is None:
        return None
    check_labels(split.y, outputs(network), name)
    x = fit_input(split.x, network.net.input, name)
    return Split(x if normalizer is None else normalizer.apply(x), split.y)


def prepare(network: Network, ds: Dataset, config: Config,
            normalizer: Normalizer | None = None) -> tuple[Split, Split | None, Split | None,
                                                             Normalizer]:
    """(train, validation, test, normalizer): the validation split seeded by config.seed, the
    normalizer fitted on the training part (or the given one, as when resuming)."""
    train, val = prepare_split(network, ds.train, None, f"{ds.name} (train)"), None
    if round(config.val_split * len(train)) >= 1:  # else too few samples to hold any out
        train, val = validation_split(train, config.val_split, (config.seed, 1))
    normalizer = normalizer or Normalizer.fit(config.normalize, train.x)
    test = prepare_split(network, ds.test, normalizer, f"{ds.name} (test)")
    return (*(Split(normalizer.apply(s.x), s.y) if s is not None else None
              for s in (train, val)), test, normalizer)


# ---- evaluation and prediction

def predict(model: Model, x: np.ndarray) -> np.ndarray:
    """Outputs (N, K) of prepared inputs, in chunks of the model's compiled batch."""
    chunks = [model.forward(np.ascontiguousarray(x[i:i + model.batch]))
              for i in range(0, len(x), model.batch)]
    return np.concatenate(chunks).reshape(len(x), -1)


def evaluate(model: Model, split: Split) -> Evaluation:
    out = predict(model, split.x).astype(np.float64)
    labels, k = split.y, out.shape[1]
    if model.net.loss == "cross_entropy":
        p = out[np.arange(len(out)), labels]
        losses = -np.log(np.maximum(p, np.finfo(np.float64).tiny))
    else:
        t = labels[:, None].astype(np.float64) if k == 1 else np.eye(k)[labels]
        losses = 0.5 * ((out - t) ** 2).sum(axis=1)
    pred = _predicted(out, k)
    confusion = np.zeros((max(k, 2),) * 2, np.int64)
    np.add.at(confusion, (labels, pred), 1)
    errors = int((pred != labels).sum())
    return Evaluation(float(losses.mean()), 1 - errors / len(labels), errors, len(labels),
                      confusion)


def load_trained(network: Network, path: str | os.PathLike, *, batch: int = EVAL_BATCH,
                 flags=None) -> tuple[Model, checkpoint.Checkpoint]:
    """A model for evaluation and prediction, compiled and filled from a checkpoint; refuses
    one trained on another network."""
    ckpt = checkpoint.read(path)
    checkpoint.check_network(ckpt, network)
    model = network.compile(batch=batch, flags=flags)
    checkpoint.restore(model, ckpt, training=False)
    return model, ckpt


# ---- training

def lr_at(config: Config, epoch: int) -> float:
    """The learning rate of epoch (0-based)."""
    if config.schedule == "step":
        passed = (epoch >= config.epochs * 0.5) + (epoch >= config.epochs * 0.75)
        return config.lr * 0.1 ** passed
    if config.schedule == "cosine":
        return config.lr * 0.5 * (1 + math.cos(math.pi * epoch / config.epochs))
    return config.lr


class _Progress:
    """One epoch's bar on a terminal, redrawn at most 10 times a second; silent otherwise."""

    def __init__(self, stream, enabled: bool, title: str, total: int):
        self.stream, self.enabled, self.title, self.total = stream, enabled, title, total
        self.start = self.last = time.perf_counter()

    def update(self, done: int, loss: float) -> None:
        now = time.perf_counter()
        if not self.enabled or (now - self.last < 0.1 and done < self.total):
            return
        self.last, filled = now, 24 * done // self.total
        rate = done / max(now - self.start, 1e-9)
        self.stream.write(f"\r{self.title} [{'#' * filled}{'.' * (24 - filled)}] "
                          f"{done:,}/{self.total:,}  {rate:,.0f} img/s  loss {loss:.4f}\x1b[K")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


@dataclass
class _State:
    """What a checkpoint must carry besides the model to go on exactly."""

    epoch: int = 0  # epochs completed
    history: list[dict] = field(default_factory=list)
    best_loss: float | None = None  # early stopping: the best validation loss so far
    best_epoch: int = 0
    stale: int = 0  # epochs since it improved


def fit(network: Network, dataset: Dataset, config: Config = Config(), *,
        out: str | os.PathLike | None = None, resume: str | os.PathLike | None = None,
        flags=None, echo=print, progress: bool | None = None,
        save_every: float = SAVE_EVERY) -> Result:
    """Train, checkpointing after every epoch into `out` (default: the resumed checkpoint's
    folder, else runs/<network>) when save_every seconds have passed since the last save, and
    after the last epoch; then evaluate on the test split. Raises Diverged on a NaN/Inf
    loss, DataError for data or a checkpoint that does not fit."""
    ckpt = checkpoint.read(resume) if resume else None
    if ckpt:
        checkpoint.check_network(ckpt, network, "the network being trained")
    out = Path(out or (ckpt.path.parent if ckpt else Path("runs") / network.net.name))
    paths = {k: out / f"{k}.npz" for k in ("checkpoint", "best")}
    train, val, test, norm = prepare(network, dataset, config, ckpt and ckpt.normalizer)
    k, n = outputs(network), len(train)
    model = network.compile(batch=config.batch or n, optimizer=config.optimizer, flags=flags,
                            threads=config.threads, deterministic=config.deterministic)
    shuffle = np.random.default_rng(config.seed)
    state = _State()
    if ckpt:
        checkpoint.restore(model, ckpt)
        shuffle.bit_generator.state = ckpt.meta["shuffle_rng"]
        state = _State(**ckpt.meta["state"])
    else:
        model.init(config.seed)
        paths["best"].unlink(missing_ok=True)  # an earlier run's
    out.mkdir(parents=True, exist_ok=True)
    log = out / "log.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in state.history))  # drop epochs past it
    progress = sys.stderr.isatty() if progress is None else progress
    last = model.plan.buffer(f"{model.net.layers[-1].label}.out")
    out_view = model.mem[last.offset:last.offset + last.size].reshape(model.batch, -1)
    hyper = dict(momentum=config.momentum, weight_decay=config.weight_decay)
    classes = list(dataset.classes) if dataset.num_classes >= max(k, 2) else None

    def save(path: Path) -> None:
        checkpoint.save(path, model, norm, {
            "config": asdict(config), "state": asdict(state), "classes": classes,
            "shuffle_rng": shuffle.bit_generator.state})

    echo(_header(network, model, dataset, config, train, val, test))
    saved, kept = time.perf_counter(), (ckpt.path, state.epoch) if ckpt else None
    if ckpt:
        echo(f"resuming from {ckpt.path} after epoch {state.epoch}")
    while state.epoch < config.epochs and not (config.early_stop and
                                               state.stale >= config.early_stop):
        lr, start = lr_at(config, state.epoch), time.perf_counter()
        batches = np.array_split(shuffle.permutation(n), range(model.batch, n, model.batch))
        if len(batches) > 1 and len(batches[-1]) < model.min_train_batch:
            # a lone last sample would give BatchNorm a batch variance of 0: skip it, as
            # PyTorch's drop_last would; the next epoch's shuffle leaves out another one
            batches.pop()
        bar = _Progress(sys.stderr, progress, f"epoch {state.epoch + 1}/{config.epochs}",
                        sum(map(len, batches)))
        total, correct, seen = 0.0, 0, 0
        for i, idx in enumerate(batches):
            labels = train.y[idx]
            loss = model.train_step(train.x[idx], _target(labels, k, model.dtype), lr=lr, **hyper)
            if not math.isfinite(loss):
                bar.close()
                _diverged(loss, state.epoch + 1, i + 1, lr, config.lr, kept)
            total, seen = total + loss * len(idx), seen + len(idx)
            correct += int((_predicted(out_view[:len(idx)], k) == labels).sum())
            bar.update(seen, total / seen)
        bar.close()
        seconds = time.perf_counter() - start
        record = {"epoch": state.epoch + 1, "lr": lr, "train_loss": total / seen,
                  "train_acc": correct / seen, "seconds": round(seconds, 3),
                  "images_per_s": round(seen / seconds, 1)}
        if val is not None:
            ev = evaluate(model, val)
            if not math.isfinite(ev.loss):
                _diverged(ev.loss, state.epoch + 1, "validation", lr, config.lr, kept)
            record |= {"val_loss": ev.loss, "val_acc": ev.accuracy}
        state.epoch += 1
        state.history.append(record)
        improved = val is not None and (state.best_loss is None or ev.loss < state.best_loss)
        if improved:
            state.best_loss, state.best_epoch, state.stale = ev.loss, state.epoch, 0
        elif val is not None:
            state.stale += 1
        echo(_epoch_line(record, config.epochs))
        with log.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if config.early_stop and improved:
            save(paths["best"])
        stopping = state.epoch == config.epochs or 0 < config.early_stop <= state.stale
        if stopping or time.perf_counter() - saved >= save_every:
            save(paths["checkpoint"])
            saved, kept = time.perf_counter(), (paths["checkpoint"], state.epoch)
    if config.early_stop and state.stale >= config.early_stop:
        echo(f"early stop: no better validation loss for {state.stale} epochs; "
             f"using epoch {state.best_epoch}")
    used = paths["best"] if config.early_stop and paths["best"].exists() else kept[0]
    if used != kept[0]:
        checkpoint.restore(model, checkpoint.read(used), training=False)
    result = evaluate(model, test) if test is not None else None
    if result is not None:
        echo(f"test accuracy {100 * result.accuracy:.2f}% ({result.errors:,} errors in "
             f"{result.count:,}), loss {result.loss:.4f}")
        with log.open("a") as f:
            f.write(json.dumps({"test_loss": result.loss, "test_acc": result.accuracy,
                                "test_errors": result.errors, "test_count": result.count,
                                "checkpoint": str(used)}) + "\n")
    echo(f"checkpoint: {used}  (log: {log})")
    return Result(model, state.history, result, used, norm)


def _diverged(loss: float, epoch: int, step, lr: float, base_lr: float,
              kept: tuple[Path, int] | None) -> None:
    where = f"the last good checkpoint, after epoch {kept[1]}, is {kept[0]}" if kept else ""
    raise Diverged(f"the loss became {loss} in epoch {epoch} (step {step}, lr {lr:g}): training "
                   f"diverged; {where or 'no checkpoint was written'}",
                   hint=f"lower the learning rate, e.g. --lr {base_lr / 10:g}"
                        + (f", and continue with --resume {kept[0]}" if kept else ""))


def _header(network: Network, model: Model, ds: Dataset, config: Config, train: Split,
            val: Split | None, test: Split | None) -> str:
    params = sum(p.size for p in model.params.values())
    sizes = ", ".join(f"{len(s):,} {what}" for s, what in ((train, "train"), (val, "validation"),
                                                           (test, "test")) if s is not None)
    shape = lambda s: "x".join(map(str, s))  # noqa: E731
    padded = (f"; {shape(ds.input_shape)} zero-padded to {shape(network.net.input)}"
              if len(ds.input_shape) == 3 and ds.input_shape[1:] != network.net.input[1:]
              and ds.input_shape[0] == network.net.input[0] else "")
    opt = (f"sgd lr {config.lr:g} momentum {config.momentum:g}" if config.optimizer == "sgd"
           else f"adam lr {config.lr:g}")
    return (f"{network.net.name}: {params:,} parameters; {ds.name}: {sizes}{padded}\n"
            f"{opt}, weight decay {config.weight_decay:g}, {config.schedule} schedule, batch "
            f"{model.batch}, {config.epochs} epoch{'s' * (config.epochs > 1)}, "
            f"normalize {config.normalize}, seed {config.seed}"
            + (f", {config.threads} threads" if config.threads > 1 else "")
            + (", deterministic" if config.deterministic else ""))


def _epoch_line(r: dict, epochs: int) -> str:
    val = (f"  val loss {r['val_loss']:.4f} acc {100 * r['val_acc']:6.2f}%"
           if "val_loss" in r else "")
    return (f"epoch {r['epoch']:>{len(str(epochs))}}/{epochs}  train loss {r['train_loss']:.4f} "
            f"acc {100 * r['train_acc']:6.2f}%{val}  {r['images_per_s']:,.0f} img/s  "
            f"{r['seconds']:.1f} s")
