"""Issue 5 harness: netc vs PyTorch (CPU) on the same machine, in the same run.

    python bench/perf.py                  # the full run (docs/performance.md), ~20 min
    python bench/perf.py --quick          # 3 repeats of 0.3 s: a smoke run, ~8 min
    python bench/perf.py --nets lenet5 --threads 1 --batches 64 --repeats 5 --seconds 1

For each network (lenet5, mcn-base, mlp, vgg; the graphs resnet20 and googlenet with the cases
of CASES) and thread count: one training step (forward, softmax cross-entropy, backward, SGD with
momentum 0.9) at each batch, and inference at batch 1 (latency) and 64, timed as warm-up then
the median of --repeats repeats of >= --seconds each.
PyTorch (when importable) runs the same network with the same initial weights, the same thread
count (torch.set_num_threads), the same loss and optimizer, in its own process; its repeats
alternate with netc's. Then: netc/PyTorch ratios, GFLOP/s per network and per layer (forward and
backward, from a -DNETC_PROFILE build), the float32 matmul ceiling (numpy sgemm 2048^3 in
subprocesses with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset), and compile time (cold: empty
cache; cached: a second compile of the same spec). Prints markdown; --json FILE also writes
every figure. Not a test.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import netc  # noqa: E402
from netc.passes import analyze  # noqa: E402
from perf_torch import torch_available  # noqa: E402

NETS = {
    "lenet5": (ROOT / "examples" / "lenet5.net").read_text(),
    "mcn-base": (ROOT / "examples" / "mcn-base.net").read_text(),
    "mlp": (Path(__file__).parent / "perf_mlp.net").read_text(),
    "vgg": (Path(__file__).parent / "perf_vgg.net").read_text(),
    "resnet20": (ROOT / "examples" / "resnet20.net").read_text(),
    "googlenet": (ROOT / "examples" / "googlenet.net").read_text(),
}
TRAIN_BATCHES = (1, 16, 64, 256)
INFER_BATCHES = (1, 64)
# The graphs' cases (issue 11): ResNet-20 trained at batch 64 and GoogLeNet's batch-1 latency
# (its training batch of 64 would plan 6 GB); (train batches, inference batches) instead of the
# command line's
CASES = {"resnet20": ((64,), (1,)), "googlenet": ((), (1,))}
LR, MOMENTUM = 0.01, 0.9


# ---- timing


def runner(fn):
    """run(n): the seconds n calls of fn take."""
    def run(n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        return time.perf_counter() - t0
    return run


def calls_for(run, seconds: float) -> int:
    """Warm-up, then the calls that one repeat of >= seconds needs."""
    run(1)
    n, t = 1, run(1)
    while t < min(0.2, seconds):
        n *= 2
        t = run(n)
    return max(1, math.ceil(n * seconds / t))


def timed(runs, seconds: float, repeats: int) -> list[float]:
    """Seconds per call of each runner: the median of the repeats, the runners' repeats taken in
    turn (netc, PyTorch, netc, ...) so that both meet the same machine; on these VMs a
    two-thread run can slow down for tens of seconds (docs/performance.md)."""
    calls = [calls_for(run, seconds) for run in runs]
    per_call: list[list[float]] = [[] for _ in runs]
    for _ in range(repeats):
        for run, n, out in zip(runs, calls, per_call):
            out.append(run(n) / n)
    return [statistics.median(t) for t in per_call]


def data(shape, batch: int, classes: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, *shape)).astype(np.float32)
    return x, rng.integers(0, classes, batch).astype(np.int32)


# ---- the matmul ceiling, in a clean subprocess

CEILING = """
import statistics, time, numpy as np
n = 2048
a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
b = a.copy()
a @ b
times = []
for _ in range(10):
    t0 = time.perf_counter()
    a @ b
    times.append(time.perf_counter() - t0)
print(2 * n**3 / min(times) / 1e9, 2 * n**3 / statistics.median(times) / 1e9)
"""


def sgemm(threads: int, processes: int = 1) -> list[float]:
    """GFLOP/s of numpy's sgemm in `processes` processes of `threads` threads run at once
    (OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE removed): the best and the median of 10 products
    each, one pair per process."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    env.update(OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    procs = [subprocess.Popen([sys.executable, "-c", CEILING], env=env, stdout=subprocess.PIPE,
                              text=True) for _ in range(processes)]
    return [[float(v) for v in p.communicate()[0].split()] for p in procs]


def ceiling(threads: int) -> tuple[float, str]:
    """The float32 matmul ceiling for `threads` threads, and how it was found: numpy's best
    product; with more threads also `threads` one-thread processes at once (the sum of their
    medians), and the larger of the two, as numpy's own threads meet the slow spells of
    synchronised two-thread runs on these VMs."""
    own = sgemm(threads)[0][0]
    if threads == 1:
        return own, f"numpy sgemm 2048^3, best of 10: {own:.0f}"
    apart = sum(m for _, m in sgemm(1, threads))
    return max(own, apart), (f"numpy sgemm 2048^3 on {threads} threads, best of 10: {own:.0f}; "
                             f"{threads} one-thread processes at once, sum of medians: "
                             f"{apart:.0f}")


# ---- one network


def bench_net(name: str, threads: int, args, results: list, torch_ok: bool) -> None:
    network = netc.load(NETS[name])
    classes = network.shapes.outputs[-1][0]
    shape = network.net.input
    batches, infer = CASES.get(name, (args.batches, args.infer))
    model = network.compile(batch=max([*batches, *infer]), threads=threads)
    train_flops = analyze(network.net).cost.train_flops
    fwd_flops = analyze(network.net).cost.flops
    cases = [("train", b) for b in batches] + [("infer", b) for b in infer]
    peer = TorchWorker(name, threads) if torch_ok else None
    for kind, b in cases:
        x, y = data(shape, b, classes)
        if kind == "train":
            model.init(0)
            run = runner(lambda: model.train_step(x, y, lr=LR, momentum=MOMENTUM))
            flops = train_flops * b
        else:
            run = runner(lambda: model.forward(x))
            flops = fwd_flops * b
        t_n, *t_t = timed([run] + ([peer.case(kind, b)] if peer else []), args.seconds,
                          args.repeats)
        t_t = t_t[0] if t_t else None
        row = dict(net=name, kind=kind, batch=b, threads=threads, netc_s=t_n, torch_s=t_t,
                   netc_ips=b / t_n, torch_ips=b / t_t if t_t else None,
                   netc_gflops=flops / t_n / 1e9,
                   torch_gflops=flops / t_t / 1e9 if t_t else None)
        results.append(row)
        print(_row(row), flush=True)
    if peer:
        peer.close()


class TorchWorker:
    """PyTorch's side in a subprocess (bench/perf_torch.py worker), driven case by case."""

    def __init__(self, name: str, threads: int):
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).parent / "perf_torch.py"), name, str(threads)],
            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def _ask(self, line: str) -> str:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        if not answer:
            raise RuntimeError(f"bench/perf_torch.py ended (exit {self.proc.wait()})")
        return answer.strip()

    def case(self, kind: str, batch: int):
        """A runner for this case: run(n) times n calls in the worker."""
        self._ask(f"case {kind} {batch}")
        return lambda n: float(self._ask(f"run {n}"))

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def _row(r) -> str:
    ratio = f"{r['torch_s'] / r['netc_s']:.2f}x" if r["torch_s"] else "-"
    tt = f"{r['torch_ips']:,.0f}" if r["torch_s"] else "-"
    torch_us = f"{r['torch_s'] * 1e6:,.0f} us" if r["torch_s"] else "-"
    lat = f" | {r['netc_s'] * 1e6:,.0f} us / {torch_us}" if r["batch"] == 1 else " | "
    tg = f"{r['torch_gflops']:.1f}" if r["torch_s"] else "-"
    return (f"| {r['net']} | {r['kind']} | {r['batch']} | {r['threads']} | "
            f"{r['netc_ips']:,.0f} | {tt} | **{ratio}**{lat} | {r['netc_gflops']:.1f} | {tg} |")


HEADER = ("| net | step | batch | threads | netc img/s | PyTorch img/s | netc/PyTorch "
          "| latency netc / PyTorch | netc GFLOP/s | PyTorch GFLOP/s |\n"
          "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")


# ---- per layer: a -DNETC_PROFILE build accumulates each layer's forward and backward time


def bench_layers(name: str, threads: int, batch: int, args, results: list) -> None:
    network = netc.load(NETS[name])
    from netc.build import choose_flags
    model = network.compile(batch=batch, threads=threads, flags=[*choose_flags(), "-DNETC_PROFILE"])
    x, y = data(network.net.input, batch, network.shapes.outputs[-1][0])
    step_s, = timed([runner(lambda: model.train_step(x, y, lr=LR, momentum=MOMENTUM))], 0.1, 1)
    steps = max(3, int(args.seconds * args.repeats / 2 / step_s))
    model.init(0)
    model.profile_reset()
    t0 = time.perf_counter()
    for _ in range(steps):
        model.train_step(x, y, lr=LR, momentum=MOMENTUM)
    wall = time.perf_counter() - t0
    fwd, bwd = model.profile()
    cost = analyze(network.net).cost
    print(f"\n{name}, training batch {batch}, {threads} thread(s): {steps} steps, "
          f"{wall / steps * 1e3:.2f} ms/step\n")
    print("| layer | fwd us | fwd GFLOP/s | bwd us | bwd GFLOP/s | MFLOP fwd/sample |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for i, layer in enumerate(network.net.layers):
        f, b = fwd[i] / steps, bwd[i] / steps
        fl = cost.layers[i].flops * batch
        gf = f"{fl / f / 1e9:.1f}" if fl and f else "-"
        bfl = fl if i == 0 else 2 * fl  # the first layer computes no input gradient
        gb = f"{bfl / b / 1e9:.1f}" if fl and b else "-"
        print(f"| {layer.label} ({layer.kind}) | {f * 1e6:,.1f} | {gf} | {b * 1e6:,.1f} | {gb} | "
              f"{cost.layers[i].flops / 1e6:.3f} |")
        results.append(dict(net=name, threads=threads, batch=batch, layer=layer.label,
                            kind=layer.kind, fwd_s=f, bwd_s=b, fwd_flops=fl, bwd_flops=bfl))
    print(f"| (rest: loss, zeroing, reduction, update) | | | "
          f"{(wall / steps - (sum(fwd) + sum(bwd)) / steps) * 1e6:,.1f} | | |")


# ---- compile time


def bench_compile(name: str) -> dict:
    network = netc.load(NETS[name])
    batch = max(sum(CASES.get(name, ((64,), ())), ()))  # the batch its cases compile
    with tempfile.TemporaryDirectory() as cache:
        t0 = time.perf_counter()
        network.compile(batch=batch, cache_dir=cache)
        cold = time.perf_counter() - t0
        loads = []
        for _ in range(5):
            t0 = time.perf_counter()
            netc.load(NETS[name]).compile(batch=batch, cache_dir=cache)
            loads.append(time.perf_counter() - t0)
    return dict(net=name, cold_s=cold, cached_s=statistics.median(loads))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nets", nargs="+", default=list(NETS), choices=list(NETS))
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--batches", nargs="+", type=int, default=list(TRAIN_BATCHES))
    p.add_argument("--infer", nargs="+", type=int, default=list(INFER_BATCHES))
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--seconds", type=float, default=1.0, help="minimum length of one repeat")
    p.add_argument("--quick", action="store_true", help="3 repeats of 0.3 s")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--no-layers", action="store_true")
    p.add_argument("--no-steps", action="store_true", help="only the per-layer and compile parts")
    p.add_argument("--json", help="write every figure to this file")
    args = p.parse_args()
    if args.quick:
        args.repeats, args.seconds = 3, 0.3
    torch_ok = not args.no_torch and torch_available()
    env = {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    print(f"# netc perf: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"python {platform.python_version()}, numpy {np.__version__}, "
          f"torch {torch_version() if torch_ok else 'not used'}; env {env}")
    print(f"# repeats {args.repeats} x >= {args.seconds} s, median; "
          f"CFLAGS {os.environ.get('NETC_CFLAGS') or '-O3 -march=native'}\n")
    out: dict = dict(ceiling={}, rows=[], layers=[], compile=[])
    for t in args.threads:
        out["ceiling"][t], how = ceiling(t)
        print(f"float32 matmul ceiling, {t} thread(s): {out['ceiling'][t]:.0f} GFLOP/s ({how})")
    if not args.no_steps:
        print("\n" + HEADER)
        for name in args.nets:
            for t in args.threads:
                bench_net(name, t, args, out["rows"], torch_ok)
    if not args.no_layers:
        for name in (n for n in args.nets if CASES.get(n, ((64,),))[0]):
            for t in args.threads:
                bench_layers(name, t, 64, args, out["layers"])
    print("\n| net | cold compile s | cached load ms |\n| --- | ---: | ---: |")
    for name in args.nets:
        c = bench_compile(name)
        out["compile"].append(c)
        print(f"| {name} | {c['cold_s']:.2f} | {c['cached_s'] * 1e3:.1f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


def torch_version() -> str:
    import torch
    return torch.__version__


if __name__ == "__main__":
    main()
