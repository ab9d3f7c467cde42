"""Issue 13 §2: what augmentation costs a training step (docs/performance.md, "Augmentation").

    python bench/augment.py                     # both networks, 7 repeats, ~1 min
    python bench/augment.py --repeats 3 --seconds 0.5

Images/s of the steps `netc train` takes (netc/train.py's loop with `standard` normalisation:
pick a batch of a shuffled permutation of the normalised set, or of that set padded once with
normalised black and then moved and flipped; one train_step), with and without augmentation,
batch 64, one thread:
  lenet5  examples/lenet5.net on mnist-10k (1x28x28 zero-padded to 1x32x32), shift:2
  vgg     bench/perf_vgg.net on random 3x32x32 images in [0, 1), crop:4,flip
Each repeat runs one setting for >= --seconds; the settings' repeats alternate (off, on, off,
...) so that both meet the same machine. Prints a markdown table of the medians, their ratio,
and the time per step spent making the batch (picking, and augmenting when on): on a shared
machine the step times wander by ±10%, the batch-making times are the steadier measure of what
augmentation adds. Not a test.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import netc  # noqa: E402
from netc import data  # noqa: E402
from netc.data.augment import Augment  # noqa: E402
from netc.train import fit_input  # noqa: E402

BATCH, LR = 64, 0.01


def setups():
    """(name, network, raw fitted training inputs, labels, augmentation) per network."""
    digits = data.load("mnist-10k").train
    lenet = netc.load((ROOT / "examples" / "lenet5.net").read_text())
    vgg = netc.load((Path(__file__).parent / "perf_vgg.net").read_text())
    rng = np.random.default_rng(0)
    images = rng.random((2048, 3, 32, 32), dtype=np.float32)
    return [("lenet5", lenet, fit_input(digits.x, lenet.net.input), digits.y, "shift:2"),
            ("vgg", vgg, images, rng.integers(0, 10, len(images)), "crop:4,flip")]


def stepper(model, raw: np.ndarray, labels: np.ndarray, ops: str):
    """steps(n): (the seconds n training steps take, the part of them spent making the
    batches), batches as netc/train.py's loop makes them."""
    norm = data.Normalizer.fit("standard", raw)
    augment = Augment.parse(ops)
    normalised = norm.apply(raw)
    black = norm.apply(np.zeros((1, *raw.shape[1:]), np.float32))[0, :, 0, 0]
    padded = augment.pad(normalised, fill=black)  # per-channel normalisation: as the loop does
    order = np.random.default_rng(1).permutation(len(raw))
    moves = np.random.default_rng(2)
    labels = labels.astype(np.int32)
    position = 0

    def steps(n: int) -> float:
        nonlocal position
        making, t0 = 0.0, time.perf_counter()
        for _ in range(n):
            if position + BATCH > len(order):
                position = 0
            t = time.perf_counter()
            idx = order[position:position + BATCH]
            position += BATCH
            x = augment.take(padded, idx, moves) if augment else normalised[idx]
            making += time.perf_counter() - t
            model.train_step(x, labels[idx], lr=LR, momentum=0.9, weight_decay=5e-4)
        return time.perf_counter() - t0, making
    return steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--seconds", type=float, default=1.0, help="at least this long per repeat")
    args = p.parse_args()
    print("| network | augment | images/s off | images/s on | on / off | batch making, off / on |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, network, raw, labels, ops in setups():
        model = network.compile(batch=BATCH, threads=1)
        model.init(0)
        runs = [stepper(model, raw, labels, ""), stepper(model, raw, labels, ops)]
        for run in runs:  # warm-up
            run(2)
        per_repeat = max(1, round(args.seconds / (runs[0](3)[0] / 3)))
        rates: list[list[float]] = [[], []]
        making: list[list[float]] = [[], []]
        for _ in range(args.repeats):
            for run, rate, made in zip(runs, rates, making):
                seconds, spent = run(per_repeat)
                rate.append(per_repeat * BATCH / seconds)
                made.append(spent / per_repeat)
        off, on = (statistics.median(r) for r in rates)
        made_off, made_on = (1e6 * statistics.median(m) for m in making)
        print(f"| {name} | `{ops}` | {off:,.0f} | {on:,.0f} | {on / off:.3f} | "
              f"{made_off:,.0f} / {made_on:,.0f} µs |", flush=True)


if __name__ == "__main__":
    main()
