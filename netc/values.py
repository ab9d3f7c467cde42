"""Expressions in a spec -> checked numbers and tables, and the wording every such check shares.

A Scope holds what the statements declared so far; lower.py fills it in statement order, so an
expression sees only the parameters declared before it.
"""
from __future__ import annotations

import math

from . import ir
from . import syntax as s
from .errors import SpecError, did_you_mean
from .span import Span

MAX_INT = 2**31 - 1  # the generated C indexes with int
WHOLE_TOLERANCE = 1e-9  # 20*0.2 = 4.000000000000001 still counts as the whole number 4


class Scope:
    """The parameters and tables declared so far (by lower-case name), to evaluate against."""

    def __init__(self, statements: tuple[s.Statement, ...]):
        self.statements = statements  # all of them, to tell a later declaration from none
        self.params: dict[str, float] = {}
        self.tables: dict[str, ir.Table] = {}

    def child(self) -> "Scope":
        """A scope for a block's body: everything here, plus the parameters the call binds."""
        inner = Scope(self.statements)
        inner.params, inner.tables = dict(self.params), self.tables
        return inner

    def eval(self, e: s.Expr) -> float:
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
                                f"{did_you_mean(name.lower(), self.params)}", e.span, hint=hint)
            case s.Negate(operand=operand):
                return -self.eval(operand)
            case s.Arith(first=first, rest=rest):
                value = self.eval(first)
                for op, operand in rest:
                    rhs = self.eval(operand)
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

    def whole(self, e: s.Value, what: str, minimum: int) -> int:
        if not isinstance(e, (s.Number, s.Ref, s.Negate, s.Arith)):
            raise SpecError(f"{what} must be a number", e.span)
        value = self.eval(e)
        n = round(value)
        if abs(value - n) > WHOLE_TOLERANCE:
            raise SpecError(f"{what} must be a whole number, not {format_number(value)}", e.span)
        return in_range(n, what, minimum, e.span)

    def table(self, e: s.Value) -> ir.Table:
        if not isinstance(e, s.Ref):
            raise SpecError("table= takes the name of a table", e.span)
        if e.name.lower() not in self.tables:
            raise SpecError(f"undefined table '{e.name}'{did_you_mean(e.name, self.tables)}",
                            e.span, hint="define it with `table NAME { ... }`")
        return self.tables[e.name.lower()]


def in_range(n: int, what: str, minimum: int, span: Span) -> int:
    if n < minimum:
        raise SpecError(f"{what} must be at least {minimum}, not {n}", span)
    if n > MAX_INT:
        raise SpecError(f"{what} is absurdly large ({format_number(n)}; at most {MAX_INT:,})",
                        span)
    return n


def format_number(x: float) -> str:
    return f"{float(x):.10g}"
