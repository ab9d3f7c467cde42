"""Evidence for issues 4 §5 and 15 §4: the book's exercise 15.6 (b)-(j) on MNIST, MatConvNet's
networks.

    python bench/exercise_15_6.py [DATA_DIR] [--part b-f g h i j] [--epochs 20] [--train 10000]
                                  [--only NAME ...] [--figures docs/pictures]

(b)-(f), the default part: BASE on the first 10,000 training images, 20 epochs, seed 0, tested
on all 10,000 test images; then BN, BASE and BN with dropout after block 4's classifier (d), SK
(e) and SK-s (f) for s ∈ {2, 1.5, 1, 0.5, 0.2} (examples/mcn-*.net). Then SK-0.2 alone, as the
book asks: (g) on the first 500 ... 60,000 training images, (h) on the six 10,000-image slices,
(i) with seeds 0 ... 123456, (j) as (i) with every ReLU replaced by a sigmoid; each of (g)-(j)
also draws its figure as FIGURES/exercise-15-6-PART.svg. One recipe for all, close to
MatConvNet's cnn_mnist: SGD, momentum 0.9, batch 100, weight decay 5e-4, mean removal; the
learning rate decays by cosine; 1 thread. Epoch lines go to stderr; stdout gets the markdown
tables for docs/results.md.
"""
import argparse
import dataclasses
import re
import statistics
import sys
import time
from pathlib import Path

import netc
from netc import data, plot
from netc.train import Config, fit

ROOT = Path(__file__).resolve().parent.parent
DROPOUT = ("conv4: conv(10, k=1) - softmax", "conv4: conv(10, k=1) - dropout(0.5) - softmax")


def spec(name: str) -> str:
    return (ROOT / "examples" / f"mcn-{name}.net").read_text()


def sigmoid(text: str) -> str:
    """The spec with every relu layer a sigmoid (j); the comments' "ReLU" is left alone."""
    text, count = re.subn(r"\brelu\b", "sigmoid", text)
    assert count == 3, count  # conv1_1, conv1_2 and conv3: a changed spec must be looked at
    return text


# (row name, spec text, parameters); SK-1 is SK, listed once as "SK (= SK-1)".
NETWORKS = [("BASE", spec("base"), {}), ("BN", spec("bn"), {}),
            ("BASE + dropout", spec("base").replace(*DROPOUT), {}),
            ("BN + dropout", spec("bn").replace(*DROPOUT), {}),
            ("SK (= SK-1)", spec("sk"), {})]
NETWORKS += [(f"SK-{s:g}", spec("sk"), {"s": s}) for s in (2, 1.5, 0.5, 0.2)]
SK02 = (spec("sk"), {"s": 0.2})  # (g)-(j)
SIZES = (500, 1_000, 2_000, 5_000, 10_000, 20_000, 60_000)  # (g)
SEEDS = (0, 1, 12, 123, 1234, 12345, 123456)  # (i), (j)


def slug(name: str) -> str:
    """"BN + dropout" -> "bn-dropout", "SK (= SK-1)" -> "sk", "SK-0.2" -> "sk-0.2"."""
    return re.sub(r"[^a-z0-9.]+", "-", name.lower().split(" (")[0]).strip("-")


@dataclasses.dataclass
class Run:
    errors: int
    error: float  # in %
    parameters: int
    seconds: float


class Bench:
    def __init__(self, args):
        self.full = data.load_idx_dir(args.data, "mnist")
        self.out, self.figures = Path(args.out), Path(args.figures)
        self.config = Config(data=str(args.data), epochs=args.epochs, batch=100, lr=args.lr,
                             momentum=0.9, weight_decay=5e-4, normalize="mean", val_split=0,
                             seed=0, threads=1)
        self.done: dict[str, Run] = {}  # by folder: (j) reuses (i)'s runs


    def run(self, folder: str, text: str, params: dict, images: range, seed: int = 0) -> Run:
        """`text` trained on the training images `images` with `seed`, into OUT/folder."""
        if folder in self.done:
            return self.done[folder]
        start = time.perf_counter()
        ds = data.Dataset("mnist", self.full.train.subset(images), self.full.test,
                          self.full.classes)
        r = fit(netc.load(text, **params), ds, dataclasses.replace(self.config, seed=seed),
                out=self.out / folder, echo=lambda line: print(line, file=sys.stderr))
        self.done[folder] = Run(r.test.errors, 100 * (1 - r.test.accuracy),
                                sum(v.size for v in r.model.params.values()),
                                time.perf_counter() - start)
        return self.done[folder]

    def figure(self, part: str, draw) -> None:
        """draw(axes) on a 6×3.8-inch figure, written as FIGURES/exercise-15-6-PART.svg."""
        Figure, FigureCanvasAgg, _ = plot.matplotlib_parts()
        figure = Figure(figsize=(6.0, 3.8), layout="constrained")
        FigureCanvasAgg(figure)
        axes = figure.subplots()
        draw(axes)
        if axes.get_legend_handles_labels()[1]:  # below the axes, where it hides no point
            figure.legend(loc="outside lower center", ncols=2, fontsize="small")
        axes.set_ylabel("test error (%)")
        axes.grid(alpha=0.3)
        path = self.figures / f"exercise-15-6-{part}.svg"
        path.parent.mkdir(parents=True, exist_ok=True)
        plot.write_picture(figure, path, "the figure")
        print(f"\nfigure: {path}")


def spread(runs: list[Run]) -> str:
    """Mean ± sample standard deviation of the errors in %, and of the error counts."""
    e, n = [r.error for r in runs], [r.errors for r in runs]
    return (f"{statistics.mean(e):.2f}% ± {statistics.stdev(e):.2f} "
            f"({statistics.mean(n):.1f} ± {statistics.stdev(n):.1f} errors)")


def table(head: str, rows: list[tuple[str, Run]]) -> None:
    print(f"| {head} | test error | errors | wall time |\n| --- | --- | --- | --- |")
    for name, r in rows:
        print(f"| {name} | {r.error:.2f}% | {r.errors:,} | {r.seconds:,.0f} s |", flush=True)


def part_b_to_f(bench: Bench, args) -> None:
    print(f"| network (exercise 15.6, first {args.train:,} training images, {args.epochs} "
          f"epoch{'s' * (args.epochs != 1)}, seed 0) | parameters | test error | errors "
          f"| wall time |")
    print("| --- | --- | --- | --- | --- |")
    for name, text, params in NETWORKS:
        if args.only and slug(name) not in map(slug, args.only):
            continue
        r = bench.run(slug(name), text, params, range(args.train))
        print(f"| {name} | {r.parameters:,} | {r.error:.2f}% | {r.errors:,} | "
              f"{r.seconds:,.0f} s |", flush=True)


def marks(axes, xs, runs: list[Run], colour: str, label: str) -> None:
    """Each run's error as a point, the mean as a line and ± one standard deviation as a band."""
    e = [r.error for r in runs]
    mean, sd = statistics.mean(e), statistics.stdev(e)
    xs = list(xs)
    axes.plot(xs, e, marker="o", linestyle="none", color=colour,
              label=f"{label}: mean {mean:.2f}% ± {sd:.2f} (s.d., shaded)")
    axes.axhline(mean, color=colour, linewidth=1)
    axes.axhspan(mean - sd, mean + sd, color=colour, alpha=0.15)
    axes.set_xticks(xs)


def part_g(bench: Bench, args) -> None:
    rows = [(f"{n:,}", bench.run(f"g-{n}", *SK02, range(n))) for n in SIZES]
    table("SK-0.2, first N training images (g)", rows)
    runs = [r for _, r in rows]

    def draw(axes):
        e = [r.error for r in runs]
        axes.plot(SIZES, e, marker="o")
        for n, r in zip(SIZES, runs):
            axes.annotate(f"{r.error:.2f}%", (n, r.error), xytext=(4, 4),
                          textcoords="offset points", fontsize="small")
        axes.set_xscale("log")
        axes.set_yscale("log")  # a power law is a straight line
        axes.set_xticks(SIZES, [f"{n:,}" for n in SIZES], fontsize="small")
        ticks = [t for t in (0.5, 1, 2, 5, 10, 20, 50) if min(e) / 2 < t < max(e) * 2]
        axes.set_yticks(ticks, [f"{t:g}" for t in ticks])
        axes.minorticks_off()
        axes.set_xlabel("training images (the first N)")
        axes.set_title("(g) SK-0.2: test error against training-set size, log-log",
                       fontsize="medium")
    bench.figure("g", draw)


def part_h(bench: Bench, args) -> None:
    slices = [range(10_000 * (i - 1), 10_000 * i) for i in range(1, 7)]
    rows = [(f"{i}: images {s.start + 1:,} … {s.stop:,}", bench.run(f"h-{i}", *SK02, s))
            for i, s in enumerate(slices, 1)]
    table("SK-0.2, the i-th 10,000 training images (h)", rows)
    runs = [r for _, r in rows]
    print(f"\nmean ± standard deviation over the 6 slices: {spread(runs)}")

    def draw(axes):
        marks(axes, range(1, 7), runs, "C0", "SK-0.2")
        axes.set_xlabel("i: trained on training images 10,000·(i−1)+1 … 10,000·i")
        axes.set_title("(h) SK-0.2 on six disjoint training sets", fontsize="medium")
    bench.figure("h", draw)


def seeds(bench: Bench, text: str, prefix: str) -> list[Run]:
    return [bench.run(f"{prefix}-seed-{s}", text, SK02[1], range(10_000), s) for s in SEEDS]


def part_i(bench: Bench, args) -> None:
    runs = seeds(bench, SK02[0], "sk-0.2")
    table("SK-0.2, seed (i)", list(zip(map(str, SEEDS), runs)))
    print(f"\nmean ± standard deviation over the 7 seeds: {spread(runs)}")

    def draw(axes):
        marks(axes, range(len(SEEDS)), runs, "C0", "SK-0.2")
        axes.set_xticks(range(len(SEEDS)), map(str, SEEDS))
        axes.set_xlabel("seed")
        axes.set_title("(i) SK-0.2, first 10,000 training images, seven seeds",
                       fontsize="medium")
    bench.figure("i", draw)


def part_j(bench: Bench, args) -> None:
    relu = seeds(bench, SK02[0], "sk-0.2")
    sig = seeds(bench, sigmoid(SK02[0]), "sk-0.2-sigmoid")
    print("| SK-0.2, seed (j) | ReLU: test error | errors | sigmoid: test error | errors "
          "| sigmoid wall time |\n| --- | --- | --- | --- | --- | --- |")
    for s, a, b in zip(SEEDS, relu, sig):
        print(f"| {s} | {a.error:.2f}% | {a.errors:,} | {b.error:.2f}% | {b.errors:,} | "
              f"{b.seconds:,.0f} s |")
    print(f"\nmean ± standard deviation over the 7 seeds: ReLU {spread(relu)}, "
          f"sigmoid {spread(sig)}")

    def draw(axes):
        marks(axes, range(len(SEEDS)), relu, "C0", "ReLU")
        marks(axes, range(len(SEEDS)), sig, "C3", "sigmoid")
        axes.set_xticks(range(len(SEEDS)), map(str, SEEDS))
        axes.set_xlabel("seed")
        axes.set_title("(j) SK-0.2 with ReLU and with sigmoid, seven seeds", fontsize="medium")
    bench.figure("j", draw)


PARTS = {"b-f": part_b_to_f, "g": part_g, "h": part_h, "i": part_i, "j": part_j}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", nargs="?", default=ROOT.parent / "shared" / "datasets" / "mnist")
    p.add_argument("--part", nargs="+", choices=PARTS, default=["b-f"])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--train", type=int, default=10_000, help="(b)-(f): the first N training images")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--only", nargs="+", metavar="NAME",
                   help="(b)-(f): rows to run, e.g. BASE bn-dropout SK-0.2")
    p.add_argument("--out", default="runs/bench-exercise-15-6")
    p.add_argument("--figures", default=ROOT / "docs" / "pictures")
    args = p.parse_args()
    bench = Bench(args)
    for part in args.part:
        print(f"\n### ({part})\n")
        PARTS[part](bench, args)


if __name__ == "__main__":
    main()
