"""Issue 14 §4: data-parallel training speed on this machine, and a model of it past one machine.

    python bench/distributed.py                 # all three nets, ~3 min on the 2-core machine
    python bench/distributed.py --nets lenet5 --seconds 1

For LeNet-5, MNIST-BASE (examples/mcn-base.net) and the VGG-style net (bench/perf_vgg.net): the
training images/s of 1 rank × 1 thread, 2 ranks × 1 thread (mpiexec) and 1 rank × 2 threads, a
batch of 64 per rank, random inputs, SGD with momentum; each figure the median of --repeats
timings of >= --seconds, in the same run. The CPU seconds a rank spends per step (its own work,
and MPI's polling while it waits) say how efficient the ranks are whatever else runs: on a
machine shared with other work, wall-clock efficiency also measures the cores the ranks got.
For 2 ranks also the time of the step's exchange alone (the allreduce of the gradient region
and of the loss), timed by itself between barriers. Then, from the measured 1-thread step, the
ring-allreduce model for 8, 64 and 512 ranks at 10 and 100 Gbit/s. Prints markdown
(docs/distributed.md). Not a test.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from netc import distributed  # noqa: E402
from netc.runtime import load  # noqa: E402

NETS = {"lenet5": ROOT / "examples" / "lenet5.net",
        "mcn-base": ROOT / "examples" / "mcn-base.net",
        "vgg": ROOT / "bench" / "perf_vgg.net"}
BATCH = 64  # per rank
HYPER = dict(momentum=0.9, weight_decay=5e-4)
LATENCY = 5e-6  # seconds per message of the ring (a network's, assumed: not measured here)


def worker(net: str, threads: int, seconds: float, repeats: int) -> None:
    """One rank's part (or the whole job, outside mpiexec): rank 0 prints a JSON line."""
    team = distributed.join()
    model = load(NETS[net]).compile(batch=BATCH, threads=threads)
    rng = np.random.default_rng(team.rank)
    x = rng.normal(size=(BATCH, *model.input_shape)).astype(np.float32)
    y = rng.integers(0, model.output_shape[0], BATCH)
    team.share_state(model)

    def step():
        team.train_step(model, x, y, BATCH * team.size, 0.01, HYPER)

    # the warm-up says how many steps; rank 0's count for all, or they would wait on each other
    steps = team.agree(max(1, round(seconds / _timed(team, step, 3)[0])))
    wall, cpu = zip(*(_timed(team, step, steps) for _ in range(repeats)))
    exchange = None
    if team.size > 1:
        def exchange_alone():
            team.sum(np.zeros(2))
            team.comm.Allreduce(team.mpi.IN_PLACE, model.gradient, op=team.mpi.SUM)
        exchange = statistics.median(_timed(team, exchange_alone, steps)[0]
                                     for _ in range(repeats))
    cpu = team.sum(np.array([statistics.median(cpu)]))[0] / team.size  # a rank's, on average
    if team.root:
        print(json.dumps({"step": statistics.median(wall), "cpu": cpu, "exchange": exchange,
                          "images": BATCH * team.size, "params": model.plan.param_count}))


def _timed(team, fn, n: int) -> tuple[float, float]:
    """(wall, this process's CPU) seconds per call of fn, over n calls that every rank starts
    together."""
    if team.size > 1:
        team.comm.Barrier()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        fn()
    return (time.perf_counter() - wall) / n, (time.process_time() - cpu) / n


def run(net: str, ranks: int, threads: int, args) -> dict:
    command = [sys.executable, __file__, "--worker", net, str(threads), str(args.seconds),
               str(args.repeats)]
    if ranks > 1:
        command = [str(Path(sys.executable).parent / "mpiexec"), "-n", str(ranks), *command]
    done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=600)
    return json.loads(done.stdout.splitlines()[-1])


def ring_seconds(ranks: int, gradient_bytes: int, gbit: float) -> float:
    """A ring allreduce: each rank sends 2(N-1)/N of the buffer in 2(N-1) messages."""
    sent = 2 * (ranks - 1) / ranks * gradient_bytes
    return sent * 8 / (gbit * 1e9) + 2 * (ranks - 1) * LATENCY


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nets", nargs="+", choices=NETS, default=list(NETS))
    parser.add_argument("--seconds", type=float, default=2.0, help="per timing (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="timings per figure (default 3)")
    parser.add_argument("--worker", nargs=4, metavar=("NET", "THREADS", "SECONDS", "REPEATS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        net, threads, seconds, repeats = args.worker
        return worker(net, int(threads), float(seconds), int(repeats))
    print(f"load average before: {os.getloadavg()[0]:.2f} (other work on the machine slows "
          "every figure; compare them within one run)\n")
    print("| net | parameters | 1 rank × 1 thread | 2 ranks × 1 thread | 1 rank × 2 threads | "
          "2-rank efficiency | CPU time a step, 1 rank → 2 ranks | exchange alone | share of the "
          "2-rank step |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    measured = {}
    for net in args.nets:
        one, two, threaded = (run(net, r, t, args) for r, t in ((1, 1), (2, 1), (1, 2)))
        rate = {k: v["images"] / v["step"] for k, v in
                (("one", one), ("two", two), ("threaded", threaded))}
        measured[net] = one
        print(f"| {net} | {one['params']:,} | {rate['one']:,.0f} img/s | {rate['two']:,.0f} "
              f"img/s | {rate['threaded']:,.0f} img/s | {rate['two'] / (2 * rate['one']):.0%} "
              f"| {1e3 * one['cpu']:.1f} → {1e3 * two['cpu']:.1f} ms "
              f"({one['cpu'] / two['cpu']:.0%}) | {1e3 * two['exchange']:.2f} ms | "
              f"{two['exchange'] / two['step']:.1%} |")
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")
    print("\nPredicted past one machine (ring allreduce, no overlap; the compute time per step "
          f"is the measured 1-thread step at batch {BATCH}; {LATENCY * 1e6:g} µs a message):\n")
    print("| net | gradient | step (compute) | ranks | sent per rank | 10 Gbit/s: step, "
          "efficiency | 100 Gbit/s: step, efficiency |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for net, one in measured.items():
        gradient = one["params"] * 4  # float32
        for ranks in (8, 64, 512):
            cells = []
            for gbit in (10, 100):
                comm = ring_seconds(ranks, gradient, gbit)
                cells.append(f"{1e3 * (one['step'] + comm):.1f} ms, "
                             f"{one['step'] / (one['step'] + comm):.0%}")
            print(f"| {net} | {gradient / 1e6:.2f} MB | {1e3 * one['step']:.1f} ms | {ranks} | "
                  f"{2 * (ranks - 1) / ranks * gradient / 1e6:.2f} MB | {cells[0]} | "
                  f"{cells[1]} |")


if __name__ == "__main__":
    main()
