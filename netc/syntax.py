"""The syntax tree: what the user wrote, before lowering. Keeps ( )*N, parameters and defaults.

Names are stored as written; lowering compares them case-insensitively. Every node has the span
of the text it came from, so lowering can point at the exact argument that is wrong.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from .span import Source, Span


def _span():
    return field(default=None, compare=False, repr=False)


# ---- expressions


@dataclass(frozen=True, slots=True)
class Number:
    value: float
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Ref:
    """A name in a value position: a parameter, or a keyword such as max, relu, on, same."""

    name: str
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Negate:
    operand: Expr
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Arith:
    """first op1 x1 op2 x2 ..., evaluated left to right; ops within one node share a precedence."""

    first: Expr
    rest: tuple[tuple[str, Expr], ...]  # ("+", x) | ("-", x) | ("*", x) | ("/", x)
    span: Span = _span()


Expr = Union[Number, Ref, Negate, Arith]


@dataclass(frozen=True, slots=True)
class Dims:
    """A literal size written with x: 3x5 (kh×kw) or, in `input`, 1x32x32 (C×H×W)."""

    values: tuple[int, ...]
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Argument:
    name: str | None  # None when positional
    value: Value
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Call:
    """A layer (conv(6, k=5), or a bare CONV), or an act= value such as tanh(1.7159, 2/3)."""

    name: str
    args: tuple[Argument, ...]
    bare: bool  # written without parentheses: takes everything from `default`
    span: Span = _span()


Value = Union[Expr, Dims, Call]

# ---- the body


@dataclass(frozen=True, slots=True)
class Group:
    chain: Chain
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Branch:
    """One branch of a merge: from the merge's input, or from `start`, through `chain`; an empty
    one is the identity."""

    start: At | None
    chain: Chain | None
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Merge:
    """add[ a | b | ... ] or concat[ ... ]: branches from one input, summed or concatenated."""

    kind: str  # "add" | "concat", checked by the parser
    branches: tuple[Branch, ...]
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class At:
    """@label: a branch that starts from an earlier layer's output instead of the merge's input
    (or from the network's input, @input)."""

    name: str
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Term:
    """One link of a chain: an optional `label:`, a call, group or merge, an optional *count."""

    unit: Call | Group | Merge
    span: Span = _span()
    label: str | None = None
    label_span: Span | None = field(default=None, compare=False, repr=False)
    repeat: Expr | None = None


@dataclass(frozen=True, slots=True)
class Chain:
    terms: tuple[Term, ...]
    span: Span = _span()


# ---- statements


@dataclass(frozen=True, slots=True)
class NetworkStmt:
    name: str
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class InputStmt:
    dims: tuple[int, ...]  # (C, H, W) or (n,) for a vector
    span: Span = _span()
    size_span: Span = _span()


@dataclass(frozen=True, slots=True)
class LossStmt:
    name: str
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class ParamStmt:
    name: str
    expr: Expr
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class DefaultStmt:
    name: str  # the name a body uses; the call says which layer it stands for
    call: Call
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class TableStmt:
    name: str
    rows: tuple[str, ...]  # checked: equal lengths, only X and '.', at least one row
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class BlockParam:
    name: str
    default: Expr | None  # None: the call must give it
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class BlockStmt:
    """block basic(c, s=1) = chain: a named piece of network, used like a layer: basic(64)."""

    name: str
    params: tuple[BlockParam, ...]
    chain: Chain
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class BodyStmt:
    chain: Chain
    span: Span = _span()


Statement = Union[NetworkStmt, InputStmt, LossStmt, ParamStmt, DefaultStmt, TableStmt, BlockStmt,
                  BodyStmt]


@dataclass(frozen=True, slots=True)
class Program:
    statements: tuple[Statement, ...]
    source: Source = field(compare=False, repr=False)
