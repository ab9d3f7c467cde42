"""Evidence for issue 11 §4: the small ResNet (examples/resnet-mnist.net) on full MNIST.

    python bench/resnet_mnist.py [DATA_DIR] [--epochs N] [--threads N] [--augment OPS]

DATA_DIR defaults to ../shared/datasets/mnist. The target is ≤ 0.5% test error. The recipe is
netc train's defaults (SGD, lr 0.05, momentum 0.9, cosine schedule, batch 32, weight decay 5e-4)
with no validation split, 15 epochs, `shift:2` augmentation and 1 thread (docs/results.md says
why not 2). Epoch lines go to stderr; stdout gets the markdown row for docs/results.md. Not a
test.
"""
import argparse
import sys
import time
from pathlib import Path

import netc
from netc import data
from netc.train import Config, fit

ROOT = Path(__file__).resolve().parent.parent
EPOCHS, AUGMENT = 15, "shift:2"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", nargs="?", help="the IDX folder (default: ../shared/datasets/mnist)")
    p.add_argument("--epochs", type=int, default=EPOCHS)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--augment", default=AUGMENT, help=f"default {AUGMENT}; none: off")
    p.add_argument("--train", type=int, default=None, help="use only the first N training images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/bench-mnist-resnet")
    args = p.parse_args()
    folder = args.data or ROOT.parent / "shared" / "datasets" / "mnist"
    start = time.perf_counter()
    ds = data.load_idx_dir(folder, "mnist", data.mnist.REMOTE["mnist"].classes)
    if args.train:
        ds = data.Dataset(ds.name, ds.train.subset(range(args.train)), ds.test, ds.classes)
    augment = "" if args.augment == "none" else args.augment
    config = Config(data=str(folder), epochs=args.epochs, seed=args.seed, val_split=0,
                    threads=args.threads, augment=augment)
    r = fit(netc.load(ROOT / "examples" / "resnet-mnist.net"), ds, config, out=args.out,
            echo=lambda line: print(line, file=sys.stderr))
    wall = time.perf_counter() - start  # loading, compiling, training, testing
    rate = sum(h["images_per_s"] for h in r.history) / len(r.history)
    print("| network | data | epochs | augment | threads | test error | errors | wall time "
          "| train img/s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    print(f"| ResNet (examples/resnet-mnist.net) | MNIST {len(ds.train):,} / {r.test.count:,} | "
          f"{len(r.history)} | {augment or 'off'} | {args.threads} | "
          f"{100 * (1 - r.test.accuracy):.2f}% | {r.test.errors:,} | {wall / 60:.1f} min | "
          f"{rate:,.0f} |")


if __name__ == "__main__":
    main()
