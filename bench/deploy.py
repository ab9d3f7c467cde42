"""Issue 12 §5: the standalone C library (`netc export --c`) measured.

    python bench/deploy.py sizes            # every example: arena, its bounds, weights, code size
    python bench/deploy.py latency          # batch-1 latency: exported C vs onnxruntime vs netc
    python bench/deploy.py latency --nets lenet5 --rounds 5 --seconds 0.5

sizes: for each example at batch 1, the arena the library plans (activations by liveness, the
staged input, the forward's scratch), the same without reuse (every output its own buffer), the
least any plan can give the activations (the most bytes alive at one step: for a chain, its two
largest neighbouring tensors), the scratch alone, the weights, and the code: `size` of the
compiled <prefix>.o (-O3 and $NETC_CFLAGS or -march=native).

latency: LeNet-5, MNIST-BASE and ResNet-20 with the same (initialised) weights, one sample a
call, one thread each: the exported library called from Python through cffi, the same library
timed alone in a C loop, onnxruntime's InferenceSession.run on the ONNX file netc exports (1
intra-op thread, every graph optimisation), and netc's own Model.forward. The contenders
alternate round by round; each figure is the median over rounds of the mean call time of a
round. Needs the onnx extra for onnxruntime. Prints markdown. Not a test.
"""
from __future__ import annotations

import argparse
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

import netc  # noqa: E402
from netc import checkpoint, codegen  # noqa: E402
from netc.codegen.views import LIBRARY_ENTRIES  # noqa: E402
from netc.data.normalize import Normalizer  # noqa: E402
from netc.interop import c_library  # noqa: E402
from netc.passes import memory  # noqa: E402

EXAMPLES = ROOT / "examples"
LATENCY_NETS = {"lenet5": "lenet5", "mcn-base": "mcn-base", "resnet20": "resnet20"}


def flags() -> list[str]:
    return os.environ.get("NETC_CFLAGS", "").split() or ["-O3", "-march=native"]


def least_activation_bytes(net, plan: memory.Plan) -> int:
    """The most bytes of layer outputs (and the staged input) alive at one step."""
    sizes = [plan.buffer(f"{layer.label}.out").size for layer in net.layers]
    lives = [(i, max(net.consumers(i), default=len(net.layers))) for i in range(len(sizes))]
    sizes.append(plan.buffer("input").size)
    lives.append((-1, max(net.consumers(-1))))
    return 4 * max(sum(s for s, (a, b) in zip(sizes, lives) if a <= t <= b)
                   for t in range(-1, len(net.layers)))


def sizes(args) -> None:
    print("| example | arena | without reuse | least activations | scratch | weights "
          "| code (text) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as tmp:
        for path in sorted(EXAMPLES.glob("*.net")):
            network = netc.load(path)
            plan = memory.plan(network.net, network.shapes, 1, training=False, standalone=True)
            prefix = c_library.default_prefix(network)
            source = codegen.emit(network.net, network.shapes, plan, codegen.Library(prefix))
            c = Path(tmp) / f"{prefix}.c"
            c.write_text(source.text)
            (Path(tmp) / f"{prefix}.h").write_text(source.header)
            obj = c.with_suffix(".o")
            subprocess.run(["cc", "-std=c99", *flags(), "-c", "-o", str(obj), str(c)], check=True)
            text = int(subprocess.run(["size", str(obj)], capture_output=True, text=True,
                                      check=True).stdout.splitlines()[1].split()[0])
            scratch = max((b.size for b in plan.buffers if b.name.endswith(".scratch")),
                          default=0)
            print(f"| {path.stem} | {plan.mem_size * 4:,} | "
                  f"{c_library.unshared_bytes(plan):,} | "
                  f"{least_activation_bytes(network.net, plan):,} | {scratch * 4:,} | "
                  f"{plan.weights_size * 4:,} | {text:,} |", flush=True)


# ---- latency

def _timed(call, seconds: float) -> float:
    """Mean seconds of one call over at least `seconds`."""
    n, start = 0, time.perf_counter()
    while True:
        call()
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return elapsed / n


C_LOOP = r"""
#define _POSIX_C_SOURCE 199309L  // clock_gettime under -std=c99
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "PREFIX.h"
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t);
                          return t.tv_sec + 1e-9 * t.tv_nsec; }
int main(int argc, char** argv) {
    const double seconds = atof(argv[1]);
    static float x[UPPER_INPUT_SIZE], y[UPPER_OUTPUT_SIZE];
    for (int i = 0; i < UPPER_INPUT_SIZE; i++) x[i] = (float)(i % 17) / 17;
    void* arena = malloc(UPPER_ARENA_BYTES);
    long n = 0;
    const double start = now();
    double elapsed;
    do { PREFIX_run(x, y, arena); n++; } while ((elapsed = now() - start) < seconds);
    printf("%.9g\n", elapsed / n);
    free(arena);
    return 0;
}
"""


def _library(folder: Path, prefix: str):
    import cffi
    so = folder / f"lib{prefix}.so"
    subprocess.run(["cc", "-std=c99", "-shared", "-fPIC", *flags(), "-o", str(so),
                    str(folder / f"{prefix}.c"), str(folder / f"{prefix}_weights.c"), "-lm"],
                   check=True)
    loop = folder / "loop"
    (folder / "loop.c").write_text(C_LOOP.replace("PREFIX", prefix)
                                   .replace("UPPER", prefix.upper()))
    subprocess.run(["cc", "-std=c99", *flags(), f"-I{folder}", "-o", str(loop),
                    str(folder / "loop.c"), str(folder / f"{prefix}.c"),
                    str(folder / f"{prefix}_weights.c"), "-lm"], check=True)
    ffi = cffi.FFI()
    ffi.cdef("".join(f"int {prefix}_{fn};\n" for fn in LIBRARY_ENTRIES))
    return ffi, ffi.dlopen(str(so)), loop


def latency(args) -> None:
    from netc.interop import onnx_export
    import onnxruntime as ort
    print(f"{platform.processor() or platform.machine()}, flags {' '.join(flags())}, "
          f"onnxruntime {ort.__version__}; one thread each, one sample a call; microseconds "
          f"(median over {args.rounds} rounds of >= {args.seconds} s)\n")
    print("| network | C alone | C via cffi | onnxruntime | netc forward "
          "| onnxruntime / C via cffi | netc forward / C via cffi |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name in args.nets:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            spec = EXAMPLES / f"{LATENCY_NETS[name]}.net"
            network = netc.load(spec)
            model = network.compile(batch=1)
            model.init(0)
            rng = np.random.default_rng(0)
            x = rng.random((1, *network.net.input), dtype=np.float32)
            norm = Normalizer.fit("standard", rng.random((64, *network.net.input),
                                                         dtype=np.float32))
            checkpoint.save(tmp / "c.npz", model, norm, checkpoint.untrained_meta())
            ckpt = checkpoint.read(tmp / "c.npz")
            done = c_library.export_c(ckpt, network, tmp / "lib", tests=1)
            ffi, lib, loop = _library(tmp / "lib", done.prefix)
            run = getattr(lib, f"{done.prefix}_run")
            arena = ffi.new("char[]", done.arena_bytes)
            y = np.zeros(model.plan.buffer(f"{network.net.layers[-1].label}.out").size,
                         np.float32)
            cx, cy = ffi.from_buffer("float[]", x), ffi.from_buffer("float[]", y)
            onnx_file = tmp / f"{name}.onnx"
            onnx_export.export_onnx(ckpt, network, onnx_file)
            options = ort.SessionOptions()
            options.intra_op_num_threads = options.inter_op_num_threads = 1
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            session = ort.InferenceSession(str(onnx_file), options,
                                           providers=["CPUExecutionProvider"])
            feed = {session.get_inputs()[0].name: norm.apply(x)}
            np.testing.assert_allclose(session.run(None, feed)[0].ravel(),
                                       model.forward(norm.apply(x)).ravel(), atol=1e-5)
            run(cx, cy, arena)
            np.testing.assert_allclose(y, model.forward(norm.apply(x)).ravel(), atol=1e-5)
            contenders = {
                "C alone": lambda: float(subprocess.run(
                    [str(loop), str(args.seconds)], capture_output=True, text=True,
                    check=True).stdout),
                "C via cffi": lambda: _timed(lambda: run(cx, cy, arena), args.seconds),
                "onnxruntime": lambda: _timed(lambda: session.run(None, feed), args.seconds),
                "netc forward": lambda: _timed(lambda: model.forward(norm.apply(x)),
                                               args.seconds),
            }
            for measure in contenders.values():  # warm-up
                measure()
            times = {k: [] for k in contenders}
            for _ in range(args.rounds):
                for k, measure in contenders.items():
                    times[k].append(measure())
            med = {k: statistics.median(v) * 1e6 for k, v in times.items()}
            print(f"| {name} | {med['C alone']:.1f} | {med['C via cffi']:.1f} | "
                  f"{med['onnxruntime']:.1f} | {med['netc forward']:.1f} | "
                  f"{med['onnxruntime'] / med['C via cffi']:.2f}× | "
                  f"{med['netc forward'] / med['C via cffi']:.2f}× |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["sizes", "latency"])
    parser.add_argument("--nets", nargs="+", default=list(LATENCY_NETS), choices=LATENCY_NETS)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args()
    sizes(args) if args.what == "sizes" else latency(args)


if __name__ == "__main__":
    main()
