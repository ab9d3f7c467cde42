"""Pictures of a run: training curves from its log.jsonl, and the inside of a trained network.

    read_log("runs/lenet5")       ->  RunLog: epochs 1..n, train/val loss and accuracy, the test
    draw([run_a, run_b])          ->  a matplotlib Figure: loss and accuracy panels, runs overlaid
    draw_confusion(matrix, names) ->  a Figure: the confusion matrix, counts in the cells
    draw_filters(weight, "c1", first=True)  ->  a Figure: a conv layer's kernels as a grid
    draw_maps([("input", x), ("c1", maps)], title)  ->  a Figure: feature maps, a grid per layer
    write_picture(figure, "c.png") ->  the PNG (or SVG, for a .svg name), written atomically

The log reader is pure and needs only the standard library; the pictures of a network take
numpy arrays (the CLI reads them from a checkpoint and the arena). matplotlib is an optional extra
(`pip install 'netc[plot]'`), imported inside the drawing functions: the rest of netc never
needs it. Drawing uses matplotlib.figure.Figure on an Agg canvas directly, never pyplot, so no
display is needed and the user's pyplot state, backend and rcParams are left as they were.
"""
from __future__ import annotations

import io
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import DataError, NetcError
from .files import read_regular, write_atomic

LOG_LIMIT = 64 << 20  # bytes of log.jsonl: ~300,000 epochs of about 220 bytes
SIZE = (10.0, 4.0)  # inches
DPI = 100  # so a curves PNG is 1000x400 pixels
MISSING = "netc plot needs matplotlib: pip install 'netc[plot]'"

# The numbers of an epoch's line and of the test's line, and the ones a line must hold.
_EPOCH_NUMBERS = ("lr", "train_loss", "train_acc", "seconds", "images_per_s", "val_loss",
                  "val_acc")
_EPOCH_NEEDS = ("train_loss", "train_acc")
_TEST_NUMBERS = ("test_loss", "test_acc")
_TEST_COUNTS = ("test_errors", "test_count")


@dataclass
class RunLog:
    """One run's log: a value per epoch (NaN for a validation value the epoch lacks) and the
    test result, if the run reached it."""

    name: str  # the run folder's name: the legend's label
    epochs: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)
    test_loss: float | None = None
    test_acc: float | None = None


def log_path(run: str | os.PathLike) -> Path:
    """A run folder's log.jsonl, or `run` itself when it names a file."""
    path = Path(run)
    return path / "log.jsonl" if path.is_dir() else path


def read_log(run: str | os.PathLike) -> RunLog:
    """The log of the run folder (or the log.jsonl) `run`. Every line is checked: epochs
    numbered 1, 2, 3... (a resumed run's log was rewritten as one series), finite numbers,
    accuracies in [0, 1], at most one test line, and last; a bad log raises a one-line DataError
    naming the line."""
    path = log_path(run)
    text = read_regular(path, "the training log", LOG_LIMIT)
    log = RunLog(path.resolve().parent.name or str(path.parent))
    for number, line in enumerate(text.split(b"\n"), 1):
        if not line.strip():
            continue
        where = f"{path}, line {number}"
        if log.test_loss is not None:
            raise DataError(f"{where}: a line after the test result; the test line is the last")
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):  # bad UTF-8 or JSON; absurdly deep nesting
            raise DataError(f"{where}: not a JSON line") from None
        if not isinstance(record, dict):
            raise DataError(f"{where}: not a JSON object")
        if "epoch" in record:
            _add_epoch(log, record, where)
        elif "test_loss" in record:
            log.test_loss, log.test_acc = (_number(record, k, where) for k in _TEST_NUMBERS)
            for key in _TEST_COUNTS:
                if not (type(record.get(key)) is int and record[key] >= 0):
                    raise DataError(f"{where}: {key} must be a whole number ≥ 0")
        else:
            raise DataError(f"{where}: neither an epoch nor a test result")
    if not log.epochs:
        raise DataError(f"{path} holds no finished epoch: nothing to plot")
    return log


def _add_epoch(log: RunLog, record: dict, where: str) -> None:
    epoch = record["epoch"]
    if type(epoch) is not int or epoch != len(log.epochs) + 1:
        raise DataError(f"{where}: epoch {_shown(epoch)} where epoch {len(log.epochs) + 1} "
                        f"was expected")
    missing = [k for k in _EPOCH_NEEDS if k not in record]
    if ("val_loss" in record) != ("val_acc" in record):
        missing.append("val_acc" if "val_loss" in record else "val_loss")
    if missing:
        raise DataError(f"{where}: the epoch has no {', '.join(missing)}")
    values = {k: _number(record, k, where) for k in _EPOCH_NUMBERS if k in record}
    log.epochs.append(epoch)
    for series in ("train_loss", "train_acc", "val_loss", "val_acc"):
        getattr(log, series).append(values.get(series, math.nan))


def _number(record: dict, key: str, where: str) -> float:
    value = record.get(key)
    if type(value) not in (int, float) or not math.isfinite(value) or value < 0:
        raise DataError(f"{where}: {key} must be a finite number ≥ 0, not {_shown(value)}")
    if key.endswith("_acc") and value > 1:
        raise DataError(f"{where}: {key} is a fraction in [0, 1], not {value}")
    return float(value)


def _shown(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def matplotlib_parts():
    """matplotlib's Figure and Agg canvas classes; NetcError saying what to install without it."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        raise NetcError(MISSING) from None
    return Figure, FigureCanvasAgg, MaxNLocator


def draw(runs: list[RunLog]):
    """A Figure of loss (left) and accuracy in % (right) per epoch: training solid, validation
    dashed, the test result a star at the last epoch, labelled; each run in its own colour, with
    a legend of the runs' names when there are several."""
    Figure, FigureCanvasAgg, MaxNLocator = matplotlib_parts()
    figure = Figure(figsize=SIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)  # Agg explicitly, whatever backend the user has chosen
    loss, acc = figure.subplots(1, 2)
    for i, run in enumerate(runs):
        colour, label = f"C{i % 10}", run.name
        for axes, train, val, test, scale, shown in (
                (loss, run.train_loss, run.val_loss, run.test_loss, 1, "{:.4f}"),
                (acc, run.train_acc, run.val_acc, run.test_acc, 100, "{:.2f}%")):
            axes.plot(run.epochs, [scale * v for v in train], color=colour, label=label,
                      gid="train")
            if not all(map(math.isnan, val)):
                axes.plot(run.epochs, [scale * v for v in val], color=colour, linestyle="--",
                          gid="val")
            if test is not None:
                axes.plot([run.epochs[-1]], [scale * test], color=colour, marker="*",
                          markersize=12, linestyle="none", gid="test")
                # Each run's label a line lower: close test results stay readable.
                axes.annotate(f"test {shown.format(scale * test)}", (run.epochs[-1], scale * test),
                              xytext=(6, 4 - 11 * i), textcoords="offset points", color=colour,
                              fontsize="small")
    for axes, what in ((loss, "loss"), (acc, "accuracy (%)")):
        axes.set_xlabel("epoch")
        axes.set_ylabel(what)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
    acc.legend(handles=_style_key(runs), fontsize="small", loc="lower right")
    if len(runs) > 1:
        loss.legend(fontsize="small", loc="upper right")
    else:
        figure.suptitle(runs[0].name)
    return figure


def _style_key(runs: list[RunLog]) -> list:
    """Legend entries for the line styles, in gray: what solid, dashed and the star mean."""
    from matplotlib.lines import Line2D
    key = [Line2D([], [], color="gray", label="training")]
    if any(not all(map(math.isnan, r.val_loss)) for r in runs):
        key.append(Line2D([], [], color="gray", linestyle="--", label="validation"))
    if any(r.test_loss is not None for r in runs):
        key.append(Line2D([], [], color="gray", marker="*", linestyle="none", label="test"))
    return key


def write_picture(figure, path: str | os.PathLike, what: str = "the curves") -> None:
    """The figure at `path`, replaced atomically (a viewer never sees half a file): SVG when the
    name ends in .svg, else PNG. The SVG keeps its text as text (searchable, and smaller: LeNet-5's
    curves 33 KB, not 48) and has no date or random ids, so the same figure gives the same bytes."""
    from matplotlib import rc_context
    buffer = io.BytesIO()
    if Path(path).suffix.lower() == ".svg":
        with rc_context({"svg.fonttype": "none", "svg.hashsalt": "netc"}):
            figure.savefig(buffer, format="svg", metadata={"Date": None})
    else:
        figure.savefig(buffer, format="png")
    write_atomic(path, buffer.getvalue(), what)


def plot(runs: list[str | os.PathLike], out: str | os.PathLike) -> None:
    """`netc plot`: the runs' curves in one picture (write_picture). Runs whose folders share a
    name are labelled by their paths instead, so the legend tells them apart."""
    matplotlib_parts()  # what to install, before reading any log
    logs = [read_log(run) for run in runs]
    names = [log.name for log in logs]
    for log, run in zip(logs, runs):
        if names.count(log.name) > 1:
            log.name = str(log_path(run).parent)
    write_picture(draw(logs), out)


class LiveCurves:
    """DIR/curves.png kept up to date while `netc train` runs: update() after each line of the
    log, finish() at the end. A drawing (0.4 s on a busy 2-core machine) follows an epoch only
    when drawings take at most `share` of the time since the last one, so that short epochs (XOR's
    microseconds) are not slowed by it; finish() draws what was held back. Before a drawing has
    been timed one is taken to cost 0.5 s: a run shorter than about 5 s draws only at the end.
    Raises NetcError without matplotlib."""

    def __init__(self, share: float = 0.1):
        matplotlib_parts()
        self.share = share
        self.log: Path | None = None
        self.pending = False  # the log has lines the PNG does not show
        self.drawn_at = time.perf_counter()
        self.cost = 0.5  # seconds the last drawing took

    @property
    def path(self) -> Path | None:
        return self.log and self.log.parent / "curves.png"

    def update(self, log: Path) -> None:
        self.log, self.pending = log, True
        if (time.perf_counter() - self.drawn_at) * self.share >= self.cost * (1 - self.share):
            self._draw()

    def finish(self) -> bool:
        """Draw what the PNG does not show yet; whether there is a curves PNG of this run."""
        if self.pending:
            self._draw()
        return self.log is not None

    def _draw(self) -> None:
        start = time.perf_counter()
        write_picture(draw([read_log(self.log)]), self.path)
        self.drawn_at = time.perf_counter()
        self.cost, self.pending = self.drawn_at - start, False


# ---- inside a trained network: `netc eval --plot`, `netc show --filters / --maps`

MAP_COLUMNS = 16  # feature maps per row of a layer's grid: LeNet-5's 6 and 16 fit on one


def draw_confusion(confusion, names: list[str], title: str):
    """A Figure of the confusion matrix (rows: true class, columns: predicted) as a heat map,
    each cell's count written in it, the class names on both axes. Square, 0.45 inch a class
    (6 to 40 inches): 600×600 pixels up to 10 classes."""
    import numpy as np
    Figure, FigureCanvasAgg, _ = matplotlib_parts()
    k = len(confusion)
    side = min(max(6.0, 0.45 * k + 1.5), 40.0)
    figure = Figure(figsize=(side, side), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    image = axes.imshow(confusion, cmap="Blues", vmin=0, interpolation="nearest")
    figure.colorbar(image, ax=axes, shrink=0.8, label="count")
    middle = (confusion.max() or 1) / 2
    for (true, predicted), count in np.ndenumerate(confusion):
        axes.text(predicted, true, f"{count:,}", ha="center", va="center", fontsize="small",
                  color="white" if count > middle else "black")
    axes.set_xticks(range(k), names, rotation=90 if max(map(len, names)) > 2 else 0)
    axes.set_yticks(range(k), names)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title(title)
    return figure


def filter_tiles(weight, first: bool) -> tuple[list[str], list]:
    """A conv weight (CO, CI, KH, KW) as the kernels a filter grid shows, with their names: each
    input channel's kernel ("co.ci", output channel major) when the layer is the network's first,
    whose inputs are the image's channels; the mean over the inputs per output channel ("co")
    otherwise, where a single input channel's kernel says little."""
    co, ci = weight.shape[:2]
    if first:
        return [f"{o}.{i}" for o in range(co) for i in range(ci)], \
            [weight[o, i] for o in range(co) for i in range(ci)]
    return [str(o) for o in range(co)], list(weight.mean(axis=1))


def grid_columns(count: int, group: int = 1) -> int:
    """Columns of a near-square grid of `count` tiles, a multiple of `group` so that a row holds
    whole groups (an output channel's kernels for each input channel)."""
    columns = math.ceil(math.sqrt(count))
    return min(count, -(-columns // group) * group)


def _tile(axes, arrays, names, columns: int, norm, cmap) -> None:
    """The 2-D arrays on `axes` in rows of `columns`, row-major, a 1-element gap between tiles,
    each its own AxesImage (gid: its name) sharing `norm`; a tile's name above it."""
    h, w = arrays[0].shape
    for n, (name, array) in enumerate(zip(names, arrays)):
        left, top = (n % columns) * (w + 1), (n // columns) * (h + 1)
        axes.imshow(array, cmap=cmap, norm=norm, interpolation="nearest", gid=name,
                    extent=(left - 0.5, left + w - 0.5, top + h - 0.5, top - 0.5))
        if len(arrays) > 1:
            axes.text(left + (w - 1) / 2, top - 0.6, name, ha="center", va="bottom",
                      fontsize="x-small")
    rows = -(-len(arrays) // columns)
    axes.set_xlim(-0.5, columns * (w + 1) - 1.5)
    axes.set_ylim(rows * (h + 1) - 1.5, -1.5 if len(arrays) > 1 else -0.5)  # room for names
    axes.set_aspect("equal")
    axes.set_axis_off()


def draw_filters(weight, label: str, first: bool):
    """A Figure of a conv layer's kernels (filter_tiles) as a grid, one colour scale for all of
    them, symmetric about 0 (red positive, blue negative), with its colour bar. 800×700 pixels."""
    import numpy as np
    Figure, FigureCanvasAgg, _ = matplotlib_parts()
    from matplotlib.colors import Normalize
    names, kernels = filter_tiles(np.asarray(weight, np.float64), first)
    figure = Figure(figsize=(8.0, 7.0), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    limit = max(float(np.abs(kernels).max()), 1e-12)  # all zero: a blank grid, not a crash
    norm = Normalize(-limit, limit)
    _tile(axes, kernels, names, grid_columns(len(kernels), weight.shape[1] if first else 1),
          norm, "RdBu_r")
    figure.colorbar(axes.images[0], ax=axes, shrink=0.8, label="weight")
    co, ci, kh, kw = weight.shape
    what = "each input channel's kernel" if first else "mean over the input channels"
    axes.set_title(f"{label}: {co} filters of {ci}×{kh}×{kw} ({what})")
    return figure


def draw_maps(layers: list[tuple[str, object]], title: str):
    """A Figure of the input and each chosen layer's output for one image, a row of grids from
    top to bottom, each labelled with the layer and its shape: a (C, H, W) output is C tiles of
    H×W, MAP_COLUMNS a row, a flat one a single 1×N strip; one gray scale per layer. 1000
    pixels wide, 1.6 inches tall per row of tiles plus 0.5 a layer."""
    import numpy as np
    Figure, FigureCanvasAgg, _ = matplotlib_parts()
    from matplotlib.colors import Normalize
    grids = []
    for label, out in layers:
        out = np.asarray(out, np.float64)
        tiles = list(out) if out.ndim == 3 and out.shape[1:] != (1, 1) else \
            [out.reshape(1, -1)]
        columns = min(len(tiles), MAP_COLUMNS)
        grids.append((label, out.shape, tiles, columns, -(-len(tiles) // columns)))
    heights = [1.6 * rows + 0.5 for *_, rows in grids]
    figure = Figure(figsize=(10.0, sum(heights)), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    for axes, (label, shape, tiles, columns, _) in zip(
            np.atleast_1d(figure.subplots(len(grids), 1, height_ratios=heights)), grids):
        low, high = min(t.min() for t in tiles), max(t.max() for t in tiles)
        names = [str(c) for c in range(len(tiles))]
        _tile(axes, tiles, names, columns, Normalize(low, high if high > low else low + 1),
              "gray")
        axes.set_title(f"{label}  {'×'.join(map(str, shape))}", fontsize="medium")
        axes.set_gid(label)
    figure.suptitle(title)
    return figure
