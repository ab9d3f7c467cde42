"""The generated C under AddressSanitizer and UndefinedBehaviorSanitizer.

For a few networks that together hold every layer kind, both losses, both optimizers and both real
types, the generated source plus a small C driver `main()` is built with
-fsanitize=address,undefined as a standalone program: it runs forward (inference and training),
loss_and_grad (with and without the input gradient), train_step at the full and at a smaller
batch, and the calls the entry points must refuse (batch 0, batch too large, a label out of
range). Any sanitizer report, a non-finite loss, or a refused call that was not refused fails.
"""
from __future__ import annotations

import os
import subprocess

import pytest

import netc
from netc import build, ir

SANITIZE = ["-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined",
            "-fno-sanitize-recover=all"]

NETS = {
    # every conv variant (im2col, 1×1, strided, padded, non-square, table, groups, no bias),
    # overlapping padded max and avg pool, fc, dropout, softmax + cross-entropy
    "convs": """input 3x9x8
        table t {
          X.XX
          XX.X
          .XXX
          XXX.
        }
        conv(4, k=3x2, stride=2x1, pad=1x2, act=relu) - conv(4, k=2, table=t, act=tanh(1.7, 0.6)) -
        conv(6, k=3, pad=1, groups=2, bias=off, act=sigmoid(1.5)) - conv(5, k=1) -
        maxpool(3, stride=2, pad=1) - avgpool(2x3, stride=1x2, pad=1) -
        fc(7, act=relu) - dropout(0.3) - softmax(4)""",
    # subsample, batchnorm over maps and over features, gap, flatten, standalone activations
    "lenet-ish": """input 1x12x12
        subsample(2, act=tanh) - conv(4, k=3) - bn - relu - subsample(2x1, stride=2x1) -
        gap - flatten - bn - sigmoid(2) - tanh(1.7159, 0.6667) - fc(3) - softmax""",
    # mean squared error after a softmax, and on raw outputs
    "mlp-mse": """input 6
        loss mse
        fc(5, act=tanh) - dropout(0.5) - fc(3, bias=off) - softmax""",
    "regression": """input 2x5x5
        loss mse
        conv(2, k=3) - flatten - fc(4)""",
    # a graph: residual blocks (identity and projection), a 3-way concat with a reference skip,
    # the network's input read by two layers, a nested merge, fan-out to three readers
    "graph": """input 3x8x8
        block res(c, s=1) = add[ conv(c, k=3, stride=s, pad=1, act=relu) - conv(c, k=3, pad=1) - bn
                               | conv(c, k=1, stride=s) ] - relu
        add[ c0: conv(3, k=1) | ] - res(4) - r: res(6, s=2) -
        concat[ | conv(2, k=3, pad=1) - add[ | relu ] | @r - avgpool(3, stride=1, pad=1) ] -
        gap - fc(5) - softmax""",
}
CONFIGS = [("convs", "float32", "sgd"), ("convs", "float64", "adam"), ("graph", "float32", "adam"),
           ("lenet-ish", "float32", "adam"), ("lenet-ish", "float64", "sgd"),
           ("mlp-mse", "float64", "sgd"), ("regression", "float32", "adam")]
BATCH = 5

DRIVER = """
// ---- sanitizer driver (tests/test_sanitizers.py): every entry point on random data
#include <stdio.h>
#include <stdlib.h>

static unsigned long long drv_state = 0x9E3779B97F4A7C15ULL;

static double drv_uniform(void)
{
    drv_state ^= drv_state << 13;
    drv_state ^= drv_state >> 7;
    drv_state ^= drv_state << 17;
    return (double)(drv_state >> 11) / 9007199254740992.0;
}

static void* drv_alloc(size_t bytes)
{
    // 64-byte aligned, as the Python runtime allocates the arenas; exactly the size asked for
    // (rounded to the alignment aligned_alloc requires), so overruns reach ASan's redzone
    void* p = aligned_alloc(64, (bytes + 63) / 64 * 64 + 64 * !bytes);
    if (!p)
        exit(3);
    return p;
}

static int drv_check(const char* what, double loss, int want_nan)
{
    printf("%-28s %g\\n", what, loss);
    return want_nan ? !isnan(loss) : !isfinite(loss);
}

int main(void)
{
    const long long nmem = netc_mem_size(), nimem = netc_imem_size();
    const int bmax = netc_max_batch();
    real* mem = drv_alloc(sizeof(real) * (size_t)nmem);
    int* imem = drv_alloc(sizeof(int) * (size_t)nimem);
    real* x = drv_alloc(sizeof(real) * (size_t)bmax * IN_ELEMS);
    real* targets = drv_alloc(sizeof(real) * (size_t)bmax * OUT_ELEMS);
    int* labels = drv_alloc(sizeof(int) * (size_t)bmax);
    for (long long i = 0; i < nmem; i++)
        mem[i] = (real)(drv_uniform() - 0.5);  // parameters, and garbage everywhere else
    for (long long i = BUFFERS_START; i < BUFFERS_END; i++)
        mem[i] = (real)(0.5 + drv_uniform());  // batchnorm running statistics: variance > 0
    for (long long i = OPTIMIZER_START; i < OPTIMIZER_END; i++)
        mem[i] = 0;  // momentum, or adam's moments (v must not be negative), as init() leaves them
    memset(imem, 0, sizeof(int) * (size_t)nimem);
    for (long i = 0; i < (long)bmax * IN_ELEMS; i++)
        x[i] = (real)(4 * drv_uniform() - 2);
    for (long i = 0; i < (long)bmax * OUT_ELEMS; i++)
        targets[i] = (real)drv_uniform();
    for (int n = 0; n < bmax; n++)
        labels[n] = (int)(drv_uniform() * OUT_ELEMS);
    const real* t = IS_MSE ? targets : NULL;

    int fails = 0;
    netc_seed(imem, 42);
    const int batches[2] = {bmax, 1};
    for (int k = 0; k < 2; k++) {
        const int b = batches[k];
        netc_forward(mem, imem, x, b, 0);
        netc_forward(mem, imem, x, b, 1);
        fails += drv_check("loss_and_grad train dx", netc_loss_and_grad(mem, imem, x, labels, t,
                                                                          b, 1, 1), 0);
        fails += drv_check("loss_and_grad inference", netc_loss_and_grad(mem, imem, x, labels, t,
                                                                           b, 0, 0), 0);
        if (IS_MSE)  // mse also takes class labels as one-hot targets
            fails += drv_check("loss_and_grad labels", netc_loss_and_grad(mem, imem, x, labels,
                                                                            NULL, b, 1, 1), 0);
        for (int step = 0; step < 3; step++)
            fails += drv_check("train_step", netc_train_step(mem, imem, x, labels, t, b, 0.01,
                                                             0.9, 1e-4, 0.9, 0.999, 1e-8), 0);
    }
    netc_update(mem, imem, 0.01, 0.9, 1e-4, 0.9, 0.999, 1e-8);
    // refused calls: NaN, and no memory touched
    fails += drv_check("batch 0", netc_loss_and_grad(mem, imem, x, labels, t, 0, 1, 1), 1);
    fails += drv_check("batch too large", netc_loss_and_grad(mem, imem, x, labels, t, bmax + 1,
                                                             1, 1), 1);
    fails += drv_check("train_step batch too large", netc_train_step(
        mem, imem, x, labels, t, bmax + 1, 0.01, 0.9, 1e-4, 0.9, 0.999, 1e-8), 1);
    labels[0] = OUT_ELEMS;
    fails += drv_check("label out of range", netc_loss_and_grad(mem, imem, x, labels, NULL, 1,
                                                                1, 0), 1);
    netc_forward(mem, imem, x, 0, 0);
    netc_forward(mem, imem, x, bmax + 1, 1);
    free(mem), free(imem), free(x), free(targets), free(labels);
    printf(fails ? "FAILED\\n" : "clean\\n");
    return fails != 0;
}
"""


def driver(network, plan) -> str:
    """The driver for one network: its sizes as #defines, then DRIVER."""
    c, h, w = network.net.input
    oc, oh, ow = network.shapes.outputs[-1]
    regions = "".join(f"#define {role.upper()}_START {start}LL\n"
                      f"#define {role.upper()}_END {end}LL\n"
                      for role, start, end in plan.regions if role in ("buffers", "optimizer"))
    return (f"\n#define IN_ELEMS {c * h * w}\n#define OUT_ELEMS {oc * oh * ow}\n{regions}"
            f"#define IS_MSE {int(network.net.loss == 'mse')}\n" + DRIVER)


def test_every_layer_kind_is_covered():
    kinds = {layer.kind for spec in NETS.values()
             for layer in netc.load(spec).net.layers}
    assert kinds == {cls.__name__.lower() for cls in ir.LAYER_KINDS}


@pytest.mark.parametrize("name, dtype, optimizer", CONFIGS)
def test_generated_code_runs_clean_under_sanitizers(tmp_path, name, dtype, optimizer):
    if not build.sanitizers_available():  # probed here, not at collection: it runs the compiler
        pytest.skip("the C compiler cannot build and run -fsanitize=address,undefined programs "
                    "here: install the sanitizer runtimes (libasan, libubsan)")
    network = netc.load(NETS[name])
    plan = network.plan(BATCH, dtype, optimizer)
    source = network.emit(BATCH, dtype, optimizer)
    exe = build.build_executable(source.text + driver(network, plan), tmp_path / "drive",
                                 SANITIZE)
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=0:halt_on_error=1",
               UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1")
    run = subprocess.run([str(exe)], capture_output=True, text=True, env=env, timeout=120)
    report = run.stdout + run.stderr
    assert run.returncode == 0, report
    assert "runtime error" not in report and "Sanitizer" not in report, report
    assert report.rstrip().endswith("clean"), report
