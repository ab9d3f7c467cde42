"""Evidence for issue 4 §5: LeNet-5 (examples/lenet5.net) on full MNIST or Fashion-MNIST.

    python bench/lenet5.py mnist|fashion-mnist [DATA_DIR] [--epochs N]

DATA_DIR defaults to ../shared/datasets/<data set>. MNIST's target is ≤ 1.0% test error. The
recipe is netc train's defaults with no validation split. Epoch lines go to stderr; stdout gets
the markdown row for docs/results.md (and, for Fashion-MNIST, the per-class errors). Not a test.
"""
import argparse
import sys
import time
from pathlib import Path
from typing import NamedTuple

import netc
from netc import data
from netc.train import Config, fit

ROOT = Path(__file__).resolve().parent.parent


class Bench(NamedTuple):
    title: str
    out: str
    error_column: bool  # MNIST is judged by its error against the target, Fashion-MNIST by accuracy
    per_class: bool  # Fashion-MNIST's classes differ in difficulty: show where the errors are


BENCHES = {
    "mnist": Bench("MNIST", "runs/bench-mnist-lenet5", error_column=True, per_class=False),
    "fashion-mnist": Bench("Fashion-MNIST", "runs/bench-fashion-lenet5", error_column=False,
                           per_class=True),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dataset", choices=BENCHES)
    p.add_argument("data", nargs="?", help="the IDX folder (default: ../shared/datasets/DATASET)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--train", type=int, default=None, help="use only the first N training images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="default: runs/bench-mnist-lenet5 or runs/bench-fashion-lenet5")
    args = p.parse_args()
    bench = BENCHES[args.dataset]
    folder = args.data or ROOT.parent / "shared" / "datasets" / args.dataset
    start = time.perf_counter()
    classes = data.mnist.REMOTE[args.dataset].classes
    ds = data.load_idx_dir(folder, args.dataset, classes)
    if args.train:
        ds = data.Dataset(ds.name, ds.train.subset(range(args.train)), ds.test, ds.classes)
    config = Config(data=str(folder), epochs=args.epochs, seed=args.seed, val_split=0)
    r = fit(netc.load(ROOT / "examples" / "lenet5.net"), ds, config, out=args.out or bench.out,
            echo=lambda line: print(line, file=sys.stderr))
    wall = time.perf_counter() - start  # loading, compiling, training, testing
    rate = sum(h["images_per_s"] for h in r.history) / len(r.history)
    column, percent = (("test error", 1 - r.test.accuracy) if bench.error_column
                       else ("test accuracy", r.test.accuracy))
    print(f"| network | data | epochs | {column} | errors | wall time | train img/s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print(f"| LeNet-5 (examples/lenet5.net) | {bench.title} {len(ds.train):,} / "
          f"{r.test.count:,} | {len(r.history)} | {100 * percent:.2f}% | "
          f"{r.test.errors:,} | {wall / 60:.1f} min | {rate:,.0f} |")
    if bench.per_class:
        per_class = r.test.confusion.sum(axis=1) - r.test.confusion.diagonal()
        print("\nerrors per class: " + ", ".join(f"{c} {e}" for c, e in zip(classes, per_class)))


if __name__ == "__main__":
    main()
