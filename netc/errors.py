"""The error every stage raises for bad input: a message, where it happened, and a hint."""
from __future__ import annotations

import difflib

from .span import Span


def did_you_mean(name: str, known) -> str:
    """"; did you mean 'x'?" for the closest of `known`, or "": the wording every check shares."""
    close = difflib.get_close_matches(name.lower(), list(known), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


class NetcError(Exception):
    """An error the user caused and can fix. The CLI prints format() and exits with exit_code."""

    exit_code = 2

    def __init__(self, message: str, span: Span | None = None, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.span = span
        self.hint = hint

    def format(self) -> str:
        """`file:line:col: error: message`, the line, a caret, and the hint, as compilers do."""
        head = f"{self.span}: error: {self.message}" if self.span else f"error: {self.message}"
        parts = [head]
        if self.span is not None:
            parts.append(self.span.context())
        if self.hint:
            parts.append(f"hint: {self.hint}")
        return "\n".join(parts)

    def __str__(self) -> str:
        return self.format()


class SpecError(NetcError):
    """A malformed or impossible network spec: syntax, names, arguments, parameters, shapes."""


class BuildError(NetcError):
    """The C compiler is missing or failed; carries its output and the generated source's path."""

    exit_code = 3


class DataError(NetcError):
    """A missing, corrupt or mismatched data file or checkpoint."""

    exit_code = 4


class InputError(NetcError, ValueError):
    """A wrong call into a compiled model (shape, dtype, layout, labels, batch size), caught in
    Python before anything reaches C."""
