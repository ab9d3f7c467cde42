"""Evidence for issue 4 §5: LeNet-5 (examples/lenet5.net) on Fashion-MNIST.

    python bench/fashion_lenet5.py [DATA_DIR] [--epochs N]

DATA_DIR defaults to ../shared/datasets/fashion-mnist.

The same recipe as the MNIST benchmark (netc train's defaults, no validation split). Epoch lines
go to stderr; stdout gets the markdown row for docs/results.md and the per-class errors. Not a test.
"""
import argparse
import sys
import time
from pathlib import Path

import netc
from netc import data
from netc.train import Config, fit

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", nargs="?",
                   default=ROOT.parent / "shared" / "datasets" / "fashion-mnist")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--train", type=int, default=None, help="use only the first N training images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/bench-fashion-lenet5")
    args = p.parse_args()
    start = time.perf_counter()
    classes = data.mnist.REMOTE["fashion-mnist"].classes
    ds = data.load_idx_dir(args.data, "fashion-mnist", classes)
    if args.train:
        ds = data.Dataset(ds.name, ds.train.subset(range(args.train)), ds.test, ds.classes)
    config = Config(data=str(args.data), epochs=args.epochs, seed=args.seed, val_split=0)
    r = fit(netc.load(ROOT / "examples" / "lenet5.net"), ds, config, out=args.out,
            echo=lambda line: print(line, file=sys.stderr))
    wall = time.perf_counter() - start
    rate = sum(h["images_per_s"] for h in r.history) / len(r.history)
    print("| network | data | epochs | test accuracy | errors | wall time | train img/s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print(f"| LeNet-5 (examples/lenet5.net) | Fashion-MNIST {len(ds.train):,} / "
          f"{r.test.count:,} | {len(r.history)} | {100 * r.test.accuracy:.2f}% | "
          f"{r.test.errors:,} | {wall / 60:.1f} min | {rate:,.0f} |")
    per_class = r.test.confusion.sum(axis=1) - r.test.confusion.diagonal()
    print("\nerrors per class: " + ", ".join(f"{c} {e}" for c, e in zip(classes, per_class)))


if __name__ == "__main__":
    main()
