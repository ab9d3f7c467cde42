"""Source coordinates carried by every syntax and IR node, and the caret rendering errors use."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Source:
    """A spec's text and the name it is reported under (a path, or "<string>")."""

    name: str
    text: str = field(repr=False)

    def line(self, lineno: int) -> str:
        lines = self.text.splitlines()
        return lines[lineno - 1] if 1 <= lineno <= len(lines) else ""


@dataclass(frozen=True, slots=True)
class Span:
    """1-based line and column of the first character; end_* point one past the last."""

    source: Source = field(repr=False, compare=False)
    line: int
    col: int
    end_line: int
    end_col: int

    def __str__(self) -> str:
        return f"{self.source.name}:{self.line}:{self.col}"

    def context(self) -> str:
        """The offending line with a caret under the span (to the line's end if it spans lines)."""
        text = self.source.line(self.line).expandtabs(1)
        end = self.end_col if self.end_line == self.line else len(text) + 1
        width = max(1, end - self.col)
        return f"    {text}\n    {' ' * (self.col - 1)}{'^' * width}"
