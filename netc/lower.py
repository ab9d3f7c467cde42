"""syntax.Program + parameter overrides -> ir.Net: the flat, resolved layer sequence.

Evaluates parameters, applies `default`s, expands ( )*N, and labels every layer; layer_args.py
checks each call's arguments and values.py each expression. load_spec() is the entry point the
rest of netc calls. Shapes are not checked here: passes/shapes.py does that on the IR.
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Mapping

from . import ir
from . import syntax as s
from .errors import SpecError
from .layer_args import bind_args, build_layers, builtin_kind
from .parse import name_problem, parse, read_source
from .span import Source, Span, escape
from .values import MAX_INT, Scope, did_you_mean, in_range

# A body expanding to more is refused before expanding it. The bound is compile time: a small conv
# is the costliest layer to compile, and 256 of them took 34 s with an empty build cache on an idle
# 2-core machine (docs/language.md has the figures). A ResNet-50-sized chain fits.
MAX_LAYERS = 256


def load_spec(source: str | os.PathLike, overrides: Mapping[str, float] | None = None) -> ir.Net:
    """A spec file (a path, or a str naming a file or ending in .net) or spec text -> ir.Net.

    `overrides` replaces declared parameters (`-D s=2` arrives as {"s": 2.0}). Raises SpecError.
    """
    return lower(parse(_read(source)), overrides)


def declared_params(source: str | os.PathLike) -> dict[str, float]:
    """Every `param` in the spec, as written, with its value when nothing is overridden."""
    lowering = _Lowering(parse(_read(source)), None)
    return {name: lowering.scope.params[name.lower()] for name in lowering.param_names}


def lower(program: s.Program, overrides: Mapping[str, float] | None = None) -> ir.Net:
    return _Lowering(program, overrides).net()


def _read(source: str | os.PathLike) -> Source:
    if isinstance(source, os.PathLike):
        return read_source(source)
    if "\n" not in source and (source.strip().endswith(".net") or os.path.isfile(source)):
        return read_source(source)
    return Source("<string>", source)


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
        self.scope = Scope(program.statements)
        self.param_names: list[str] = []  # as declared, in order
        self.defaults: dict[str, s.DefaultStmt] = {}
        self.seen = self._declare(overrides or {})  # the first of each statement kind, by kind

    # ---- statements

    def _declare(self, overrides: Mapping[str, float]) -> dict:
        declared = {st.name.lower() for st in self.statements if isinstance(st, s.ParamStmt)}
        given = {}
        for name, value in overrides.items():
            if name.lower() not in declared:
                have = ", ".join(st.name for st in self.statements
                                 if isinstance(st, s.ParamStmt)) or "none"
                raise SpecError(f"-D {escape(name)}: {escape(self.source.name)} declares no "
                                f"parameter '{escape(name)}' (declared: {have})")
            given[name.lower()] = _override(name, value)
        seen: dict[str, s.Statement] = {}
        for st in self.statements:
            match st:
                case s.ParamStmt(name=name):
                    self._once(seen, ("param", name.lower()), st, f"parameter '{name}'")
                    value = given[name.lower()] if name.lower() in given else \
                        self.scope.eval(st.expr)
                    self.scope.params[name.lower()] = value
                    self.param_names.append(name)
                case s.DefaultStmt(name=name):
                    self._once(seen, ("default", name.lower()), st, f"default for '{name}'")
                    bind_args(builtin_kind(st.call), st.call, {})  # names now, values at use
                    self.defaults[name.lower()] = st
                case s.TableStmt(name=name, rows=rows):
                    self._once(seen, ("table", name.lower()), st, f"table '{name}'")
                    self.scope.tables[name.lower()] = ir.Table(
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
            name=net_stmt.name if net_stmt else _default_name(self.source.name),
            input=self._input(self.seen["input"]),
            layers=tuple(layers),
            loss=self._loss(self.seen.get("loss"), layers),
            params=tuple((name, self.scope.params[name.lower()]) for name in self.param_names),
            source=self.source.text,
        )

    def _input(self, st: s.InputStmt) -> ir.Shape:
        if len(st.dims) not in (1, 3):
            raise SpecError(f"input has {len(st.dims)} sizes; give C×H×W (e.g. 1x28x28) or one "
                            f"vector size (e.g. 784)", st.size_span)
        for d in st.dims:
            in_range(d, "an input size", 1, st.size_span)
        if math.prod(st.dims) > MAX_INT:  # the generated C counts a sample's elements in an int
            raise SpecError(f"the input is {math.prod(st.dims):,} elements, more than netc's "
                            f"limit of {MAX_INT:,} (2**31 - 1)", st.size_span)
        return st.dims if len(st.dims) == 3 else (st.dims[0], 1, 1)

    def _loss(self, st: s.LossStmt | None, layers: list[ir.AnyLayer]) -> str:
        ends_in_softmax = isinstance(layers[-1], ir.Softmax)
        if st is None:
            return "cross_entropy" if ends_in_softmax else "mse"
        name = st.name.lower()
        if name not in ir.LOSSES:
            raise SpecError(f"unknown loss '{st.name}'{did_you_mean(name, ir.LOSSES)}", st.span,
                            hint="the losses are " + " and ".join(ir.LOSSES))
        if name == "cross_entropy" and not ends_in_softmax:
            raise SpecError("loss cross_entropy needs the network to end in softmax", st.span,
                            hint="end the body with softmax, or use `loss mse`")
        return name

    # ---- expansion of ( )*N

    def _repeat(self, term: s.Term) -> int:
        return self.scope.whole(term.repeat, "a repetition count", 0)

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

    def _resolve(self, call: s.Call) -> tuple[str, dict[str, s.Argument]]:
        """The builtin layer a call means, and its arguments: the default's, then the call's."""
        name = call.name.lower()
        args: dict[str, s.Argument] = {}
        if name in self.defaults:
            base = self.defaults[name].call
            kind = builtin_kind(base)
            bind_args(kind, base, args)
        else:
            kind = builtin_kind(call, tuple(self.defaults))
        bind_args(kind, call, args)
        return kind, args

    def _layers(self, use: _Use) -> list[tuple[ir.AnyLayer, str | None, Span | None]]:
        kind, args = self._resolve(use.call)
        layers = build_layers(kind, args, use.call.span, use.origin, self.scope)
        # The user's label names the first layer (the one with the weights, for softmax(n)).
        return [(layer, use.label if i == 0 else None, use.label_span)
                for i, layer in enumerate(layers)]


def _override(name: str, value) -> float:
    """A -D value as the float a parameter holds; an int too large for a float is refused too."""
    try:
        number = float(value)
    except OverflowError:
        raise SpecError(f"-D {escape(name)}: the value is too large (at most about 1.8e308)") \
            from None
    except (TypeError, ValueError):
        raise SpecError(f"-D {escape(name)}: the value is not a number") from None
    if not math.isfinite(number):
        raise SpecError(f"-D {escape(name)}={number}: not a finite number")
    return number


def _default_name(source_name: str) -> str:
    """The file name without .net (`net` for spec text), when `network "..."` could hold it."""
    base = os.path.basename(source_name)
    if not base.endswith(".net"):
        return "net"
    problem = name_problem(base[:-4])
    if problem:
        raise SpecError(f"the network would be named after the file, but the name "
                        f"'{escape(base[:-4])}' {problem}",
                        hint='name the network in the spec, e.g. network "my net"')
    return base[:-4]
