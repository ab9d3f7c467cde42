"""Issue 14 §4: data-parallel training speed on this machine, and a model of it past one machine.

    python bench/distributed.py                 # all three nets, ~6 min on the 2-core machine
    python bench/distributed.py --nets lenet5 --seconds 1

For LeNet-5, MNIST-BASE (examples/mcn-base.net) and the VGG-style net (bench/perf_vgg.net): the
training images/s of 1 rank × 1 thread, 2 ranks × 1 thread (mpiexec) and 1 rank × 2 threads, a
batch of 64 per rank, random inputs, SGD with momentum; each figure the median of --repeats
rounds, a round timing every setup once, in turn, for >= --seconds. Two separate 1-rank jobs run
side by side say what the two cores give two processes at that moment: 2 ranks against them is
the cost of being one job, whatever else runs on the machine (which wall-clock efficiency also
measures). The CPU seconds a rank spends per step count its own work and MPI's polling while it
waits. For 2 ranks also the time of the step's exchange alone (the allreduce of the gradient
region and of the loss), timed by itself between barriers. Then, from the measured 1-thread
step, the ring-allreduce model for 8, 64 and 512 ranks at 10 and 100 Gbit/s. Prints markdown
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


def worker(net: str, threads: int, seconds: float) -> None:
    """One rank's part (or the whole job, outside mpiexec): one timing of >= `seconds`; rank 0
    prints it as a JSON line."""
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
    wall, cpu = _timed(team, step, steps)
    exchange = None
    if team.size > 1:
        def exchange_alone():
            team.sum(np.zeros(2))
            team.comm.Allreduce(team.mpi.IN_PLACE, model.gradient, op=team.mpi.SUM)
        exchange = _timed(team, exchange_alone, steps)[0]
    cpu = team.sum(np.array([cpu]))[0] / team.size  # a rank's, on average
    if team.root:
        print(json.dumps({"step": wall, "cpu": cpu, "exchange": exchange,
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


# name: (ranks, threads, separate jobs at once)
SETUPS = {"one": (1, 1, 1), "two": (2, 1, 1), "threaded": (1, 2, 1), "apart": (1, 1, 2)}


def run(net: str, setup: str, seconds: float) -> dict:
    """One timing of a setup; for separate jobs, their images/s summed."""
    ranks, threads, copies = SETUPS[setup]
    command = [sys.executable, __file__, "--worker", net, str(threads), str(seconds)]
    if ranks > 1:
        command = [str(Path(sys.executable).parent / "mpiexec"), "-n", str(ranks), *command]
    jobs = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(copies)]
    outputs = [job.communicate(timeout=600)[0] for job in jobs]
    if any(job.returncode for job in jobs):
        raise SystemExit(f"{' '.join(command)} failed")
    figures = [json.loads(out.splitlines()[-1]) for out in outputs]
    return figures[0] | {"rate": sum(f["images"] / f["step"] for f in figures)}


def measure(net: str, args) -> dict[str, dict]:
    """Each setup's median figures over --repeats rounds; a round times every setup once, so
    that other work on the machine falls on all of them alike."""
    rounds = [{setup: run(net, setup, args.seconds) for setup in SETUPS}
              for _ in range(args.repeats)]
    return {setup: {key: statistics.median(r[setup][key] for r in rounds)
                    for key in rounds[0][setup] if rounds[0][setup][key] is not None}
            for setup in SETUPS}


def ring_seconds(ranks: int, gradient_bytes: int, gbit: float) -> float:
    """A ring allreduce: each rank sends 2(N-1)/N of the buffer in 2(N-1) messages."""
    sent = 2 * (ranks - 1) / ranks * gradient_bytes
    return sent * 8 / (gbit * 1e9) + 2 * (ranks - 1) * LATENCY


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nets", nargs="+", choices=NETS, default=list(NETS))
    parser.add_argument("--seconds", type=float, default=2.0, help="per timing (default 2)")
    parser.add_argument("--repeats", type=int, default=5, help="rounds (default 5)")
    parser.add_argument("--worker", nargs=3, metavar=("NET", "THREADS", "SECONDS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        net, threads, seconds = args.worker
        return worker(net, int(threads), float(seconds))
    print(f"load average before: {os.getloadavg()[0]:.2f} (other work on the machine slows "
          "every figure; compare them within one run)\n")
    print("| net | parameters | 1 rank × 1 thread | 2 ranks × 1 thread | 1 rank × 2 threads | "
          "2 separate 1-rank jobs at once | 2-rank efficiency | 2 ranks ÷ 2 separate jobs | "
          "CPU time a step, 1 rank → 2 ranks | exchange alone | share of the 2-rank step |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    measured = {}
    for net in args.nets:
        m = measured[net] = measure(net, args)
        one, two = m["one"], m["two"]
        print(f"| {net} | {one['params']:,.0f} | {one['rate']:,.0f} img/s | {two['rate']:,.0f} "
              f"img/s | {m['threaded']['rate']:,.0f} img/s | {m['apart']['rate']:,.0f} img/s "
              f"| {two['rate'] / (2 * one['rate']):.0%} | {two['rate'] / m['apart']['rate']:.0%} "
              f"| {1e3 * one['cpu']:.1f} → {1e3 * two['cpu']:.1f} ms "
              f"({one['cpu'] / two['cpu']:.0%}) | {1e3 * two['exchange']:.2f} ms | "
              f"{two['exchange'] / two['step']:.1%} |")
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")
    print("\nPredicted past one machine (ring allreduce, no overlap; the compute time per step "
          f"is the measured 1-thread step at batch {BATCH}; {LATENCY * 1e6:g} µs a message):\n")
    print("| net | gradient | step (compute) | ranks | sent per rank | 10 Gbit/s: step, "
          "efficiency | 100 Gbit/s: step, efficiency |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for net, m in measured.items():
        one = m["one"]
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
