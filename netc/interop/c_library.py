"""`netc export NET CKPT -o DIR --c`: a trained network as a standalone C library.

The library is the inference build of netc's own templates for a standalone plan (docs/design.md,
"Targets"): the trained weights compiled in as hex floats, every activation and scratch buffer in
one arena the caller passes, planned by liveness. DIR receives, each file written atomically:

    <prefix>.h          sizes and the arena size as macros, the three entry points
    <prefix>.c          the network
    <prefix>_weights.c  the parameters and running statistics (and the input normalisation)
    <prefix>_test.c     stored inputs and the outputs netc's runtime gave them: exits 1 past
                        the tolerance
    Makefile, README.md

docs/deploy.md has the C API and the measurements.
"""
from __future__ import annotations

import keyword
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import codegen
from ..checkpoint import Checkpoint
from ..codegen.env import render
from ..errors import DataError, InputError
from ..files import write_atomic
from ..passes import memory
from ..runtime import Network
from ..train import load_trained

TOLERANCE = 1e-5  # the self-test: |library - netc| <= TOLERANCE * (1 + |netc|) for every output
MAX_PREFIX = 48
# C keywords and the names C99 reserves for the library: a prefix is followed by "_run"..., so
# only names that are themselves reserved matter
_RESERVED = {"auto", "break", "case", "char", "const", "continue", "default", "do", "double",
             "else", "enum", "extern", "float", "for", "goto", "if", "inline", "int", "long",
             "register", "restrict", "return", "short", "signed", "sizeof", "static", "struct",
             "switch", "typedef", "union", "unsigned", "void", "volatile", "while"}


@dataclass(frozen=True)
class Export:
    """What `export_c` wrote and measured."""

    files: tuple[Path, ...]
    prefix: str
    arena_bytes: int  # the arena the caller passes: activations by liveness, scratch, input
    unshared_bytes: int  # the same with every activation in a buffer of its own
    weights_bytes: int
    tests: int


def default_prefix(network: Network) -> str:
    return codegen.views.identifier(network.net.name).lower()[:MAX_PREFIX]


def check_prefix(prefix: str) -> str:
    """A prefix every exported symbol can carry: a C identifier that is not reserved."""
    if (not codegen.views.identifier(prefix) == prefix or len(prefix) > MAX_PREFIX
            or prefix in _RESERVED or prefix.startswith("_") or keyword.iskeyword(prefix)):
        raise InputError(f"--prefix {prefix!r} cannot start C names",
                         hint=f"a C identifier of at most {MAX_PREFIX} characters, starting with "
                              f"a letter, that is not a C keyword (e.g. lenet5)")
    return prefix


def library_target(ckpt: Checkpoint, network: Network, prefix: str) -> codegen.Library:
    """The target for a checkpoint's input normalisation, applied inside the library."""
    norm, size = ckpt.normalizer, math.prod(network.net.input)
    if norm.mode != "none" and math.prod(norm.shape) != size:
        raise InputError(f"the checkpoint's normalisation was fitted on inputs of shape "
                         f"{norm.shape}, but the network takes {network.net.input}")
    if norm.mode in ("pca", "zca"):
        return codegen.Library(prefix, "matrix", norm.mode, size, 1)
    stats = max(norm.mean.size, 1)
    return codegen.Library(prefix, norm.mode, norm.mode, stats, size // stats)


def normalization(ckpt: Checkpoint) -> np.ndarray:
    """The constants of <prefix>_normalization, as library_target's kind reads them."""
    norm = ckpt.normalizer
    parts = {"none": [], "mean": [norm.mean], "standard": [norm.mean, norm.scale],
             "pca": [norm.mean, norm.matrix], "zca": [norm.mean, norm.matrix]}[norm.mode]
    return np.concatenate([np.ravel(p) for p in parts]).astype(np.float32) if parts else \
        np.zeros(0, np.float32)


def export_c(ckpt: Checkpoint, network: Network, out: Path, *, prefix: str | None = None,
             tests: int = 10, batch: int = 1, threads: int = 1,
             inputs: np.ndarray | None = None, seed: int = 0) -> Export:
    """Write the library of `network` with the checkpoint's weights into `out`. `inputs`: raw
    samples for the self-test (the first `tests`), else uniform [0, 1) ones from `seed`."""
    prefix = check_prefix(prefix if prefix is not None else default_prefix(network))
    if bad := ckpt.nonfinite():
        raise DataError(f"{ckpt.path}: {bad[0]} holds NaN or infinite values: such weights "
                        f"cannot be exported", hint="export a checkpoint of a run that did not "
                                                    "diverge")
    for name, value, low in (("--tests", tests, 1), ("--batch", batch, 1),
                             ("--threads", threads, 1)):
        if not isinstance(value, int) or value < low or value > 1 << 16:
            raise InputError(f"{name} must be a whole number from {low} to 65,536, not {value}")
    net, shapes = network.net, network.shapes
    plan = memory.plan(net, shapes, batch, "float32", threads=threads, training=False,
                       standalone=True)
    library = library_target(ckpt, network, prefix)
    source = codegen.emit(net, shapes, plan, library)
    trained = load_trained(network, ckpt, batch=min(tests, 256))
    model = trained.model
    values = {**model.params, **model.buffers}
    weights = codegen.emit_weights(plan, library, values, normalization(ckpt))

    x = _test_inputs(inputs, tests, net.input, seed)
    y = np.concatenate([model.forward(trained.normalizer.apply(x[i:i + model.plan.batch]))
                        for i in range(0, len(x), model.plan.batch)]).reshape(len(x), -1)
    view = dict(prefix=codegen.env.Ident(prefix), PREFIX=codegen.env.Ident(prefix.upper()),
                tests=len(x), tolerance=codegen.env.Code(repr(TOLERANCE)),
                inputs=codegen.views.hex_floats(x), expected=codegen.views.hex_floats(y),
                batch=batch)
    texts = {f"{prefix}.h": source.header, f"{prefix}.c": source.text,
             f"{prefix}_weights.c": weights,
             f"{prefix}_test.c": render("targets/library_test.c.j2", view),
             "Makefile": render("targets/library.mk.j2", view),
             "README.md": render("targets/library.md.j2", view)}
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for name, text in texts.items():
        write_atomic(out / name, text.encode(), f"the exported {name}")
        files.append(out / name)
    return Export(tuple(files), prefix, plan.mem_size * 4, unshared_bytes(plan),
                  plan.weights_size * 4, len(x))


def unshared_bytes(plan: memory.Plan) -> int:
    """The arena of `plan` were nothing shared: every layer output (and the staged input) in a
    buffer of its own, and one scratch buffer for all layers."""
    align = memory.ALIGN_BYTES // 4
    pooled = plan.by_role("activations")
    outputs = sum(-(-b.size // align) * align for b in pooled if not b.name.endswith(".scratch"))
    scratch = max((-(-b.size // align) * align for b in pooled if b.name.endswith(".scratch")),
                  default=0)
    start, end = plan.region("activations")
    return (plan.mem_size - (end - start) + outputs + scratch) * 4


def _test_inputs(inputs: np.ndarray | None, tests: int, shape: tuple[int, ...],
                 seed: int) -> np.ndarray:
    if inputs is None:
        return np.random.default_rng(seed).random((tests, *shape), dtype=np.float32)
    x = np.asarray(inputs, dtype=np.float32)[:tests]
    return x.reshape(len(x), *shape)
