"""What each built-in layer takes, and one call's checked arguments -> its IR layers.

SIGNATURES names every layer's arguments; bind_args() matches a call's arguments to them, and
build_layers() checks each one's type and range, rounds counts, fills in the defaults and builds
the layers the call stands for.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from . import ir
from . import syntax as s
from .errors import SpecError, did_you_mean
from .span import Span
from .values import Scope, format_number, in_range

# ---- layer signatures: argument names in positional order, how many may be positional


@dataclass(frozen=True, slots=True)
class Signature:
    names: tuple[str, ...]
    positional: int
    aliases: tuple[tuple[str, str], ...] = ()  # (alias, argument name)


_WINDOW = (("k", "size"),)  # pools accept conv's k= for their window
SIGNATURES = {
    "conv": Signature(("out", "k", "stride", "pad", "bias", "groups", "table", "act"), 2,
                 (("kernel", "k"),)),
    "pool": Signature(("mode", "size", "stride", "pad"), 3, _WINDOW),
    "maxpool": Signature(("size", "stride", "pad"), 2, _WINDOW),
    "avgpool": Signature(("size", "stride", "pad"), 2, _WINDOW),
    "subsample": Signature(("size", "stride", "act"), 2, _WINDOW),
    "gap": Signature((), 0),
    "fc": Signature(("units", "bias", "act"), 1),
    "relu": Signature((), 0),
    "sigmoid": Signature(("a",), 1),
    "tanh": Signature(("a", "b"), 2),
    "softmax": Signature(("units",), 1),
    "dropout": Signature(("p",), 1),
    "batchnorm": Signature(("eps", "momentum"), 2),
    "flatten": Signature((), 0),
}
LAYER_ALIASES = {"bn": "batchnorm", "globalavgpool": "gap"}
LAYER_NAMES = tuple(SIGNATURES) + tuple(LAYER_ALIASES)

_EXAMPLES = {"conv": "conv(32, k=3)", "pool": "pool(max, 2)", "maxpool": "maxpool(2)",
             "avgpool": "avgpool(2)", "subsample": "subsample(2)", "fc": "fc(120)"}


def builtin_kind(call: s.Call, defaults: tuple[str, ...] = ()) -> str:
    """The built-in layer `call` names; `defaults` are the other names it could have meant."""
    name = call.name.lower()
    name = LAYER_ALIASES.get(name, name)
    if name not in SIGNATURES:
        known = LAYER_NAMES + defaults
        raise SpecError(f"unknown layer '{call.name}'{did_you_mean(name, known)}",
                        _name_span(call), hint="the layers are " + ", ".join(SIGNATURES))
    return name


def bind_args(kind: str, call: s.Call, into: dict[str, s.Argument],
              sig: Signature | None = None) -> None:
    """Adds the call's arguments to `into` by argument name (a later call overrides a default).
    `sig` is a built-in layer's by default; a block call gives its block's (kind: "block b")."""
    sig = sig or SIGNATURES[kind]
    aliases = dict(sig.aliases)
    given: set[str] = set()
    for i, arg in enumerate(call.args):
        if arg.name is None:
            if i and call.args[i - 1].name is not None:
                raise SpecError("a positional argument cannot follow a named one", arg.span)
            if i >= sig.positional:
                takes = (f"at most {sig.positional} positional argument"
                         f"{'s' if sig.positional != 1 else ''} "
                         f"({', '.join(sig.names[:sig.positional])})"
                         if sig.positional else "no arguments")
                raise SpecError(f"{kind} takes {takes}", arg.span,
                                hint=f"name the others: {', '.join(sig.names)}"
                                if sig.names[sig.positional:] else None)
            name = sig.names[i]
        else:
            name = arg.name.lower()
            name = aliases.get(name, name)
            if name not in sig.names:
                raise SpecError(
                    f"{kind} has no argument '{arg.name}'{did_you_mean(name, sig.names)}",
                    arg.span, hint=f"{kind} takes " + (", ".join(sig.names) or "no arguments"))
        if name in given:
            raise SpecError(f"argument '{name}' is given twice", arg.span)
        given.add(name)
        into[name] = arg


def build_layers(kind: str, args: dict[str, s.Argument], span: Span, origin: tuple[int, ...],
                 scope: Scope) -> list[ir.AnyLayer]:
    """The IR layers of one call, labels left empty. Each argument is checked when it is read,
    so the order below decides which of several bad arguments is reported."""
    a = _Args(scope, kind, args, span)
    common = dict(label="", span=span, origin=origin)
    match kind:
        case "conv":
            table = a.table("table")
            if table is not None and "groups" in args:
                raise SpecError("conv takes either a table or groups, not both",
                                args["groups"].span)
            kernel = a.pair("k", None, 1)
            return [ir.Conv(
                out_channels=a.count("out", table.out_channels if table else None),
                kernel=kernel, stride=a.pair("stride", (1, 1), 1),
                pad=a.pad(kernel), bias=a.flag("bias", True),
                groups=a.whole("groups", 1, 1), table=table, act=a.act("act"), **common)]
        case "pool" | "maxpool" | "avgpool":
            mode = a.keyword("mode", ("max", "avg"), None) if kind == "pool" else kind[:3]
            size = a.pair("size", None, 1)
            return [ir.Pool(mode=mode, kernel=size, stride=a.pair("stride", size, 1),
                            pad=a.pair("pad", (0, 0), 0), **common)]
        case "subsample":
            size = a.pair("size", None, 1)
            return [ir.Subsample(kernel=size, stride=a.pair("stride", size, 1),
                                 act=a.act("act"), **common)]
        case "gap":
            return [ir.GlobalAvgPool(**common)]
        case "fc":
            return [ir.FC(units=a.count("units", None), bias=a.flag("bias", True),
                          act=a.act("act"), **common)]
        case "relu" | "sigmoid" | "tanh":
            return [ir.Act(fn=a.activation(kind), **common)]
        case "softmax":  # softmax(n): the classifier's weights, then the softmax itself
            units = a.count("units", 0)
            return ([ir.FC(units=units, **common)] if units else []) + [ir.Softmax(**common)]
        case "dropout":
            return [ir.Dropout(p=a.number("p", 0.5, 0.0, 1.0, high_open=True), **common)]
        case "batchnorm":
            return [ir.BatchNorm(eps=a.number("eps", 1e-5, 0.0, None, low_open=True),
                                 momentum=a.number("momentum", 0.1, 0.0, 1.0), **common)]
        case "flatten":
            return [ir.Flatten(**common)]


class _Args:
    """The arguments of one layer call, each checked and converted on request."""

    def __init__(self, scope: Scope, kind: str, args: dict[str, s.Argument], span: Span):
        self.scope, self.kind, self.args, self.span = scope, kind, args, span

    def _get(self, name: str, default):
        if name in self.args:
            return self.args[name].value
        if default is None:
            raise SpecError(f"{self.kind} needs the argument '{name}'", self.span,
                            hint=f"e.g. {_EXAMPLES.get(self.kind, self.kind)}")
        return default

    def count(self, name: str, default: int | None) -> int:
        """A channel or unit count: rounded half away from zero, then at least 1."""
        e = self._get(name, default)
        if isinstance(e, int):
            return e
        what = f"{self.kind} {name}"
        if not isinstance(e, (s.Number, s.Ref, s.Negate, s.Arith)):
            raise SpecError(f"{what} must be a number", e.span)
        value = self.scope.eval(e)
        if value < 0:
            raise SpecError(f"{what} must be positive, not {format_number(value)}", e.span)
        n = math.floor(value + 0.5)
        if n < 1:
            raise SpecError(f"{what} is {format_number(value)}, which rounds to 0", e.span,
                            hint="a count must come out at least 0.5 (it is rounded to 1)")
        return in_range(n, what, 1, e.span)

    def whole(self, name: str, default: int, minimum: int) -> int:
        e = self._get(name, default)
        return e if isinstance(e, int) else self.scope.whole(e, f"{self.kind} {name}", minimum)

    def pair(self, name: str, default: ir.Pair | None, minimum: int) -> ir.Pair:
        """A size written n (square) or hxw."""
        e = self._get(name, default)
        if isinstance(e, tuple):
            return e
        if isinstance(e, s.Dims):
            if len(e.values) != 2:
                raise SpecError(f"{self.kind} {name} takes one size or two (height×width), "
                                f"not {len(e.values)}", e.span)
            h, w = (in_range(v, f"{self.kind} {name}", minimum, e.span) for v in e.values)
            return (h, w)
        n = self.scope.whole(e, f"{self.kind} {name}", minimum)
        return (n, n)

    def pad(self, kernel: ir.Pair) -> ir.Pair:
        e = self.args.get("pad")
        if isinstance(e and e.value, s.Ref) and e.value.name.lower() == "same":
            if kernel[0] % 2 == 0 or kernel[1] % 2 == 0:
                raise SpecError(f"pad=same needs an odd kernel, not {kernel[0]}×{kernel[1]}",
                                e.value.span, hint="give the padding as a number instead")
            return ((kernel[0] - 1) // 2, (kernel[1] - 1) // 2)
        return self.pair("pad", (0, 0), 0)

    def number(self, name: str, default: float, low: float, high: float | None,
               low_open: bool = False, high_open: bool = False) -> float:
        e = self._get(name, default)
        if isinstance(e, float):
            return e
        if not isinstance(e, (s.Number, s.Ref, s.Negate, s.Arith)):
            raise SpecError(f"{self.kind} {name} must be a number", e.span)
        value = self.scope.eval(e)
        below = value <= low if low_open else value < low
        above = high is not None and (value >= high if high_open else value > high)
        if below or above:
            upper = format_number(high) + (")" if high_open else "]") if high is not None else "∞)"
            where = f"{'(' if low_open else '['}{format_number(low)}, {upper}"
            raise SpecError(f"{self.kind} {name} must be in {where}, not {format_number(value)}",
                            e.span)
        return value

    def keyword(self, name: str, choices: tuple[str, ...], default: str | None) -> str:
        e = self._get(name, default)
        if isinstance(e, str):
            return e
        if not isinstance(e, s.Ref) or e.name.lower() not in choices:
            raise SpecError(f"{self.kind} {name} must be " + " or ".join(choices), e.span,
                            hint=f"e.g. {_EXAMPLES[self.kind]}")
        return e.name.lower()

    def flag(self, name: str, default: bool) -> bool:
        e = self._get(name, default)
        if isinstance(e, bool):
            return e
        if not isinstance(e, s.Ref) or e.name.lower() not in ("on", "off", "true", "false"):
            raise SpecError(f"{self.kind} {name} must be on or off", e.span)
        return e.name.lower() in ("on", "true")

    def table(self, name: str) -> ir.Table | None:
        return self.scope.table(self.args[name].value) if name in self.args else None

    def act(self, name: str) -> ir.Activation | None:
        """act=relu | sigmoid | sigmoid(a) | tanh | tanh(a, b) | none."""
        if name not in self.args:
            return None
        e = self.args[name].value
        if isinstance(e, s.Ref) and e.name.lower() == "none":
            return None
        if isinstance(e, s.Ref):
            e = s.Call(e.name, (), True, e.span)
        if not isinstance(e, s.Call) or e.name.lower() not in ("relu", "sigmoid", "tanh"):
            raise SpecError(f"{self.kind} act must be relu, sigmoid, tanh or none" +
                            (did_you_mean(e.name.lower(), ("relu", "sigmoid", "tanh", "none"))
                             if isinstance(e, s.Call) else ""), e.span)
        kind = e.name.lower()
        args: dict[str, s.Argument] = {}
        bind_args(kind, e, args)
        return _Args(self.scope, kind, args, e.span).activation(kind)

    def activation(self, kind: str) -> ir.Activation:
        if kind == "relu":
            return ir.Activation("relu")
        a = self.number("a", 1.0, 0.0, None, low_open=True)
        b = self.number("b", 1.0, 0.0, None, low_open=True) if kind == "tanh" else 1.0
        return ir.Activation(kind, a, b)


def _name_span(call: s.Call) -> Span:
    sp = call.span
    return Span(sp.source, sp.line, sp.col, sp.line, sp.col + len(call.name))
