"""Evidence for issue 4 §5: the book's exercise 15.6 (b)-(f) on MNIST, MatConvNet's networks.

    python bench/exercise_15_6.py [DATA_DIR] [--epochs 20] [--train 10000] [--only NAME ...]

BASE on the first 10,000 training images, 20 epochs, seed 0, tested on all 10,000 test images;
then BN, BASE and BN with dropout after block 4's classifier (d), SK (e) and SK-s (f) for
s ∈ {2, 1.5, 1, 0.5, 0.2} (examples/mcn-*.net). One recipe for all, close to MatConvNet's
cnn_mnist: SGD, momentum 0.9, batch 100, weight decay 5e-4, mean removal; the learning rate
decays by cosine. Epoch lines go to stderr; stdout gets the markdown table for docs/results.md.
"""
import argparse
import re
import sys
import time
from pathlib import Path

import netc
from netc import data
from netc.train import Config, fit

ROOT = Path(__file__).resolve().parent.parent
DROPOUT = ("conv4: conv(10, k=1) - softmax", "conv4: conv(10, k=1) - dropout(0.5) - softmax")


def spec(name: str) -> str:
    return (ROOT / "examples" / f"mcn-{name}.net").read_text()


# (row name, spec text, parameters); SK-1 is SK, listed once as "SK (= SK-1)".
NETWORKS = [("BASE", spec("base"), {}), ("BN", spec("bn"), {}),
            ("BASE + dropout", spec("base").replace(*DROPOUT), {}),
            ("BN + dropout", spec("bn").replace(*DROPOUT), {}),
            ("SK (= SK-1)", spec("sk"), {})]
NETWORKS += [(f"SK-{s:g}", spec("sk"), {"s": s}) for s in (2, 1.5, 0.5, 0.2)]


def slug(name: str) -> str:
    """"BN + dropout" -> "bn-dropout", "SK (= SK-1)" -> "sk", "SK-0.2" -> "sk-0.2"."""
    return re.sub(r"[^a-z0-9.]+", "-", name.lower().split(" (")[0]).strip("-")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", nargs="?", default=ROOT.parent / "shared" / "datasets" / "mnist")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--train", type=int, default=10_000, help="the first N training images")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--only", nargs="+", metavar="NAME",
                   help="rows to run, e.g. BASE bn-dropout SK-0.2")
    p.add_argument("--out", default="runs/bench-exercise-15-6")
    args = p.parse_args()
    full = data.load_idx_dir(args.data, "mnist")
    ds = data.Dataset("mnist", full.train.subset(range(args.train)), full.test, full.classes)
    config = Config(data=str(args.data), epochs=args.epochs, batch=100, lr=args.lr,
                    momentum=0.9, weight_decay=5e-4, normalize="mean", val_split=0, seed=0)
    print(f"| network (exercise 15.6, first {args.train:,} training images, {args.epochs} "
          f"epoch{'s' * (args.epochs != 1)}, seed 0) | parameters | test error | errors "
          f"| wall time |")
    print("| --- | --- | --- | --- | --- |")
    for name, text, params in NETWORKS:
        if args.only and slug(name) not in map(slug, args.only):
            continue
        start = time.perf_counter()
        network = netc.load(text, **params)
        out = Path(args.out) / slug(name)
        r = fit(network, ds, config, out=out, echo=lambda line: print(line, file=sys.stderr))
        size = sum(v.size for v in r.model.params.values())
        print(f"| {name} | {size:,} | {100 * (1 - r.test.accuracy):.2f}% | {r.test.errors:,} | "
              f"{time.perf_counter() - start:,.0f} s |", flush=True)


if __name__ == "__main__":
    main()
