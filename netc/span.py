"""Source coordinates carried by every syntax and IR node, and the caret rendering errors use."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

# Characters that can move a terminal's cursor, start an escape sequence, end a line where a
# reader or a C compiler sees none, or make text display in another order than it is read: the
# C0 controls, DEL, the C1 controls, U+2028/U+2029, the bidirectional-text controls, and lone
# surrogates (a Python str may hold them; UTF-8 cannot). parse.py refuses them in a spec (but tab
# and the newlines), and nothing printed from a spec or a file name shows them raw.
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069"
                     "\ud800-\udfff]")
# An error's source line is shown whole up to this many columns, else a window of them around the
# caret: a 1 MiB one-line spec must not print 2 MB of context.
CONTEXT_COLUMNS = 160


def escape(text: str) -> str:
    """`text` with every CONTROL character written as a Python escape: 'a\\x1bb' for a, ESC, b."""
    return CONTROL.sub(lambda m: ascii(m[0])[1:-1], text)


@dataclass(frozen=True, slots=True)
class Source:
    """A spec's text and the name it is reported under (a path, or "<string>")."""

    name: str
    text: str = field(repr=False)

    def line(self, lineno: int) -> str:
        """Line `lineno` as the parser counts lines (by '\\n' alone), without its CR of a CRLF."""
        lines = self.text.split("\n")
        return lines[lineno - 1].removesuffix("\r") if 1 <= lineno <= len(lines) else ""


@dataclass(frozen=True, slots=True)
class Span:
    """1-based line and column of the first character; end_* point one past the last."""

    source: Source = field(repr=False, compare=False)
    line: int
    col: int
    end_line: int
    end_col: int

    def __str__(self) -> str:
        return f"{escape(self.source.name)}:{self.line}:{self.col}"

    def context(self) -> str:
        """The offending line with a caret under the span (to the line's end if it spans lines).
        A control character shows as U+FFFD, one column wide like the character it stands for,
        so the caret still points at it."""
        text = CONTROL.sub("\ufffd", self.source.line(self.line).expandtabs(1))
        end = self.end_col if self.end_line == self.line else len(text) + 1
        col, width = self.col, max(1, end - self.col)
        if len(text) > CONTEXT_COLUMNS:  # a window around the span, marked "..." where cut
            start = max(0, min(col - 1 - CONTEXT_COLUMNS // 4, len(text) - CONTEXT_COLUMNS))
            width = min(width, CONTEXT_COLUMNS - (col - 1 - start))
            text = ("..." if start else "") + text[start:start + CONTEXT_COLUMNS] + (
                "..." if start + CONTEXT_COLUMNS < len(text) else "")
            col -= start - (3 if start else 0)
        return f"    {text}\n    {' ' * (col - 1)}{'^' * width}"
