"""Evidence for issue 4 §5: XOR solved by the course's 2-2-1 sigmoid MLP (examples/xor.net).

    python bench/xor.py [--seeds 20] [--epochs 500]

The recipe of the documented command (examples/xor.net, docs/training.md), for every seed:
full-batch gradient descent on the four points, squared error, lr 2, the other options at their
defaults (momentum 0.9, cosine schedule, weight decay 5e-4, inputs standardised to ±1). A seed
counts as solved when all four points are classified right (output ≥ 0.5 is class 1); the others
end in the 2-2-1 net's well-known local minimum. Prints the markdown rows for docs/results.md.
Not a test.
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
    p.add_argument("--seeds", type=int, default=20, help="seeds 0 .. N-1")
    p.add_argument("--epochs", type=int, default=500)
    p.add_argument("--out", default="runs/bench-xor")
    args = p.parse_args()
    network, ds = netc.load(ROOT / "examples" / "xor.net"), data.load("xor")
    print("| seed | final loss | errors in 4 | first epoch with 0 errors | wall time |")
    print("| --- | --- | --- | --- | --- |")
    solved = 0
    for seed in range(args.seeds):
        start = time.perf_counter()
        config = Config(data="xor", epochs=args.epochs, batch="full", lr=2.0, seed=seed)
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
