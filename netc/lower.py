"""syntax.Program + parameter overrides -> ir.Net: the flat, resolved layer sequence.

Evaluates parameters, applies `default`s, expands ( )*N, checks every argument's type and range,
and labels every layer. load_spec() is the entry point the rest of netc calls. Shapes are not
checked here: passes/shapes.py does that on the IR.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import os
from dataclasses import dataclass
from typing import Mapping

from . import ir
from . import syntax as s
from .errors import SpecError
from .parse import parse, read_source
from .span import Source, Span

MAX_LAYERS = 10_000  # a body expanding to more is refused before expanding it
MAX_INT = 2**31 - 1  # the generated C indexes with int
WHOLE_TOLERANCE = 1e-9  # 20*0.2 = 4.000000000000001 still counts as the whole number 4


def load_spec(source: str | os.PathLike, overrides: Mapping[str, float] | None = None) -> ir.Net:
    """A spec file (a path, or a str naming a file or ending in .net) or spec text -> ir.Net.

    `overrides` replaces declared parameters (`-D s=2` arrives as {"s": 2.0}). Raises SpecError.
    """
    return lower(parse(_read(source)), overrides)


def declared_params(source: str | os.PathLike) -> dict[str, float]:
    """Every `param` in the spec, as written, with its value when nothing is overridden."""
    lowering = _Lowering(parse(_read(source)), None)
    return {name: lowering.params[name.lower()] for name in lowering.param_names}


def lower(program: s.Program, overrides: Mapping[str, float] | None = None) -> ir.Net:
    return _Lowering(program, overrides).net()


def _read(source: str | os.PathLike) -> Source:
    if isinstance(source, os.PathLike):
        return read_source(source)
    if "\n" not in source and (source.strip().endswith(".net") or os.path.isfile(source)):
        return read_source(source)
    return Source("<string>", source)


# ---- layer signatures: argument names in positional order, how many may be positional


@dataclass(frozen=True, slots=True)
class _Sig:
    names: tuple[str, ...]
    positional: int
    aliases: tuple[tuple[str, str], ...] = ()  # (alias, argument name)


_WINDOW = (("k", "size"),)  # pools accept conv's k= for their window
SIGNATURES = {
    "conv": _Sig(("out", "k", "stride", "pad", "bias", "groups", "table", "act"), 2,
                 (("kernel", "k"),)),
    "pool": _Sig(("mode", "size", "stride", "pad"), 3, _WINDOW),
    "maxpool": _Sig(("size", "stride", "pad"), 2, _WINDOW),
    "avgpool": _Sig(("size", "stride", "pad"), 2, _WINDOW),
    "subsample": _Sig(("size", "stride", "act"), 2, _WINDOW),
    "gap": _Sig((), 0),
    "fc": _Sig(("units", "bias", "act"), 1),
    "relu": _Sig((), 0),
    "sigmoid": _Sig(("a",), 1),
    "tanh": _Sig(("a", "b"), 2),
    "softmax": _Sig(("units",), 1),
    "dropout": _Sig(("p",), 1),
    "batchnorm": _Sig(("eps", "momentum"), 2),
    "flatten": _Sig((), 0),
}
LAYER_ALIASES = {"bn": "batchnorm", "globalavgpool": "gap"}
LAYER_NAMES = tuple(SIGNATURES) + tuple(LAYER_ALIASES)

_AUTO_LABEL = {ir.Conv: "conv", ir.Pool: "pool", ir.Subsample: "subsample",
               ir.GlobalAvgPool: "gap", ir.FC: "fc", ir.Softmax: "softmax",
               ir.Dropout: "dropout", ir.BatchNorm: "bn", ir.Flatten: "flatten"}


@dataclass(frozen=True, slots=True)
class _Use:
    """One expanded occurrence of a call in the body."""

    call: s.Call
    label: str | None
    label_span: Span | None
    origin: tuple[int, ...]


class _Lowering:
    def __init__(self, program: s.Program, overrides: Mapping[str, float] | None):
        self.source = program.source
        self.statements = program.statements
        self.params: dict[str, float] = {}  # by lower-case name
        self.param_names: list[str] = []  # as declared, in order
        self.defaults: dict[str, s.DefaultStmt] = {}
        self.tables: dict[str, ir.Table] = {}
        self.seen = self._declare(overrides or {})  # the first of each statement kind, by kind

    # ---- statements

    def _declare(self, overrides: Mapping[str, float]) -> dict:
        declared = {st.name.lower() for st in self.statements if isinstance(st, s.ParamStmt)}
        for name, value in overrides.items():
            if name.lower() not in declared:
                have = ", ".join(st.name for st in self.statements
                                 if isinstance(st, s.ParamStmt)) or "none"
                raise SpecError(f"-D {name}: {self.source.name} declares no parameter '{name}' "
                                f"(declared: {have})")
            if not math.isfinite(value):
                raise SpecError(f"-D {name}={value}: not a finite number")
        given = {name.lower(): value for name, value in overrides.items()}
        seen: dict[str, s.Statement] = {}
        for st in self.statements:
            match st:
                case s.ParamStmt(name=name):
                    self._once(seen, ("param", name.lower()), st, f"parameter '{name}'")
                    value = given[name.lower()] if name.lower() in given else self._eval(st.expr)
                    self.params[name.lower()] = float(value)
                    self.param_names.append(name)
                case s.DefaultStmt(name=name):
                    self._once(seen, ("default", name.lower()), st, f"default for '{name}'")
                    self._bind(self._builtin(st.call), st.call, {})  # names now, values at use
                    self.defaults[name.lower()] = st
                case s.TableStmt(name=name, rows=rows):
                    self._once(seen, ("table", name.lower()), st, f"table '{name}'")
                    self.tables[name.lower()] = ir.Table(
                        name, tuple(tuple(c == "X" for c in row) for row in rows), st.span)
                case s.NetworkStmt() | s.InputStmt() | s.LossStmt():
                    word = type(st).__name__[:-4].lower()
                    self._once(seen, word, st, f"'{word}'")
                case s.BodyStmt():
                    first = seen.setdefault("body", st)
                    if first is not st:
                        raise SpecError(
                            f"a second body: the network's layers already began on line "
                            f"{first.span.line}", st.span,
                            hint="end the previous line with '-' to continue the chain on this one")
        return seen

    @staticmethod
    def _once(seen: dict, key, st: s.Statement, what: str) -> None:
        first = seen.setdefault(key, st)
        if first is not st:
            raise SpecError(f"{what} is already defined on line {first.span.line}", st.span)

    def net(self) -> ir.Net:
        body = self.seen.get("body")
        if body is None:
            raise SpecError("the spec has no layers", self.statements[-1].span,
                            hint="write the body as layers joined by '-', e.g. "
                                 "conv(6, k=5) - pool(max, 2) - softmax(10)")
        if "input" not in self.seen:
            raise SpecError("the spec has no 'input' statement", body.span,
                            hint="say what one sample is, e.g. `input 1x28x28` (C×H×W) or "
                                 "`input 784` (a vector)")
        self._check_size(body.chain)
        uses: list[_Use] = []
        self._expand(body.chain, (), uses)
        layers = self._label([layer for use in uses for layer in self._layers(use)])
        if not layers:
            raise SpecError("the body expands to no layers (every repetition is *0)", body.span)
        net_stmt = self.seen.get("network")
        return ir.Net(
            name=net_stmt.name if net_stmt else _stem(self.source.name),
            input=self._input(self.seen["input"]),
            layers=tuple(layers),
            loss=self._loss(self.seen.get("loss"), layers),
            params=tuple((name, self.params[name.lower()]) for name in self.param_names),
            source=self.source.text,
        )

    def _input(self, st: s.InputStmt) -> ir.Shape:
        if len(st.dims) not in (1, 3):
            raise SpecError(f"input has {len(st.dims)} sizes; give C×H×W (e.g. 1x28x28) or one "
                            f"vector size (e.g. 784)", st.size_span)
        for d in st.dims:
            _in_range(d, "an input size", 1, st.size_span)
        return st.dims if len(st.dims) == 3 else (st.dims[0], 1, 1)

    def _loss(self, st: s.LossStmt | None, layers: list[ir.AnyLayer]) -> str:
        ends_in_softmax = isinstance(layers[-1], ir.Softmax)
        if st is None:
            return "cross_entropy" if ends_in_softmax else "mse"
        name = st.name.lower()
        if name not in ir.LOSSES:
            raise SpecError(f"unknown loss '{st.name}'{_did_you_mean(name, ir.LOSSES)}", st.span,
                            hint="the losses are " + " and ".join(ir.LOSSES))
        if name == "cross_entropy" and not ends_in_softmax:
            raise SpecError("loss cross_entropy needs the network to end in softmax", st.span,
                            hint="end the body with softmax, or use `loss mse`")
        return name

    # ---- expansion of ( )*N

    def _repeat(self, term: s.Term) -> int:
        return self._whole(term.repeat, "a repetition count", 0)

    def _check_size(self, chain: s.Chain) -> int:
        total = 0
        for term in chain.terms:
            unit = 1 if isinstance(term.unit, s.Call) else self._check_size(term.unit.chain)
            total += unit * (1 if term.repeat is None else self._repeat(term))
            if total > MAX_LAYERS:
                raise SpecError(f"this expands to more than {MAX_LAYERS:,} layers", term.span,
                                hint="check the repetition counts (-D values included)")
        return total

    def _expand(self, chain: s.Chain, origin: tuple[int, ...], out: list[_Use]) -> None:
        for term in chain.terms:
            if term.label is not None and isinstance(term.unit, s.Group):
                raise SpecError("a label names one layer, not a group", term.label_span,
                                hint="put the label on a layer inside the parentheses")
            copies = [origin] if term.repeat is None else \
                [origin + (i,) for i in range(1, self._repeat(term) + 1)]
            for where in copies:
                if isinstance(term.unit, s.Group):
                    self._expand(term.unit.chain, where, out)
                else:  # a label inside repetitions gets the copy numbers: c_1, c_2, ...
                    label = term.label and term.label + "".join(f"_{i}" for i in where)
                    out.append(_Use(term.unit, label, term.label_span, where))

    def _label(self, layers: list[tuple[ir.AnyLayer, str | None, Span | None]]):
        """Unlabelled layers get kind + count among all layers of that kind (conv1, conv2, ...);
        every final label must be unique, compared ignoring case."""
        counts: dict[str, int] = {}
        labels = []
        for layer, label, _ in layers:
            kind = _AUTO_LABEL.get(type(layer)) or layer.fn.kind
            counts[kind] = counts.get(kind, 0) + 1
            labels.append(label or f"{kind}{counts[kind]}")
        owner: dict[str, int] = {}
        for i, label in enumerate(labels):
            j = owner.setdefault(label.lower(), i)
            if j != i:
                # At least one of the two is the user's; blame that one.
                user = i if layers[i][1] is not None else j
                other = j if user == i else i
                how = "an earlier layer's label" if layers[other][1] else \
                    f"the automatic label of layer {other + 1}, which has no label of its own"
                raise SpecError(f"label '{labels[user]}' is already {how}", layers[user][2],
                                hint=None if layers[other][1] else "label that layer too, or "
                                "choose another label")
        return [dataclasses.replace(layer, label=labels[i])
                for i, (layer, _, _) in enumerate(layers)]

    # ---- one call -> IR layers

    def _resolve(self, call: s.Call) -> tuple[str, dict[str, s.Argument], Span]:
        """The builtin layer a call means, and its arguments: the default's, then the call's."""
        name = call.name.lower()
        args: dict[str, s.Argument] = {}
        if name in self.defaults:
            base = self.defaults[name].call
            kind = self._builtin(base)
            self._bind(kind, base, args)
        else:
            kind = self._builtin(call, tuple(self.defaults))
        self._bind(kind, call, args)
        return kind, args, call.span

    def _builtin(self, call: s.Call, defaults: tuple[str, ...] = ()) -> str:
        """The built-in layer `call` names; `defaults` are the other names it could have meant."""
        name = call.name.lower()
        name = LAYER_ALIASES.get(name, name)
        if name not in SIGNATURES:
            known = LAYER_NAMES + defaults
            raise SpecError(f"unknown layer '{call.name}'{_did_you_mean(name, known)}",
                            _name_span(call), hint="the layers are " + ", ".join(SIGNATURES))
        return name

    def _bind(self, kind: str, call: s.Call, into: dict[str, s.Argument]) -> None:
        sig = SIGNATURES[kind]
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
                        f"{kind} has no argument '{arg.name}'{_did_you_mean(name, sig.names)}",
                        arg.span, hint=f"{kind} takes " + (", ".join(sig.names) or "no arguments"))
            if name in given:
                raise SpecError(f"argument '{name}' is given twice", arg.span)
            given.add(name)
            into[name] = arg

    def _layers(self, use: _Use) -> list[tuple[ir.AnyLayer, str | None, Span | None]]:
        kind, args, span = self._resolve(use.call)
        a = _Args(self, kind, args, span)
        common = dict(label="", span=span, origin=use.origin)
        match kind:
            case "conv":
                table = a.table("table")
                if table is not None and "groups" in args:
                    raise SpecError("conv takes either a table or groups, not both",
                                    args["groups"].span)
                kernel = a.pair("k", None, 1)
                layers = [ir.Conv(
                    out_channels=a.count("out", table.out_channels if table else None),
                    kernel=kernel, stride=a.pair("stride", (1, 1), 1),
                    pad=a.pad(kernel), bias=a.flag("bias", True),
                    groups=a.whole("groups", 1, 1), table=table, act=a.act("act"), **common)]
            case "pool" | "maxpool" | "avgpool":
                mode = a.keyword("mode", ("max", "avg"), None) if kind == "pool" else kind[:3]
                size = a.pair("size", None, 1)
                layers = [ir.Pool(mode=mode, kernel=size, stride=a.pair("stride", size, 1),
                                  pad=a.pair("pad", (0, 0), 0), **common)]
            case "subsample":
                size = a.pair("size", None, 1)
                layers = [ir.Subsample(kernel=size, stride=a.pair("stride", size, 1),
                                       act=a.act("act"), **common)]
            case "gap":
                layers = [ir.GlobalAvgPool(**common)]
            case "fc":
                layers = [ir.FC(units=a.count("units", None), bias=a.flag("bias", True),
                                act=a.act("act"), **common)]
            case "relu" | "sigmoid" | "tanh":
                layers = [ir.Act(fn=a.activation(kind), **common)]
            case "softmax":  # softmax(n): the classifier's weights, then the softmax itself
                units = a.count("units", 0)
                layers = [ir.FC(units=units, **common)] if units else []
                layers.append(ir.Softmax(**common))
            case "dropout":
                layers = [ir.Dropout(p=a.number("p", 0.5, 0.0, 1.0, high_open=True), **common)]
            case "batchnorm":
                layers = [ir.BatchNorm(eps=a.number("eps", 1e-5, 0.0, None, low_open=True),
                                       momentum=a.number("momentum", 0.1, 0.0, 1.0), **common)]
            case "flatten":
                layers = [ir.Flatten(**common)]
        # The user's label names the first layer (the one with the weights, for softmax(n)).
        return [(layer, use.label if i == 0 else None, use.label_span)
                for i, layer in enumerate(layers)]

    # ---- values

    def _eval(self, e: s.Expr) -> float:
        match e:
            case s.Number(value=value):
                if not math.isfinite(value):
                    raise SpecError("number is too large", e.span)
                return value
            case s.Ref(name=name):
                if name.lower() in self.params:
                    return self.params[name.lower()]
                later = next((st for st in self.statements if isinstance(st, s.ParamStmt)
                              and st.name.lower() == name.lower()), None)
                hint = f"'{name}' is declared later, on line {later.span.line}; declare it " \
                       f"before this use" if later else None
                raise SpecError(f"undefined parameter '{name}'"
                                f"{_did_you_mean(name.lower(), self.params)}", e.span, hint=hint)
            case s.Negate(operand=operand):
                return -self._eval(operand)
            case s.Arith(first=first, rest=rest):
                value = self._eval(first)
                for op, operand in rest:
                    rhs = self._eval(operand)
                    match op:
                        case "+":
                            value += rhs
                        case "-":
                            value -= rhs
                        case "*":
                            value *= rhs
                        case "/" if rhs == 0:
                            raise SpecError("division by zero", operand.span)
                        case "/":
                            value /= rhs
                if not math.isfinite(value):
                    raise SpecError("the value is too large", e.span)
                return value
        raise SpecError("expected a number", e.span)

    def _whole(self, e: s.Value, what: str, minimum: int) -> int:
        if not isinstance(e, (s.Number, s.Ref, s.Negate, s.Arith)):
            raise SpecError(f"{what} must be a number", e.span)
        value = self._eval(e)
        n = round(value)
        if abs(value - n) > WHOLE_TOLERANCE:
            raise SpecError(f"{what} must be a whole number, not {_fmt(value)}", e.span)
        return _in_range(n, what, minimum, e.span)

    def _table(self, e: s.Value) -> ir.Table:
        if not isinstance(e, s.Ref):
            raise SpecError("table= takes the name of a table", e.span)
        if e.name.lower() not in self.tables:
            raise SpecError(f"undefined table '{e.name}'{_did_you_mean(e.name, self.tables)}",
                            e.span, hint="define it with `table NAME { ... }`")
        return self.tables[e.name.lower()]


class _Args:
    """The arguments of one layer call, each checked and converted on request."""

    def __init__(self, lowering: _Lowering, kind: str, args: dict[str, s.Argument], span: Span):
        self.lowering, self.kind, self.args, self.span = lowering, kind, args, span

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
        value = self.lowering._eval(e)
        if value < 0:
            raise SpecError(f"{what} must be positive, not {_fmt(value)}", e.span)
        n = math.floor(value + 0.5)
        if n < 1:
            raise SpecError(f"{what} is {_fmt(value)}, which rounds to 0", e.span,
                            hint="a count must come out at least 0.5 (it is rounded to 1)")
        return _in_range(n, what, 1, e.span)

    def whole(self, name: str, default: int, minimum: int) -> int:
        e = self._get(name, default)
        return e if isinstance(e, int) else \
            self.lowering._whole(e, f"{self.kind} {name}", minimum)

    def pair(self, name: str, default: ir.Pair | None, minimum: int) -> ir.Pair:
        """A size written n (square) or hxw."""
        e = self._get(name, default)
        if isinstance(e, tuple):
            return e
        if isinstance(e, s.Dims):
            if len(e.values) != 2:
                raise SpecError(f"{self.kind} {name} takes one size or two (height×width), "
                                f"not {len(e.values)}", e.span)
            h, w = (_in_range(v, f"{self.kind} {name}", minimum, e.span) for v in e.values)
            return (h, w)
        n = self.lowering._whole(e, f"{self.kind} {name}", minimum)
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
        value = self.lowering._eval(e)
        below = value <= low if low_open else value < low
        above = high is not None and (value >= high if high_open else value > high)
        if below or above:
            where = (f"{'(' if low_open else '['}{_fmt(low)}, "
                     f"{_fmt(high) + (')' if high_open else ']') if high is not None else '∞)'}")
            raise SpecError(f"{self.kind} {name} must be in {where}, not {_fmt(value)}", e.span)
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
        return self.lowering._table(self.args[name].value) if name in self.args else None

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
                            (_did_you_mean(e.name.lower(), ("relu", "sigmoid", "tanh", "none"))
                             if isinstance(e, s.Call) else ""), e.span)
        kind = e.name.lower()
        args: dict[str, s.Argument] = {}
        self.lowering._bind(kind, e, args)
        return _Args(self.lowering, kind, args, e.span).activation(kind)

    def activation(self, kind: str) -> ir.Activation:
        if kind == "relu":
            return ir.Activation("relu")
        a = self.number("a", 1.0, 0.0, None, low_open=True)
        b = self.number("b", 1.0, 0.0, None, low_open=True) if kind == "tanh" else 1.0
        return ir.Activation(kind, a, b)


_EXAMPLES = {"conv": "conv(32, k=3)", "pool": "pool(max, 2)", "maxpool": "maxpool(2)",
             "avgpool": "avgpool(2)", "subsample": "subsample(2)", "fc": "fc(120)"}


def _in_range(n: int, what: str, minimum: int, span: Span) -> int:
    if n < minimum:
        raise SpecError(f"{what} must be at least {minimum}, not {n}", span)
    if n > MAX_INT:
        raise SpecError(f"{what} is absurdly large ({_fmt(n)}; at most {MAX_INT:,})", span)
    return n


def _fmt(x: float) -> str:
    return f"{float(x):.10g}"


def _did_you_mean(name: str, known) -> str:
    close = difflib.get_close_matches(name.lower(), list(known), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def _name_span(call: s.Call) -> Span:
    sp = call.span
    return Span(sp.source, sp.line, sp.col, sp.line, sp.col + len(call.name))


def _stem(name: str) -> str:
    base = os.path.basename(name)
    return base[:-4] if base.endswith(".net") else "net"
