"""syntax.Program + parameter overrides -> ir.Net: the resolved graph of layers.

Evaluates parameters, applies `default`s, expands ( )*N, block calls and the branches of add[ ]
and concat[ ], resolves @references, and labels every layer (a block call's layers after its
name: b1.conv1); layer_args.py checks each call's arguments and values.py each expression.
load_spec() is the entry point the rest of netc calls. Shapes are not checked here:
passes/shapes.py does that on the IR.
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Mapping

from . import ir
from . import syntax as s
from .errors import SpecError, did_you_mean
from .layer_args import LAYER_NAMES, Signature, bind_args, build_layers, builtin_kind
from .parse import MERGE_KINDS, name_problem, parse, read_source
from .span import Source, Span, escape
from .values import MAX_INT, Scope, in_range

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
               ir.Dropout: "dropout", ir.BatchNorm: "bn", ir.Flatten: "flatten", ir.Add: "add",
               ir.Concat: "concat"}

# Block calls nested deeper than this are refused, and so is nesting of groups, branches and
# block calls together past MAX_NESTING: each level is a few Python frames, and blocks multiply
# the 64 levels of ( ) and [ ] that one piece of text may nest.
MAX_BLOCK_DEPTH = 32
MAX_NESTING = 128


@dataclass(slots=True)
class _Context:
    """Where expansion is: the naming scope of a block call (or the body), with the values its
    expressions see, and the copy numbers of the ( )*N around it within that scope."""

    prefix: str  # "" in the body; "b1." inside the block call named b1
    values: Scope
    counts: dict[str, int]  # automatic labels given so far in this scope, by kind
    parent: "_Context | None" = None
    where: tuple[int, ...] = ()  # copy numbers in this scope, for label suffixes
    calls: tuple[str, ...] = ()  # the blocks being expanded, outermost first
    depth: int = 0  # groups, branches and block calls around it, blocks included

    def inside(self, copy: int) -> "_Context":
        return dataclasses.replace(self, where=self.where + (copy,))

    def nested(self, span: Span) -> "_Context":
        """The context one level deeper (a group, a branch): SpecError past MAX_NESTING."""
        if self.depth >= MAX_NESTING:
            raise SpecError(f"groups, branches and block calls are nested more than "
                            f"{MAX_NESTING} levels deep here", span,
                            hint="blocks that call blocks add up their nesting")
        return dataclasses.replace(self, depth=self.depth + 1)


@dataclass(slots=True)
class _Name:
    """A label taken: a layer's, or a block call's scope (whose output it then names)."""

    index: int | None  # the layer it names; None while its block is being expanded
    user: bool  # written by the user (else automatic)
    span: Span | None
    what: str  # "layer" | "block"


class _Lowering:
    def __init__(self, program: s.Program, overrides: Mapping[str, float] | None):
        self.source = program.source
        self.statements = program.statements
        self.scope = Scope(program.statements)
        self.param_names: list[str] = []  # as declared, in order
        self.defaults: dict[str, s.DefaultStmt] = {}
        self.blocks: dict[str, s.BlockStmt] = {}
        self.seen = self._declare(overrides or {})  # the first of each statement kind, by kind
        self.layers: list[ir.AnyLayer] = []
        self.names: dict[str, _Name] = {}  # every label and block scope, lower case

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
                case s.BlockStmt(name=name):
                    self._once(seen, ("block", name.lower()), st, f"block '{name}'")
                    if name.lower() in LAYER_NAMES or name.lower() in MERGE_KINDS:
                        raise SpecError(f"a block cannot be named '{name}': that is a built-in "
                                        f"{'merge' if name.lower() in MERGE_KINDS else 'layer'}",
                                        st.span, hint="choose another name")
                    self.blocks[name.lower()] = st
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
        for name, block in self.blocks.items():
            if name in self.defaults:
                default = self.defaults[name]
                later = max((block, default), key=lambda st: (st.span.line, st.span.col))
                raise SpecError(f"'{block.name}' is both a block and a default (lines "
                                f"{min(block.span.line, default.span.line)} and "
                                f"{max(block.span.line, default.span.line)})", later.span,
                                hint="a name in the body must mean one thing: rename one")
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
        root = _Context("", self.scope, {})
        self._check_size(body.chain, root, {})
        self._chain(body.chain, ir.INPUT, root, ())
        if not self.layers:
            raise SpecError("the body expands to no layers (every repetition is *0)", body.span)
        read = {j for layer in self.layers for j in layer.inputs}
        for i, layer in enumerate(self.layers[:-1]):
            if i not in read:
                raise SpecError(f"the output of {layer.label} is never used: the branches "
                                f"after it all start from a reference", layer.span,
                                hint="let one branch start from it (an empty branch is the "
                                     "identity)")
        net_stmt = self.seen.get("network")
        return ir.Net(
            name=net_stmt.name if net_stmt else _default_name(self.source.name),
            input=self._input(self.seen["input"]),
            layers=tuple(self.layers),
            loss=self._loss(self.seen.get("loss"), self.layers),
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

    # ---- the size of an expansion, checked before expanding

    def _repeat(self, term: s.Term, values: Scope) -> int:
        return values.whole(term.repeat, "a repetition count", 0)

    def _check_size(self, chain: s.Chain, ctx: _Context, memo: dict) -> int:
        """The layers `chain` expands to, refused past MAX_LAYERS at the term that gets there;
        a block call counts its body with the call's arguments (once per call and values)."""
        total = 0
        for term in chain.terms:
            count = 1 if term.repeat is None else self._repeat(term, ctx.values)
            unit = 0
            if count and isinstance(term.unit, s.Group):
                unit = self._check_size(term.unit.chain, ctx.nested(term.span), memo)
            elif count and isinstance(term.unit, s.Merge):
                unit = 1 + sum(self._check_size(b.chain, ctx.nested(term.span), memo)
                               for b in term.unit.branches if b.chain is not None)
            elif count and isinstance(term.unit, s.Call) and term.unit.name.lower() in self.blocks:
                inner = self._bind(term.unit, ctx)
                key = (inner.calls[-1], tuple(sorted(inner.values.params.items())))
                if key not in memo:
                    memo[key] = self._check_size(self.blocks[key[0]].chain, inner, memo)
                unit = memo[key]
            elif count and isinstance(term.unit, s.Call):
                unit = 1
            total += unit * count
            if total > MAX_LAYERS:
                raise SpecError(f"this expands to more than {MAX_LAYERS:,} layers", term.span,
                                hint="check the repetition counts (-D values included)")
        return total

    # ---- expansion: chains, ( )*N, merges, references and block calls -> layers

    def _chain(self, chain: s.Chain, src: int, ctx: _Context, origin: tuple[int, ...]) -> int:
        """Expands `chain` reading layer `src`; returns the index of its last layer."""
        for term in chain.terms:
            if term.label is not None and isinstance(term.unit, s.Group):
                raise SpecError("a label names one layer, not a group", term.label_span,
                                hint="put the label on a layer inside the parentheses")
            if term.repeat is None:
                src = self._unit(term, src, ctx, origin)
                continue
            for copy in range(1, self._repeat(term, ctx.values) + 1):
                before = len(self.layers)
                src = self._unit(term, src, ctx.inside(copy), origin + (copy,))
                if len(self.layers) == before:  # the copies are empty: so are all the others
                    break
        return src

    def _unit(self, term: s.Term, src: int, ctx: _Context, origin: tuple[int, ...]) -> int:
        label = term.label and term.label + "".join(f"_{i}" for i in ctx.where)
        match term.unit:
            case s.Group(chain=chain):
                return self._chain(chain, src, ctx.nested(term.span), origin)
            case s.Merge(kind=kind, branches=branches):
                if len(branches) < 2:
                    raise SpecError(f"{kind}[ ] needs two or more branches, separated by '|'",
                                    term.unit.span, hint="an empty branch is the identity: "
                                    f"{kind}[ conv(64, k=3, pad=1) | ]")
                outs = tuple(self._branch(b, src, ctx.nested(term.span), origin)
                             for b in branches)
                layer = (ir.Add if kind == "add" else ir.Concat)(
                    label="", inputs=outs, span=term.unit.span, origin=origin)
                return self._emit(layer, label, term.label_span, ctx)
            case s.Call(name=name) if name.lower() in self.blocks:
                inner = self._enter(term.unit, ctx, label)
                scope = inner.prefix[:-1]
                self._take(scope, _Name(None, label is not None, term.label_span or
                                        term.unit.span, "block"))
                out = self._chain(self.blocks[name.lower()].chain, src, inner, origin)
                self.names[scope.lower()].index = out
                return out
            case s.Call() as call:
                kind, args = self._resolve(call)
                for i, layer in enumerate(build_layers(kind, args, call.span, origin, ctx.values)):
                    # the user's label names the first layer (the one with the weights, for
                    # softmax(n))
                    src = self._emit(dataclasses.replace(layer, inputs=(src,)),
                                     label if i == 0 else None, term.label_span, ctx)
                return src

    def _branch(self, branch: s.Branch, src: int, ctx: _Context,
                origin: tuple[int, ...]) -> int:
        if branch.start is not None:
            src = self._reference(branch.start, ctx)
        return src if branch.chain is None else self._chain(branch.chain, src, ctx, origin)

    def _emit(self, layer: ir.AnyLayer, label: str | None, label_span: Span | None,
              ctx: _Context) -> int:
        """Appends a layer with its label: the user's, or kind + count among the layers of that
        kind in its scope (conv1, conv2, ...), after the scope's prefix."""
        kind = _AUTO_LABEL.get(type(layer)) or layer.fn.kind
        ctx.counts[kind] = ctx.counts.get(kind, 0) + 1
        full = ctx.prefix + (label or f"{kind}{ctx.counts[kind]}")
        index = len(self.layers)
        self._take(full, _Name(index, label is not None, label_span, "layer"))
        self.layers.append(dataclasses.replace(layer, label=full))
        return index

    def _take(self, full: str, name: _Name) -> None:
        """Claims a label, compared ignoring case; of two that clash, the user's is blamed."""
        other = self.names.setdefault(full.lower(), name)
        if other is name:
            return
        blamed, cause = (name, other) if name.user else (other, name)
        if cause.user:
            how = f"an earlier {cause.what}'s label"
        elif cause.what == "block":
            how = "the automatic name of a block call, which has no label of its own"
        else:
            how = f"the automatic label of layer {cause.index + 1}, which has no label of its own"
        raise SpecError(f"label '{full}' is already {how}", blamed.span,
                        hint=None if cause.user else f"label that {cause.what} too, or choose "
                        "another label")

    def _reference(self, at: s.At, ctx: _Context) -> int:
        """@name: the nearest earlier layer or block call of that name, looking first in the
        same copy of each ( )*N around the reference, then outwards, then in enclosing blocks."""
        name = at.name.lower()
        if name == "input":
            return ir.INPUT
        scope: _Context | None = ctx
        while scope is not None:
            for k in range(len(scope.where), -1, -1):
                found = self.names.get(scope.prefix.lower() + name +
                                       "".join(f"_{i}" for i in scope.where[:k]))
                if found is not None and found.index is not None:
                    return found.index
                if found is not None:
                    raise SpecError(f"@{at.name} is the block this reference is in; a "
                                    f"reference names an earlier layer", at.span)
            scope = scope.parent
        later = [t for t in _terms(self.statements) if t.label and t.label.lower() == name]
        if later:
            raise SpecError(f"@{at.name}: '{later[0].label}' labels a later layer (line "
                            f"{later[0].label_span.line}); a reference can only name an "
                            f"earlier one", at.span, hint="references never make a cycle")
        known = [n for n in self.names if "." not in n]
        raise SpecError(f"@{at.name}: no earlier layer is labelled '{at.name}'"
                        f"{did_you_mean(name, known)}", at.span)

    # ---- one call -> IR layers, or a block call -> its scope

    def _enter(self, call: s.Call, ctx: _Context, label: str | None) -> _Context:
        """The context of a block call's body, named after the call's label or the block and
        its count in the calling scope (basic1, basic2, ...)."""
        inner = self._bind(call, ctx)
        if label is None:
            key = "block " + call.name.lower()
            ctx.counts[key] = ctx.counts.get(key, 0) + 1
            label = f"{self.blocks[call.name.lower()].name}{ctx.counts[key]}"
        return dataclasses.replace(inner, prefix=ctx.prefix + label + ".")

    def _bind(self, call: s.Call, ctx: _Context) -> _Context:
        """A block call's context, unnamed: the call's arguments bound (values from the
        caller's scope, defaults from the block's), cycles and depth checked."""
        block = self.blocks[call.name.lower()]
        if block.name.lower() in ctx.calls:
            path = " → ".join(ctx.calls[ctx.calls.index(block.name.lower()):] +
                              (block.name.lower(),))
            raise SpecError(f"block '{block.name}' calls itself ({path})", call.span,
                            hint="a block cannot use itself, directly or through others")
        if len(ctx.calls) >= MAX_BLOCK_DEPTH:
            raise SpecError(f"blocks call each other more than {MAX_BLOCK_DEPTH} levels deep",
                            call.span)
        given = self._block_args(block, call)
        values = ctx.values.child()
        for p in block.params:  # defaults see the parameters before them
            values.params[p.name.lower()] = ctx.values.eval(given[p.name.lower()].value) \
                if p.name.lower() in given else values.eval(p.default)
        return _Context("", values, {}, ctx, (), ctx.calls + (block.name.lower(),),
                        ctx.nested(call.span).depth)

    def _block_args(self, block: s.BlockStmt, call: s.Call) -> dict[str, s.Argument]:
        """The call's arguments by parameter name, bound as a layer call's are; numbers only,
        and every parameter without a default given."""
        names = tuple(p.name.lower() for p in block.params)
        given: dict[str, s.Argument] = {}
        bind_args(f"block {block.name}", call, given, Signature(names, len(names)))
        for name, arg in given.items():
            if not isinstance(arg.value, (s.Number, s.Ref, s.Negate, s.Arith)):
                raise SpecError(f"block {block.name}: argument '{name}' must be a number",
                                arg.value.span)
        missing = [p.name for p in block.params if p.default is None and
                   p.name.lower() not in given]
        if missing:
            raise SpecError(f"block {block.name} needs the argument '{missing[0]}'", call.span,
                            hint=f"it is defined on line {block.span.line}: "
                                 f"{block.name}({', '.join(names)})")
        return given

    def _resolve(self, call: s.Call) -> tuple[str, dict[str, s.Argument]]:
        """The builtin layer a call means, and its arguments: the default's, then the call's."""
        name = call.name.lower()
        args: dict[str, s.Argument] = {}
        if name in self.defaults:
            base = self.defaults[name].call
            kind = builtin_kind(base)
            bind_args(kind, base, args)
        else:
            kind = builtin_kind(call, tuple(self.defaults) + tuple(self.blocks))
        bind_args(kind, call, args)
        return kind, args


def _terms(statements) -> list[s.Term]:
    """Every term of the body and of every block, in the order written."""
    out: list[s.Term] = []
    stack = [st.chain for st in reversed(statements) if isinstance(st, (s.BodyStmt, s.BlockStmt))]
    while stack:
        chain = stack.pop()
        for term in chain.terms:
            out.append(term)
            if isinstance(term.unit, s.Group):
                stack.append(term.unit.chain)
            elif isinstance(term.unit, s.Merge):
                stack.extend(b.chain for b in reversed(term.unit.branches) if b.chain)
    return out


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
