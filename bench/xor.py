"""Evidence for issue 4 §5: XOR solved by the course's 2-2-1 sigmoid MLP (examples/xor.net).

    python bench/xor.py [--seeds 10] [--epochs 2000]

Full-batch gradient descent on the four points, squared error, momentum 0.9, lr 2, inputs
standardised to ±1. A seed counts as solved when all four points are classified right (output
≥ 0.5 is class 1). Prints the markdown rows for docs/results.md. Not a test.
"""
import argparse
import time
from pathlib import Path

import netc
from netc import data
from netc.train import Config, fit

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=10, help="seeds 0 .. N-1")
    p.add_argument("--epochs", type=int, default=2000)
    p.add_argument("--out", default="runs/bench-xor")
    args = p.parse_args()
    network, ds = netc.load(ROOT / "examples" / "xor.net"), data.load("xor")
    print("| seed | final loss | errors in 4 | first epoch with 0 errors | wall time |")
    print("| --- | --- | --- | --- | --- |")
    solved = 0
    for seed in range(args.seeds):
        start = time.perf_counter()
        config = Config(data="xor", epochs=args.epochs, batch=0, lr=2.0, momentum=0.9,
                        weight_decay=0, val_split=0, seed=seed)
        r = fit(network, ds, config, out=Path(args.out) / str(seed), echo=lambda line: None,
                progress=False)
        first = next((h["epoch"] for h in r.history if h["train_acc"] == 1.0), None)
        solved += r.test.errors == 0
        print(f"| {seed} | {r.history[-1]['train_loss']:.2e} | {r.test.errors} | "
              f"{first or '—'} | {time.perf_counter() - start:.1f} s |")
    print(f"\nXOR, 2-2-1 sigmoid MLP, {args.epochs} epochs of full-batch training: solved for "
          f"{solved} of {args.seeds} seeds.")


if __name__ == "__main__":
    main()
