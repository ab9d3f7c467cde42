"""Check a compiled network's gradients against central finite differences (`netc gradcheck`).

For every parameter tensor and for the input, the analytic gradient from `loss_and_grad` is
compared with (L(θ + h) − L(θ − h)) / 2h on random data in the float64 build. The error of a
tensor is max|analytic − numeric| / max(|analytic|, |numeric|) over its checked coordinates:
relative to the tensor's scale, so tiny entries swamped by rounding noise do not dominate. The
scale is floored at noise / RESOLUTION, where noise = NOISE_ULPS · ε · max(|L|, 1) / h bounds the
rounding error of a difference quotient: a tensor whose gradients are smaller than that cannot be
checked to RESOLUTION relative error, and one that is exactly zero in theory (a conv bias before
batch normalisation) is then checked to within that noise rather than failing on it.

Kinks (relu at 0, max pool where two window entries are nearly tied) make L non-differentiable at
a few coordinates; there the central difference averages two slopes and disagrees with the true
one-sided derivative. Each coordinate also yields the one-sided slopes (L(θ+h) − L(θ)) / h and
(L(θ) − L(θ−h)) / h. At a smooth point they differ by about h·|L''| plus rounding noise; when a
kink lies within ±h they differ by a good part of the jump in slope, which is of the order of the
gradients themselves, and |analytic − central| is at most half of that gap. So a coordinate that
fails the tolerance is excused, counted as a kink and left out of the error, only when its
one-sided slopes differ by at least |analytic − central| and by more than KINK_GAP of the
tensor's scale; a wrong gradient at a smooth point cannot hide this way. Random continuous data
and parameters (each nudged off its initial value, so zero biases and unit scales are not special
points) make kinks rare: one in the 2,300 coordinates the layer tests check (a near-tie in
LeNet-5's max pool, where the analytic value matched the one-sided slope to 1e-7).

Dropout draws its masks from a seeded generator in C: the generator is re-seeded before every
evaluation, so all of them see the same mask and the loss is a fixed smooth function.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InputError

DEFAULT_TOL = 1e-6
DEFAULT_STEP = 1e-6  # float64: truncation ~h²·L''' and rounding ~1e-16·|L|/h both ≪ 1e-6
NOISE_ULPS = 32  # measured: difference quotients of LeNet-5-sized losses stray ≤ ~8 ε|L|/h
RESOLUTION = 1e-6  # the relative error float64 central differences resolve at the noise floor
KINK_GAP = 1e-3  # one-sided slopes further apart than this (× scale) straddle a kink
DEFAULT_COORDS = 24  # coordinates checked per tensor (all of them when the tensor is smaller)
INPUT = "input"


@dataclass(frozen=True)
class TensorCheck:
    name: str  # "<label>.weight", or "input"
    layer: str  # the layer label, or "input"
    kind: str  # the layer kind, e.g. "conv"
    checked: int  # coordinates compared
    kinks: int  # coordinates excused as lying within h of a kink
    error: float  # worst relative error over the compared coordinates


@dataclass(frozen=True)
class Report:
    tensors: tuple[TensorCheck, ...]
    tol: float

    @property
    def worst(self) -> float:
        return max((t.error for t in self.tensors), default=0.0)

    @property
    def ok(self) -> bool:
        return self.worst <= self.tol

    def per_layer(self) -> dict[str, float]:
        """The worst relative error of each layer (and of the input), in network order."""
        out: dict[str, float] = {}
        for t in self.tensors:
            out[t.layer] = max(out.get(t.layer, 0.0), t.error)
        return out

    def format(self) -> str:
        """An aligned table, one row per layer with parameters and one for the input."""
        rows = [("layer", "kind", "tensors", "checked", "kinks", "rel. error", "")]
        for layer in self.per_layer():
            ts = [t for t in self.tensors if t.layer == layer]
            err = max(t.error for t in ts)
            rows.append((layer, ts[0].kind, ", ".join(t.name.rsplit(".", 1)[-1] for t in ts),
                         str(sum(t.checked for t in ts)), str(sum(t.kinks for t in ts)),
                         f"{err:.2e}", "ok" if err <= self.tol else "FAIL"))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        right = {3, 4, 5}
        lines = ["  ".join(c.rjust(w) if i in right else c.ljust(w)
                           for i, (c, w) in enumerate(zip(r, widths))).rstrip() for r in rows]
        verdict = "ok" if self.ok else "FAILED"
        lines.append(f"worst relative error {self.worst:.2e} (tolerance {self.tol:.0e}): {verdict}")
        return "\n".join(lines)


def gradcheck(network_or_model, seed: int = 0, *, batch: int = 3, tol: float = DEFAULT_TOL,
              step: float = DEFAULT_STEP, coords: int | None = DEFAULT_COORDS, flags=None,
              x: np.ndarray | None = None, y: np.ndarray | None = None) -> Report:
    """Build the float64 variant of a Network (or take a float64 Model) and check the gradient
    of every parameter tensor and of the input. The parameters are re-initialised (init(seed),
    then nudged); x and y are random unless given. coords=None checks every coordinate."""
    model = network_or_model
    if hasattr(model, "compile"):
        model = model.compile(batch=batch, dtype="float64", flags=flags)
    if np.dtype(model.dtype) != np.float64:
        raise InputError("gradcheck needs the float64 build: compile(..., dtype='float64')")
    net = model.net
    rng = np.random.default_rng(seed)
    model.init(seed)
    for p in model.params.values():
        p += rng.normal(0.0, 0.1 * max(float(p.std()), 0.1), p.shape)
    n = min(batch, model.batch)
    x = rng.normal(size=(n, *net.input)) if x is None else np.array(x, dtype=np.float64)
    if y is None:
        out = model.forward(x)
        y = (rng.integers(0, out[0].size, len(x)).astype(np.int32)
             if net.loss == "cross_entropy" else rng.normal(size=out.shape))

    def loss():
        model.seed(seed)  # the same dropout masks in every evaluation
        return float(model.loss_and_grad(x, y))

    model.seed(seed)
    model.loss_and_grad(x, y, input_grad=True)
    analytic = {name: g.copy() for name, g in model.grads.items()}
    analytic[INPUT] = np.array(model.input_grad, dtype=np.float64).reshape(x.shape)
    base = loss()
    kinds = {layer.label: layer.kind for layer in net.layers}
    checks = []
    for name, arr in [*model.params.items(), (INPUT, x)]:
        picked = _pick(arr.size, coords, rng)
        flat = arr.reshape(-1)  # a view: writing it perturbs the model (or x)
        numeric = np.empty((len(picked), 3))  # L(+h), L(-h), then the analytic value
        for row, i in enumerate(picked):
            old = flat[i]
            flat[i] = old + step
            up = loss()
            flat[i] = old - step
            down = loss()
            flat[i] = old
            numeric[row] = up, down, analytic[name].reshape(-1)[i]
        layer = INPUT if name == INPUT else name.rsplit(".", 1)[0]
        checks.append(_compare(name, layer, kinds.get(layer, ""), numeric, base, step, tol))
    return Report(tuple(checks), tol)


def _pick(size: int, coords: int | None, rng: np.random.Generator) -> np.ndarray:
    if coords is None or size <= coords:
        return np.arange(size)
    return np.sort(rng.choice(size, coords, replace=False))


def _compare(name, layer, kind, numeric, base, step, tol) -> TensorCheck:
    up, down, analytic = numeric.T
    central = (up - down) / (2 * step)
    one_sided_gap = np.abs((up - base) / step - (base - down) / step)
    diff = np.abs(analytic - central)
    noise = NOISE_ULPS * np.finfo(np.float64).eps * max(abs(base), 1.0) / step
    scale = max(float(np.abs(analytic).max(initial=0.0)),
                float(np.abs(central).max(initial=0.0)), noise / RESOLUTION)
    kink = (diff > tol * scale) & (one_sided_gap >= diff) & (one_sided_gap > KINK_GAP * scale)
    error = float((diff[~kink] / scale).max(initial=0.0))
    return TensorCheck(name, layer, kind, int((~kink).sum()), int(kink.sum()), error)
