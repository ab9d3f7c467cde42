"""`netc export --c` (issue 12 §1, §4): the standalone C library of every example passes its own
self-test; it builds warning-free with gcc and clang under -std=c99 -pedantic -Werror and clean
under ASan/UBSan on an arena of exactly the size it declares; it has no malloc, stdio or mutable
globals and only prefixed symbols, so two exports link into one program; it is reentrant; and on
the 10,000 MNIST test images the exported LeNet-5 gives netc's classes and outputs."""
from __future__ import annotations

import re
import shutil
import subprocess
import threading
from pathlib import Path

import cffi
import numpy as np
import pytest

import netc
from netc import checkpoint, data
from netc.cli import main
from netc.codegen.views import LIBRARY_ENTRIES
from netc.data.normalize import MODES, Normalizer
from netc.interop.c_library import TOLERANCE
from netc.runtime import Network
from netc.train import fit_input, load_trained

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
LARGE = ("alexnet", "googlenet", "resnet18", "vgg16")  # 224×224 inputs: bench/deploy.py has them
SMALL = sorted(p.stem for p in EXAMPLES.glob("*.net") if p.stem not in LARGE)
STRICT = "-O1 -Werror"  # the Makefile adds -std=c99 -Wall -Wextra -pedantic


@pytest.fixture(autouse=True)
def _light_flags(monkeypatch):
    monkeypatch.setenv("NETC_CFLAGS", "-O1")  # the runtime builds that give the expected outputs


def fresh_checkpoint(path: Path, spec, *, normalize: str = "standard", seed: int = 0) -> Path:
    """A checkpoint of an untrained network: initialised weights, BatchNorm statistics that are
    not the identity, and a normalisation fitted on random inputs."""
    network = spec if isinstance(spec, Network) else netc.load(spec)
    model = network.compile(batch=2, flags=["-O1"])
    model.init(seed)
    rng = np.random.default_rng(seed)
    for b in model.buffers.values():
        b[...] = rng.uniform(0.5, 1.5, b.shape)
    x = rng.random((64, *network.net.input), dtype=np.float32)
    checkpoint.save(path, model, Normalizer.fit(normalize, x), checkpoint.untrained_meta())
    return path


def export(capsys, spec_path, ckpt, out, *extra):
    code = main(["export", str(spec_path), str(ckpt), "--c", "-o", str(out), *map(str, extra)])
    stdout, stderr = capsys.readouterr()
    assert code == 0, stderr
    return stdout


def make(folder, *targets, cc="gcc", cflags=STRICT):
    return subprocess.run(["make", "-s", "-C", str(folder), f"CC={cc}", f"CFLAGS={cflags}",
                           *targets], capture_output=True, text=True, timeout=300)


def self_test_ok(result) -> bool:
    return result.returncode == 0 and result.stdout.rstrip().endswith(": ok")


@pytest.mark.parametrize("name", SMALL)
def test_every_small_example_passes_its_self_test(name, tmp_path, capsys):
    spec = EXAMPLES / f"{name}.net"
    out = export(capsys, spec, fresh_checkpoint(tmp_path / "c.npz", spec), tmp_path / "lib",
                 "--tests", 3)
    prefix = name.replace("-", "_")
    assert f"as {prefix}: arena " in out
    assert sorted(p.name for p in (tmp_path / "lib").iterdir()) == sorted(
        ["Makefile", "README.md", f"{prefix}.c", f"{prefix}.h", f"{prefix}_test.c",
         f"{prefix}_weights.c"])
    result = make(tmp_path / "lib", "test")
    assert self_test_ok(result), result.stdout + result.stderr
    assert "3 samples" in result.stdout


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """LeNet-5 and the MNIST ResNet (a graph, with batchnorm) exported, batches of up to 4."""
    root = tmp_path_factory.mktemp("exports")
    folders = {}
    with pytest.MonkeyPatch.context() as m:
        m.setenv("NETC_CFLAGS", "-O1")
        for name in ("lenet5", "resnet-mnist"):
            spec = EXAMPLES / f"{name}.net"
            ckpt = fresh_checkpoint(root / f"{name}.npz", spec)
            assert main(["export", str(spec), str(ckpt), "--c", "-o", str(root / name),
                         "--batch", "4", "--tests", "6"]) == 0
            folders[name] = (root / name, spec, ckpt)
    return folders


@pytest.mark.parametrize("cc", ["gcc", "clang"])
@pytest.mark.parametrize("name", ["lenet5", "resnet-mnist"])
def test_strict_c99_with_gcc_and_clang(exports, name, cc):
    folder = exports[name][0]
    make(folder, "clean")
    result = make(folder, "test", cc=cc, cflags="-O2 -march=x86-64-v3 -Werror")
    assert self_test_ok(result), result.stdout + result.stderr
    assert "in batches of up to 4" in result.stdout


@pytest.mark.parametrize("name", ["lenet5", "resnet-mnist"])
def test_sanitizers_on_an_arena_of_exactly_the_declared_size(exports, name):
    result = make(exports[name][0], "asan", cflags="")
    assert self_test_ok(result), result.stdout + result.stderr


def test_the_self_test_fails_past_its_tolerance(exports, tmp_path):
    folder = tmp_path / "lenet5"
    shutil.copytree(exports["lenet5"][0], folder)
    test_c = folder / "lenet5_test.c"
    text = test_c.read_text()
    expected = text.index("static const float expected")
    first = re.compile(r"(-?0x[0-9a-f.]+p[-+]\d+)f").search(text, expected)
    wrong = float.fromhex(first.group(1)) * (1 + 1e-3) + 1e-3  # far past 1e-5
    test_c.write_text(text[:first.start()] + f"{float(np.float32(wrong)).hex()}f"
                      + text[first.end():])
    result = make(folder, "test")
    assert result.returncode != 0 and "FAILED" in result.stdout, result.stdout


def _objects(folder: Path, prefix: str) -> list[Path]:
    assert make(folder, f"lib{prefix}.a").returncode == 0
    return [folder / f"{prefix}.o", folder / f"{prefix}_weights.o"]


@pytest.mark.parametrize("name", ["lenet5", "resnet-mnist"])
def test_no_allocation_no_io_no_mutable_globals_every_symbol_prefixed(exports, name):
    folder, prefix = exports[name][0], name.replace("-", "_")
    for obj in _objects(folder, prefix):
        symbols = [line.split() for line in subprocess.run(
            ["nm", str(obj)], capture_output=True, text=True, check=True).stdout.splitlines()]
        undefined = {s[-1] for s in symbols if s[0] == "U"}
        defined = [(s[1], s[2]) for s in symbols if len(s) == 3]
        assert not undefined & {"malloc", "calloc", "realloc", "free", "printf", "fprintf",
                                "puts", "fopen", "fwrite", "stdout", "stderr"}, undefined
        assert undefined <= {"memcpy", "memset", "expf", "logf", "sqrtf", "tanhf", "expf",
                             f"{prefix}_weights",
                             "omp_get_max_threads"}, undefined
        globals_ = {n for kind, n in defined if kind.isupper()}
        assert globals_ and all(n.startswith(prefix + "_") for n in globals_), globals_
        # text (T, t) and read-only data (R, r) only: nothing writable (D, d, B, b, C)
        assert {kind for kind, _ in defined} <= set("TtRr"), defined


def test_two_exports_link_into_one_program(exports, tmp_path):
    """Both libraries in one executable, each answering for its own network."""
    lenet, resnet = exports["lenet5"][0], exports["resnet-mnist"][0]
    libs = [*_objects(lenet, "lenet5"), *_objects(resnet, "resnet_mnist")]
    main_c = tmp_path / "both.c"
    main_c.write_text("""
#include <stdio.h>
#include <stdlib.h>
#include "lenet5.h"
#include "resnet_mnist.h"
int main(void) {
    static float a[LENET5_INPUT_SIZE], b[RESNET_MNIST_INPUT_SIZE];
    float ya[LENET5_OUTPUT_SIZE], yb[RESNET_MNIST_OUTPUT_SIZE];
    for (int i = 0; i < LENET5_INPUT_SIZE; i++) a[i] = (float)(i % 7) / 7;
    for (int i = 0; i < RESNET_MNIST_INPUT_SIZE; i++) b[i] = (float)(i % 5) / 5;
    void* arena_a = malloc(LENET5_ARENA_BYTES);
    void* arena_b = malloc(RESNET_MNIST_ARENA_BYTES);
    if (lenet5_run(a, ya, arena_a) || resnet_mnist_run(b, yb, arena_b)) return 1;
    for (int k = 0; k < LENET5_OUTPUT_SIZE; k++) printf("%.9g ", ya[k]);
    printf("\\n");
    for (int k = 0; k < RESNET_MNIST_OUTPUT_SIZE; k++) printf("%.9g ", yb[k]);
    printf("\\n");
    free(arena_a); free(arena_b);
    return 0;
}
""")
    exe = tmp_path / "both"
    subprocess.run(["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", f"-I{lenet}",
                    f"-I{resnet}", "-o", str(exe), str(main_c), *map(str, libs), "-lm"],
                   check=True, timeout=120)
    lines = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout
    got = [np.array(line.split(), np.float32) for line in lines.splitlines()]
    for (name, pattern), y in zip([("lenet5", 7), ("resnet-mnist", 5)], got):
        _, spec, ckpt = exports[name]
        trained = load_trained(spec, ckpt, batch=1)
        x = (np.arange(784 if name != "lenet5" else 1024) % pattern / pattern).astype(np.float32)
        want = trained.model.forward(trained.normalizer.apply(
            x.reshape(1, *trained.model.net.input))).ravel()
        assert np.abs(y - want).max() <= TOLERANCE * (1 + np.abs(want).max()), name


def _shared_library(folder: Path, prefix: str, tmp_path: Path, flags=("-O2",)):
    """The export as a .so, loaded through cffi, with its run functions."""
    so = tmp_path / f"lib{prefix}.so"
    subprocess.run(["gcc", "-std=c99", "-shared", "-fPIC", *flags, "-o", str(so),
                    str(folder / f"{prefix}.c"), str(folder / f"{prefix}_weights.c"), "-lm"],
                   check=True, timeout=300)
    ffi = cffi.FFI()
    ffi.cdef("".join(f"int {prefix}_{fn};\n" for fn in LIBRARY_ENTRIES))
    return ffi, ffi.dlopen(str(so))


def test_two_arenas_serve_two_threads_at_once(exports, tmp_path):
    folder, spec, ckpt = exports["resnet-mnist"]
    ffi, lib = _shared_library(folder, "resnet_mnist", tmp_path)
    arena_bytes = int(re.search(r"#define RESNET_MNIST_ARENA_BYTES (\d+)",
                                (folder / "resnet_mnist.h").read_text()).group(1))
    x = np.random.default_rng(1).random((2, 40, 784), dtype=np.float32)

    def run(xs, arena):
        ys = np.zeros((len(xs), 10), np.float32)
        for i in range(len(xs)):  # cffi releases the GIL in each call
            assert lib.resnet_mnist_run(ffi.from_buffer("float[]", xs[i]),
                                        ffi.from_buffer("float[]", ys[i]), arena) == 0
        return ys
    alone = [run(x[t], ffi.new("char[]", arena_bytes)) for t in range(2)]
    together = [None, None]
    threads = [threading.Thread(target=lambda t=t: together.__setitem__(
        t, run(x[t], ffi.new("char[]", arena_bytes)))) for t in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for t in range(2):
        np.testing.assert_array_equal(together[t], alone[t])


@pytest.fixture(scope="module")
def trained_lenet5(tmp_path_factory):
    root = tmp_path_factory.mktemp("lenet5")
    with pytest.MonkeyPatch.context() as m:
        m.setenv("NETC_CFLAGS", "-O1")
        assert main(["train", str(EXAMPLES / "lenet5.net"), "--epochs", "1", "--out",
                     str(root / "run")]) == 0
    return root / "run" / "checkpoint.npz"


def test_exported_lenet5_gives_netcs_classes_on_the_10000_mnist_test_images(
        trained_lenet5, tmp_path, capsys):
    out = export(capsys, EXAMPLES / "lenet5.net", trained_lenet5, tmp_path / "lib",
                 "--batch", "64", "--data", "mnist-10k")
    assert "up to 64 samples a pass" in out
    ffi, lib = _shared_library(tmp_path / "lib", "lenet5", tmp_path)
    trained = load_trained(EXAMPLES / "lenet5.net", trained_lenet5)
    test = data.load("mnist-10k").test
    x = fit_input(test.x, (1, 32, 32))
    assert len(x) == 10_000
    want = np.concatenate([trained.model.forward(trained.prepare(x[i:i + 250], "the test set"))
                           for i in range(0, len(x), 250)]).reshape(len(x), 10)
    got = np.zeros_like(want)
    arena = ffi.new("char[]", int(re.search(r"ARENA_BYTES (\d+)", (
        tmp_path / "lib" / "lenet5.h").read_text()).group(1)))
    assert lib.lenet5_run_batch(ffi.from_buffer("float[]", np.ascontiguousarray(x)),
                                ffi.from_buffer("float[]", got), len(x), arena) == 0
    assert (got.argmax(1) == want.argmax(1)).all()
    assert np.abs(got - want).max() <= 1e-5
    assert 0.8 < (got.argmax(1) == test.y).mean()  # a trained network, not a constant one
    classes = [lib.lenet5_classify(ffi.from_buffer("float[]", x[i]), arena) for i in range(50)]
    assert classes == list(want[:50].argmax(1))


@pytest.mark.parametrize("mode", MODES)
def test_each_normalisation_is_applied_inside_the_library(mode, tmp_path, capsys):
    spec = tmp_path / "n.net"  # pca whitening needs a network that takes its input as a vector
    spec.write_text("network n\ninput 2x4x4\nconv(3, k=3, act=tanh) - fc(5) - softmax(5)\n"
                    if mode != "pca" else "network n\ninput 32\nfc(6, act=tanh) - softmax(6)\n")
    ckpt = fresh_checkpoint(tmp_path / "c.npz", spec, normalize=mode)
    assert checkpoint.read(ckpt).normalizer.mode == mode
    export(capsys, spec, ckpt, tmp_path / "lib", "--tests", 4)
    header = (tmp_path / "lib" / "n.h").read_text()
    assert ("is applied inside" in header) == (mode != "none")
    result = make(tmp_path / "lib", "test")
    assert self_test_ok(result), result.stdout + result.stderr


def test_threads_over_a_batch_in_an_openmp_build(tmp_path, capsys):
    spec = EXAMPLES / "resnet-mnist.net"
    export(capsys, spec, fresh_checkpoint(tmp_path / "c.npz", spec), tmp_path / "lib",
           "--batch", "8", "--threads", "3", "--tests", "11")
    result = make(tmp_path / "lib", "test", cflags="-O1 -Werror -fopenmp")
    assert self_test_ok(result), result.stdout + result.stderr


def test_the_arena_is_planned_by_liveness(tmp_path, capsys):
    spec = EXAMPLES / "resnet20.net"
    out = export(capsys, spec, fresh_checkpoint(tmp_path / "c.npz", spec), tmp_path / "lib",
                 "--tests", 1)
    arena, unshared = map(lambda s: int(s.replace(",", "")), re.search(
        r"arena ([\d,]+) bytes \(without reuse: ([\d,]+)\)", out).groups())
    header = (tmp_path / "lib" / "resnet20.h").read_text()
    assert f"#define RESNET20_ARENA_BYTES {arena} " in header
    assert arena < unshared / 4  # 20 layers' outputs in the space of a few


@pytest.mark.parametrize("argv, message", [
    (["--prefix", "1net"], "--prefix '1net' cannot start C names"),
    (["--prefix", "int"], "--prefix 'int' cannot start C names"),
    (["--prefix", "a-b"], "--prefix 'a-b' cannot start C names"),
    (["--prefix", "x" * 49], "cannot start C names"),
    ([], "netc export --c writes a folder: give it with -o DIR"),
])
def test_bad_requests_are_one_error_line_and_write_nothing(argv, message, tmp_path, capsys):
    spec = EXAMPLES / "xor.net"
    ckpt = fresh_checkpoint(tmp_path / "c.npz", spec)
    out = ["-o", str(tmp_path / "lib")] if "-o" not in argv and argv else []
    code = main(["export", str(spec), str(ckpt), "--c", *out, *argv])
    stdout, stderr = capsys.readouterr()
    assert code != 0 and stdout == ""
    assert len(stderr.strip().splitlines()) <= 2 and message in stderr, stderr
    assert "Traceback" not in stderr and not (tmp_path / "lib").exists()


def test_non_finite_weights_are_refused(tmp_path, capsys):
    spec = EXAMPLES / "xor.net"
    ckpt = fresh_checkpoint(tmp_path / "c.npz", spec)
    with np.load(ckpt) as z:
        arrays = {k: z[k] for k in z.files}
    name = next(k for k in arrays if k.startswith("param/"))
    arrays[name] = np.full_like(arrays[name], np.nan)
    np.savez(ckpt, **arrays)
    code = main(["export", str(spec), str(ckpt), "--c", "-o", str(tmp_path / "lib")])
    stderr = capsys.readouterr().err
    assert code != 0 and f"{name[6:]} holds NaN or infinite values" in stderr, stderr
    assert "Traceback" not in stderr and not (tmp_path / "lib").exists()


def test_an_export_needs_a_format(tmp_path, capsys):
    spec = EXAMPLES / "xor.net"
    code = main(["export", str(spec), str(fresh_checkpoint(tmp_path / "c.npz", spec)),
                 "-o", str(tmp_path / "lib")])
    assert code != 0 and "needs a format" in capsys.readouterr().err
