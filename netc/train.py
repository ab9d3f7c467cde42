"""Training on real data: fit() runs epochs of mini-batches on a compiled model; evaluate() and
predict() use a trained one, and load_trained() makes one from a checkpoint.

fit() owns what the user sees and keeps: a progress bar per epoch (stderr), one summary line per
epoch, a JSON-lines log, and atomic checkpoints (netc.checkpoint) that --resume continues from bit
for bit. Never parses specs or writes C: it drives runtime.Model. Guide: docs/training.md.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from . import checkpoint
from .checkpoint import Config  # noqa: F401  (stored in every checkpoint, so defined there)
from .data import Dataset, Normalizer, Split, picture, validation_split
from .codegen.views import identifier
from .data.augment import Augment
from .distributed import SOLO, Stopped
from .errors import DataError, NetcError
from .files import append_text, write_atomic
from .lower import declared_params
from .runtime import Model, Network, load

SAVE_EVERY = 5.0  # seconds between checkpoints at least: XOR's epochs take microseconds
EVAL_BATCH = 256  # samples per forward call when evaluating with a model of its own
# The sample shapes of the built-in data sets (netc.data.NAMES): the hint for data that does not
# fit the network names those that do, without loading any.
BUILTIN_SHAPES = {"mnist-10k": (1, 28, 28), "mnist": (1, 28, 28), "fashion-mnist": (1, 28, 28),
                  "cifar10": (3, 32, 32), "cifar100": (3, 32, 32), "cifar100-coarse": (3, 32, 32),
                  "xor": (2,), "xor-signed": (2,)}


class Diverged(NetcError):
    """The loss became NaN or infinite; the last good epoch is on disk."""

    exit_code = 5


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during fit(); str() says exactly which checkpoint is on disk."""


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
    want = tuple(shape)
    fitted = _fitted(x, want)
    if fitted is not None:
        return fitted
    fitting = [name for name, s in BUILTIN_SHAPES.items()
               if _fitted(np.zeros((0, *s), np.float32), want) is not None]
    raise DataError(f"{name} has samples of shape {'x'.join(map(str, x.shape[1:]))}, the "
                    f"network's input is {'x'.join(map(str, want))}",
                    hint="the sizes must agree, or the images be smaller (they are zero-padded)"
                         + (f"; built-in data that fits: --data {' or '.join(fitting)}"
                            if fitting else ""))


def _fitted(x: np.ndarray, want: tuple[int, ...]) -> np.ndarray | None:
    n = len(x)
    if x.shape[1:] == want:
        return x
    if int(np.prod(x.shape[1:])) == int(np.prod(want)):
        return x.reshape(n, *want)
    if x.ndim == 4 and x.shape[1] == want[0] and all(a <= b for a, b in zip(x.shape[2:], want[1:])):
        top, left = (want[1] - x.shape[2]) // 2, (want[2] - x.shape[3]) // 2
        out = np.zeros((n, *want), np.float32)
        out[:, :, top:top + x.shape[2], left:left + x.shape[3]] = x
        return out
    return None


def outputs(network: Network | Model) -> int:
    c, h, w = network.shapes.outputs[-1]
    return c * h * w


def check_labels(labels: np.ndarray, k: int, name: str) -> None:
    """Refuse labels the network has no output for, before anything is sized by them."""
    classes = max(k, 2)  # one output: a two-class problem, output ≥ 0.5 means class 1
    if labels.ndim != 1:
        raise DataError(f"{name}: training takes class labels, not {labels.shape} targets")
    if len(labels) and (labels.max() >= classes or labels.min() < 0):
        bad = labels.max() if labels.max() >= classes else labels.min()
        raise DataError(f"{name} has class {bad}, the network has {k} output"
                        f"{'s' if k > 1 else ''} ({classes} classes, 0 to {classes - 1})")


def _target(labels: np.ndarray, k: int, dtype) -> np.ndarray:
    """A single output learns the label itself (mse on 0/1); several learn the class index."""
    return labels.astype(dtype)[:, None] if k == 1 else labels


def _predicted(out: np.ndarray, k: int) -> np.ndarray:
    out = out.reshape(len(out), k)
    return (out[:, 0] >= 0.5).astype(np.int64) if k == 1 else out.argmax(axis=1)


def prepare_split(network: Network, split: Split | None, normalizer: Normalizer | None,
                  name: str) -> Split | None:
    """A split fitted to the network's input (fit_input), labels checked, normalised. The shape
    is checked first: data for another network fails on its shape, whatever its labels."""
    if split is None:
        return None
    x = fit_input(split.x, network.net.input, name)
    check_labels(split.y, outputs(network), name)
    return Split(x if normalizer is None else normalizer.apply(x), split.y)


def prepare(network: Network, ds: Dataset, config: Config,
            normalizer: Normalizer | None = None, *,
            normalize_train: bool = True) -> tuple[Split, Split | None, Split | None, Normalizer]:
    """(train, validation, test, normalizer): both splits checked before any work, the
    validation split seeded by config.seed, the normalizer fitted on the training part only
    (or the given one, as when resuming). normalize_train=False leaves the training split raw,
    for augmentation before whitening (_whitens)."""
    train = prepare_split(network, ds.train, None, f"{ds.name} (train)")
    test = prepare_split(network, ds.test, None, f"{ds.name} (test)")
    val = None
    if round(config.val_split * len(train)) >= 1:  # else too few samples to hold any out
        train, val = validation_split(train, config.val_split, (config.seed, 1))
    normalizer = normalizer or Normalizer.fit(config.normalize, train.x,
                                              channels=image_channels(ds.train.x, train.x))
    return (train if not normalize_train else Split(normalizer.apply(train.x), train.y),
            *(Split(normalizer.apply(s.x), s.y) if s is not None else None for s in (val, test)),
            normalizer)


def image_channels(raw: np.ndarray, fitted: np.ndarray) -> int | None:
    """The channels of image data (N, C, H, W) that the network takes as a vector, else None:
    such pixels are standardised per channel as images are, not each by its own statistics
    (a border pixel lit in three images would be scaled up a hundredfold)."""
    vector = math.prod(fitted.shape[2:]) == 1 and fitted.shape[1] > 1
    return raw.shape[1] if raw.ndim == 4 and raw.shape[2] * raw.shape[3] > 1 and vector else None


def data_sha256(split: Split) -> str:
    """The fingerprint of a training split (inputs and labels) that --resume compares."""
    h = hashlib.sha256(str((split.x.shape, split.y.shape)).encode())
    for array in (split.x, split.y):  # as bytes; an empty array too (memoryview.cast refuses)
        h.update(np.ascontiguousarray(array).reshape(-1).view(np.uint8))
    return h.hexdigest()


# ---- evaluation and prediction

def predict(model: Model, x: np.ndarray) -> np.ndarray:
    """Outputs (N, K) of prepared inputs, in chunks of the model's compiled batch."""
    chunks = [model.forward(np.ascontiguousarray(x[i:i + model.batch]))
              for i in range(0, len(x), model.batch)]
    return np.concatenate(chunks).reshape(len(x), -1)


def evaluate(model: Model, split: Split, team=SOLO) -> Evaluation:
    """Loss, accuracy and confusion matrix in inference mode. Cross-entropy is computed from the
    logits (the softmax's input) by log-sum-exp, as the training step computes it: −log of a
    float32 probability that underflowed to 0 would be infinite, whatever the true loss. In a
    team of ranks (netc.distributed) each evaluates its shard and the sums are shared."""
    k, mine = outputs(model), team.shard(range(len(split)))
    inputs, labels, n = split.x[mine.start:mine.stop], split.y[mine.start:mine.stop], len(mine)
    cross_entropy = model.net.loss == "cross_entropy"
    logits = _logits(model) if cross_entropy else None
    losses, predicted = np.empty(n), np.empty(n, np.int64)
    for i in range(0, n, model.batch):
        x = np.ascontiguousarray(inputs[i:i + model.batch])
        b, y = len(x), labels[i:i + model.batch]
        out = model.forward(x).reshape(b, k)
        if cross_entropy:
            z = (x if logits is None else logits[:b]).reshape(b, k).astype(np.float64)
            top = z.max(axis=1)
            lse = top + np.log(np.exp(z - top[:, None]).sum(axis=1))
            losses[i:i + b] = lse - z[np.arange(b), y]
        else:
            t = y[:, None].astype(np.float64) if k == 1 else np.eye(k)[y]
            losses[i:i + b] = 0.5 * ((out.astype(np.float64) - t) ** 2).sum(axis=1)
        predicted[i:i + b] = _predicted(out, k)
    confusion = np.zeros((max(k, 2),) * 2, np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    # counts below 2**53 are exact in float64
    sums = team.sum(np.concatenate([[losses.sum()], confusion.reshape(-1)]).astype(np.float64))
    confusion = sums[1:].astype(np.int64).reshape(confusion.shape)
    count = int(confusion.sum())
    errors = count - int(np.trace(confusion))
    return Evaluation(float(sums[0] / count), 1 - errors / count, errors, count, confusion)


def _logits(model: Model) -> np.ndarray | None:
    """The arena view of the final softmax's input, (batch, K); None when the softmax is the
    only layer and its input is the network's input."""
    if len(model.net.layers) < 2:
        return None
    return model.activation(model.net.layers[-2].label).reshape(model.batch, -1)


@dataclass
class Trained:
    """A network filled from a training checkpoint, with the input normalisation it was trained
    with: what `netc eval` and `netc predict` use (docs/training.md)."""

    model: Model  # compiled for inference batches of up to `batch`
    normalizer: Normalizer
    checkpoint: checkpoint.Checkpoint

    @property
    def classes(self) -> list[str] | None:
        """Class names of the training data, one per class; None if it had none."""
        return self.checkpoint.meta["classes"]

    def prepare(self, x: np.ndarray, name: str = "the inputs") -> np.ndarray:
        """Raw inputs (N, ...) as the data set gives them → padded, reshaped and normalised."""
        x = np.asarray(x, np.float32)
        return self.normalizer.apply(fit_input(x, self.model.net.input, name))

    def conform(self, image: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """A person's (C, H, W) image in [0, 1] fitted to the training samples (channels, size,
        background polarity; docs/training.md), and each change in words. Without the training
        samples' description (a checkpoint from before the `samples` meta field, or trained on
        features, not images): fitted to the network's input instead, an image that fits it
        left to be padded, never inverted."""
        samples = self.checkpoint.meta.get("samples")
        if samples is not None:
            c, h, w = samples["shape"]
            return picture.conform(image, c, (h, w), background=samples["border_mean"])
        shape = self.model.net.input
        if len(shape) != 3:  # features: nothing to fit an image to
            return image, []
        return picture.conform(image, shape[0], shape[1:], resize_smaller=False)

    def predict(self, x: np.ndarray, name: str = "the inputs") -> np.ndarray:
        """Outputs (N, K) of raw inputs: class probabilities when the network ends in softmax."""
        return predict(self.model, self.prepare(x, name))

    def feature_maps(self, x: np.ndarray, labels: Sequence[str], name: str = "the image"
                     ) -> tuple[np.ndarray, list[tuple[str, np.ndarray]]]:
        """(outputs (K,), [("input", the prepared sample), (label, that layer's output), ...])
        for one raw sample x (1, ...): a forward leaves every layer's output in the arena."""
        x = np.ascontiguousarray(self.prepare(x, name)[:1])
        outputs = self.model.forward(x)[0].reshape(-1)
        maps = [("input", x[0])]
        maps += [(label, self.model.activation(label)[0].copy()) for label in labels]
        return outputs, maps

    def evaluate(self, split: Split, name: str = "the data") -> Evaluation:
        """Loss, accuracy and confusion matrix on a raw split (labels checked)."""
        check_labels(split.y, outputs(self.model), name)
        return evaluate(self.model, Split(self.prepare(split.x, name), split.y))


def load_trained(spec: Network | str | os.PathLike,
                 ckpt: str | os.PathLike | checkpoint.Checkpoint, *, batch: int = EVAL_BATCH,
                 flags=None) -> Trained:
    """The one way to a usable model from a `netc train` checkpoint: `spec` is a Network, a .net
    path or spec text (lowered with the checkpoint's parameter values), and must be the network
    the checkpoint was trained on. Compiled for inference batches of up to `batch`."""
    ckpt = ckpt if isinstance(ckpt, checkpoint.Checkpoint) else checkpoint.read(ckpt)
    if not isinstance(spec, Network):
        declared = {name.lower() for name in declared_params(spec)}
        spec = load(spec, **{k: v for k, v in ckpt.meta["params"].items()
                             if k.lower() in declared})
    checkpoint.check_network(ckpt, spec)
    model = spec.compile(batch=batch, flags=flags)
    checkpoint.restore(model, ckpt, training=False)
    return Trained(model, ckpt.normalizer, ckpt)


# ---- training

def _whitens(mode: str) -> bool:
    """Whether a normalisation mode mixes pixels (pca, zca): augmentation must then move raw
    pixels and normalise each batch. The other modes act on each pixel alone, per channel, so
    moving normalised pixels, with a border of what black (0) normalises to, gives the same
    batch and costs nothing more per step."""
    return mode in ("pca", "zca")


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


@dataclass
class _Snapshot:
    """A finished epoch, copied so it can be written later: saves are throttled, but Ctrl-C or
    a divergence in the next epoch must still be able to keep it."""

    epoch: int
    tensors: dict[str, np.ndarray]
    meta: dict


@contextlib.contextmanager
def _locked(out: Path):
    """Hold an exclusive lock on the run folder itself (flock on the directory: no lock file to
    leave behind or race on), so a second run writing to it is refused at once."""
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DataError(f"{out} is in use: another `netc train` is writing to it",
                            hint="wait for that run to end, or give this one another --out"
                            ) from None
        yield
    finally:
        os.close(fd)  # releases the lock


def fit(network: Network, dataset: Dataset, config: Config = Config(), *,
        out: str | os.PathLike | None = None, resume: str | os.PathLike | None = None,
        flags=None, echo=print, progress: bool | None = None,
        save_every: float = SAVE_EVERY, on_log=None, team=SOLO) -> Result:
    """Train, checkpointing after every epoch into `out` (default: the resumed checkpoint's
    folder, else runs/<network>) when save_every seconds have passed since the last save, and
    after the last epoch; then evaluate on the test split. on_log(path of log.jsonl) is called
    after each epoch's line and the test's is added to the log (the CLI draws curves). Raises
    Diverged on a NaN/Inf loss, DataError for data or a checkpoint that does not fit or a folder
    another run holds, Interrupted on Ctrl-C (after saving the last finished epoch if it was not
    on disk yet). team: this process's rank of a data-parallel job (netc.distributed.join());
    config.batch is then the global batch, and only rank 0 prints and writes."""
    ckpt = checkpoint.read(resume) if resume else None
    fingerprint = data_sha256(dataset.train)
    if ckpt:
        checkpoint.check_network(ckpt, network, "the network being trained")
        if ckpt.meta["data_sha256"] != fingerprint:
            raise DataError(f"{ckpt.path} was trained on other data ({ckpt.config.data}) than "
                            f"{dataset.name}: --resume continues a run on its own data",
                            hint="the normalisation, the validation split and early stopping "
                                 "were all fitted to that data; to train on this data, start "
                                 "a new run (without --resume)")
    augment = Augment.parse(config.augment)
    augment.check(network.net.input)
    # The default folder is named like the library: a spec's name is no path ("../x", "/etc").
    out = Path(out or (ckpt.path.parent if ckpt else Path("runs") / identifier(network.net.name)))
    mode = ckpt.normalizer.mode if ckpt else config.normalize
    train, val, test, norm = prepare(network, dataset, config, ckpt and ckpt.normalizer,
                                     normalize_train=not (augment and _whitens(mode)))
    if not team.root:
        echo, progress, on_log = (lambda line: None), False, None
    with _locked(out) if team.root else contextlib.nullcontext():
        run = _Run(network, dataset, config, out, ckpt, norm, fingerprint, echo, save_every,
                   on_log or (lambda log: None), team)
        try:
            return run.go(train, val, test, flags,
                          sys.stderr.isatty() if progress is None else progress)
        except Diverged:
            team.settle()
            raise
        except Stopped:
            message = run.interrupted()
            team.settle()
            raise Interrupted(message) from None
        except KeyboardInterrupt:
            raise Interrupted(run.interrupted()) from None


class _Run:
    """One fit() call's training loop and what it has on disk."""

    def __init__(self, network: Network, dataset: Dataset, config: Config, out: Path,
                 ckpt: checkpoint.Checkpoint | None, norm: Normalizer, fingerprint: str, echo,
                 save_every: float, on_log, team):
        self.network, self.dataset, self.config, self.norm = network, dataset, config, norm
        self.ckpt, self.fingerprint, self.echo, self.save_every = ckpt, fingerprint, echo, \
            save_every
        self.on_log = on_log  # called with the log's path after each line is added
        self.team = team  # only its rank 0 writes files
        self.paths = {k: out / f"{k}.npz" for k in ("checkpoint", "best")}
        self.log = out / "log.jsonl"
        self.model: Model | None = None
        self.state = _State(**ckpt.meta["state"]) if ckpt else _State()
        # (path, epoch) of the newest checkpoint on disk, and the newest finished epoch
        self.kept = (ckpt.path, self.state.epoch) if ckpt else None
        self.latest: _Snapshot | None = None

    def go(self, train: Split, val: Split | None, test: Split | None, flags,
           progress: bool) -> Result:
        config, state, echo, paths, team = (self.config, self.state, self.echo, self.paths,
                                            self.team)
        n = len(train)
        batch = config.batch or n  # the global batch: each rank takes its shard of it
        least = team.size * self.network.min_train_batch  # samples a step must have
        if team.size > 1 and min(batch, n) < least:
            what = f"a batch of {batch}" if batch <= n else f"the {_plural(n, 'training sample')}"
            raise DataError(f"{what} cannot be shared by {team.size} ranks: each needs at "
                            f"least {_plural(self.network.min_train_batch, 'sample')}",
                            hint=f"--batch {least} or more, or fewer ranks")
        model = self.model = self.network.compile(
            batch=-(-batch // team.size), optimizer=config.optimizer, flags=flags,
            threads=config.threads, deterministic=config.deterministic)
        self.shuffle = np.random.default_rng(config.seed)  # the same on every rank
        if self.ckpt:
            checkpoint.restore(model, self.ckpt)
            self.shuffle.bit_generator.state = self.ckpt.meta["shuffle_rng"]
        else:
            model.init(config.seed)
        team.share_state(model)
        if team.root:
            if not self.ckpt:
                paths["best"].unlink(missing_ok=True)  # an earlier run's
            write_atomic(self.log, "".join(json.dumps(r) + "\n" for r in state.history).encode(),
                         "the training log")
        ranks = team.describe(config.threads)
        echo(_header(self.network, model, self.dataset, config, train, val, test, batch, ranks))
        if self.ckpt:
            echo(f"resuming from {self.ckpt.path} after epoch {state.epoch}")
        with team.deferred_interrupts():
            self._epochs(train, val, batch, progress)
        if config.early_stop and state.stale >= config.early_stop:
            echo(f"early stop: no better validation loss for {_plural(state.stale, 'epoch')}; "
                 f"using epoch {state.best_epoch}")
        best = team.agree(bool(config.early_stop) and paths["best"].exists())  # on rank 0's disk
        used = paths["best"] if best else self.kept[0]
        if used != self.kept[0]:
            if team.root:
                checkpoint.restore(model, checkpoint.read(used), training=False)
            team.share_state(model)
        result = evaluate(model, test, team) if test is not None else None
        if result is not None:
            echo(f"test accuracy {100 * result.accuracy:.2f}% ({result.errors:,} errors in "
                 f"{result.count:,}), loss {result.loss:.4f}")
            self._log({"test_loss": result.loss, "test_acc": result.accuracy,
                       "test_errors": result.errors, "test_count": result.count,
                       "checkpoint": str(used)})
        echo(f"checkpoint: {used}  (log: {self.log})")
        return Result(model, state.history, result, used, self.norm)

    def _epochs(self, train: Split, val: Split | None, batch: int, progress: bool) -> None:
        config, state, paths, team, model = (self.config, self.state, self.paths, self.team,
                                             self.model)
        k, n, augment = outputs(self.network), len(train), Augment.parse(config.augment)
        if augment:  # the training split is raw when whitened (fit), else normalised
            whitened = _whitens(self.norm.mode)
            black = None if whitened else \
                self.norm.apply(np.zeros((1, *train.x.shape[1:]), np.float32))[0, :, 0, 0]
            padded = augment.pad(train.x, fill=black)
        out_view = model.activation(model.net.layers[-1].label).reshape(model.batch, -1)
        hyper = dict(momentum=config.momentum, weight_decay=config.weight_decay)
        saved = time.perf_counter()
        while state.epoch < config.epochs and not (config.early_stop and
                                                   state.stale >= config.early_stop):
            lr, start = lr_at(config, state.epoch), time.perf_counter()
            batches = np.array_split(self.shuffle.permutation(n), range(batch, n, batch))
            if len(batches) > 1 and len(batches[-1]) < team.size * model.min_train_batch:
                # too few samples to give every rank its share (a lone last sample would give
                # BatchNorm a batch variance of 0): skip it, on every rank, as PyTorch's
                # drop_last would; the next epoch's shuffle leaves out others
                batches.pop()
            bar = _Progress(sys.stderr, progress, f"epoch {state.epoch + 1}/{config.epochs}",
                            sum(map(len, batches)))
            total, correct, seen = 0.0, 0, 0
            # Generators per epoch, derived from the seed: a resumed run draws what an
            # uninterrupted one would, with nothing more in the checkpoint. Rank 0 draws what
            # one process would, every other rank its own.
            rank = (team.rank,) if team.rank else ()
            moves = np.random.default_rng((config.seed, 2, state.epoch, *rank)) if augment \
                else None
            if rank:
                model.seed(int(np.random.SeedSequence((config.seed, 3, state.epoch, *rank))
                               .generate_state(1, np.uint64)[0]))  # the dropout generator
            for i, idx in enumerate(batches):
                mine = team.shard(idx)
                labels = train.y[mine]
                x = augment.take(padded, mine, moves) if augment else train.x[mine]
                if augment and whitened:
                    x = self.norm.apply(x)
                loss = team.train_step(model, x, _target(labels, k, model.dtype), len(idx), lr,
                                       hyper)
                if not math.isfinite(loss):
                    bar.close()
                    self._diverged(loss, i + 1, lr)
                total, seen = total + loss * len(idx), seen + len(idx)
                correct += int((_predicted(out_view[:len(mine)], k) == labels).sum())
                bar.update(seen, total / seen)
            bar.close()
            correct = int(team.sum(np.array([correct], np.float64))[0])
            seconds = time.perf_counter() - start
            record = {"epoch": state.epoch + 1, "lr": lr, "train_loss": total / seen,
                      "train_acc": correct / seen, "seconds": round(seconds, 3),
                      "images_per_s": round(seen / seconds, 1)}
            team.average_buffers(model)  # before evaluating and checkpointing
            if val is not None:
                ev = evaluate(model, val, team)
                if not math.isfinite(ev.loss):
                    self._diverged(ev.loss, "validation", lr)
                record |= {"val_loss": ev.loss, "val_acc": ev.accuracy}
            state.epoch += 1
            state.history.append(record)
            improved = val is not None and (state.best_loss is None or ev.loss < state.best_loss)
            if improved:
                state.best_loss, state.best_epoch, state.stale = ev.loss, state.epoch, 0
            elif val is not None:
                state.stale += 1
            self.latest = self._snapshot()
            self.echo(_epoch_line(record, config.epochs))
            self._log(record)
            if config.early_stop and improved:
                self._write(paths["best"], self.latest)
            stopping = state.epoch == config.epochs or 0 < config.early_stop <= state.stale
            if stopping or time.perf_counter() - saved >= self.save_every:
                self._save_latest()
                saved = time.perf_counter()

    def _log(self, record: dict) -> None:
        if self.team.root:
            append_text(self.log, json.dumps(record) + "\n", "the training log")
            self.on_log(self.log)

    def _snapshot(self) -> _Snapshot:
        s = self.state
        return _Snapshot(s.epoch, checkpoint.tensors(self.model), {
            "config": asdict(self.config), "classes": self._classes(),
            "data_sha256": self.fingerprint, "shuffle_rng": self.shuffle.bit_generator.state,
            "samples": picture.describe(self.dataset.train.x),  # what predict fits images to
            "state": {"epoch": s.epoch, "best_loss": s.best_loss, "best_epoch": s.best_epoch,
                      "stale": s.stale}})

    def _classes(self) -> list[str] | None:
        """The data set's name of each class the network predicts (labels were checked)."""
        n = max(outputs(self.network), 2)
        names = self.dataset.classes
        return list(names[:n]) if len(names) >= n else None

    def _write(self, path: Path, snap: _Snapshot) -> None:
        # the history is only appended to: an earlier epoch's is its prefix
        meta = snap.meta | {"state": snap.meta["state"] | {
            "history": self.state.history[:snap.epoch]}}
        if self.team.root:
            checkpoint.save(path, self.model, self.norm, meta, snap.tensors)

    def _save_latest(self) -> bool:
        """Write the last finished epoch unless it is on disk already; whether it wrote."""
        if self.latest is None or (self.kept and self.kept[1] >= self.latest.epoch):
            return False
        self._write(self.paths["checkpoint"], self.latest)
        self.kept = (self.paths["checkpoint"], self.latest.epoch)
        return True

    def _diverged(self, loss: float, step, lr: float) -> None:
        self._save_latest()  # the last good epoch, if the throttle had held it back
        epoch, kept, base = self.state.epoch + 1, self.kept, self.config.lr
        where = f"the last good checkpoint, after epoch {kept[1]}, is {kept[0]}" if kept else ""
        raise Diverged(f"the loss became {loss} in epoch {epoch} (step {step}, lr {lr:g}): "
                       f"training diverged; {where or 'no checkpoint was written'}",
                       hint=f"lower the learning rate, e.g. --lr {base / 10:g}"
                            + (f", and continue with --resume {kept[0]}" if kept else ""))

    def interrupted(self) -> str:
        """After Ctrl-C: save the last finished epoch if it is not on disk, and say what is."""
        saved = self.model is not None and self._save_latest()
        if self.kept is None:
            return ("no checkpoint was written: no epoch had finished"
                    if self.model else "no checkpoint was written: training had not started")
        path, epoch = self.kept
        total = self.config.epochs
        return (f"{path} holds epoch {epoch} of {total}"
                + (" (saved now)" if saved else "")
                + (f"; continue with --resume {path}" if epoch < total else ""))


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' * (n != 1)}"


def _header(network: Network, model: Model, ds: Dataset, config: Config, train: Split,
            val: Split | None, test: Split | None, batch: int, ranks: str) -> str:
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
            f"{batch}, {_plural(config.epochs, 'epoch')}, "
            f"normalize {config.normalize}, seed {config.seed}"
            + (f", {ranks}" if ranks else f", {config.threads} threads" if config.threads > 1
               else "")
            + (", deterministic" if config.deterministic else "")
            + (f", augment {config.augment}" if Augment.parse(config.augment) else ""))


def _epoch_line(r: dict, epochs: int) -> str:
    val = (f"  val loss {r['val_loss']:.4f} acc {100 * r['val_acc']:6.2f}%"
           if "val_loss" in r else "")
    return (f"epoch {r['epoch']:>{len(str(epochs))}}/{epochs}  train loss {r['train_loss']:.4f} "
            f"acc {100 * r['train_acc']:6.2f}%{val}  {r['images_per_s']:,.0f} img/s  "
            f"{r['seconds']:.1f} s")
