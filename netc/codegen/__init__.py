"""IR + shapes + memory plan → C source text and the cffi declarations it exports.

Pure and deterministic: the same inputs give the same bytes (no timestamps, no paths, no dict-order
surprises). Never compiles, never touches cffi: netc.build takes the CSource from here.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import ir
from ..passes.memory import Plan
from ..passes.shapes import Shapes
from .env import Code, render
from .views import ABI_VERSION, LIBRARY_ENTRIES, Library, net_view, weights_view

# The same for every network and dtype, so the Python runtime never changes with the network:
# real arrays travel as void* (float or double, per netc_real_size()).
CDEF = """\
int netc_abi_version(void);
int netc_real_size(void);
long long netc_mem_size(void);
long long netc_imem_size(void);
int netc_max_batch(void);
void netc_seed(int* imem, unsigned long long seed);
void netc_forward(void* mem, int* imem, const void* x, int B, int train);
double netc_loss_and_grad(void* mem, int* imem, const void* x, const int* labels,
                          const void* targets, int B, int train, int want_dx);
void netc_update(void* mem, int* imem, double lr, double momentum, double weight_decay,
                 double beta1, double beta2, double eps);
double netc_train_step(void* mem, int* imem, const void* x, const int* labels,
                       const void* targets, int B, double lr, double momentum,
                       double weight_decay, double beta1, double beta2, double eps);
void netc_set_threads(int* imem, int threads);
int netc_parts(void);
int netc_profile(double* seconds, int reset);
"""
# An inference build (a plan with training=False: docs/design.md, "Targets") exports the
# forward and what describes it; netc_forward's `train` is ignored there.
INFERENCE_ENTRIES = ("netc_abi_version", "netc_real_size", "netc_mem_size", "netc_imem_size",
                     "netc_max_batch", "netc_forward", "netc_set_threads", "netc_parts",
                     "netc_profile")
INFERENCE_CDEF = "".join(line + ";\n" for line in
                         (d.strip() for d in CDEF.split(";")) if line and
                         line.split("(")[0].split()[-1].lstrip("*") in INFERENCE_ENTRIES)


@dataclass(frozen=True, slots=True)
class CSource:
    text: str  # the complete C translation unit
    cdef: str  # its exported declarations for cffi (CDEF, or a library's three functions)
    header: str  # its C header: netc.h for `netc compile -o`, <prefix>.h for a library
    name: str  # the network's name (a library's prefix), a C identifier


def emit(net: ir.Net, shapes: Shapes, plan: Plan, library: Library | None = None) -> CSource:
    """The C of a build. The targets (templates/targets/) differ only in their entry points: a
    training build for netc's runtime; an inference build (a plan with training=False), the same
    templates without backward, loss, optimizer and their entry points; a standalone library
    (a standalone plan and its `library`), the inference build with the weights outside the
    arena and prefixed entry points of its own."""
    if plan.standalone != (library is not None):
        raise ValueError("a standalone plan and a library target go together")
    view = net_view(net, shapes, plan, library)
    parts = [render("prelude.h.j2", view)]
    parts += [render(lv["template"], view, l=lv) for lv in view["layers"]]
    if plan.training:
        parts.append(render(view["loss_template"], view))
    parts.append(render("net.c.j2", view))
    if library is not None:
        parts.append(render("targets/library.c.j2", view))
        header = render("targets/library.h.j2", view)
        cdef = "".join(f"int {library.prefix}_{fn};\n" for fn in LIBRARY_ENTRIES)
        return CSource("\n".join(parts), cdef, header, library.prefix)
    cdef = CDEF if plan.training else INFERENCE_CDEF
    parts.append(render("targets/runtime.c.j2", view))
    header = render("targets/runtime.h.j2", view, cdef=Code(cdef))
    return CSource("\n".join(parts), cdef, header, str(view["ident"]))


def emit_weights(plan: Plan, library: Library, values: dict[str, np.ndarray],
                 normalization: np.ndarray) -> str:
    """<prefix>_weights.c: every buffer of the plan's `weights` arena from `values` (by buffer
    name), the alignment gaps zero, then the input normalisation's constants, as bytes."""
    return render("targets/library_weights.c.j2",
                  weights_view(plan, library, values, normalization))


__all__ = ["ABI_VERSION", "CDEF", "INFERENCE_CDEF", "CSource", "Library", "emit", "emit_weights"]
