"""The jinja2 Environment for templates/, and the only text it prints.

StrictUndefined, so a missing view field fails at render time instead of printing wrong C. A
finalize hook, so `{{ ... }}` prints only ints and the four C text types below (views.py makes
them), never a str from anywhere else: no name or label from a spec reaches the C except escaped
(Comment) or checked (Ident), and data only as numbers (Code) or escaped bytes (ByteString).
`render` also proves that every Comment sits in a `//` comment.
Never touches the IR; loads templates only.
"""
from __future__ import annotations

import functools
import re

import jinja2
from markupsafe import Markup

from ..resources import templates_dir


class CText(str):
    """Text that is safe to print into the generated C; the subclasses say where."""

    __slots__ = ()

    def __html__(self):
        # the environment autoescapes only so that macro output is Markup; jinja2 asks a value
        # for __html__ when a template joins it to Markup (`~`, `+`, Markup methods), which
        # would print it past _finalize: refuse
        raise TypeError("C text is printed by {{ value }} alone, not joined to other output")


class Comment(CText):
    """Any text made safe for a `//` comment: printable ASCII but for \\ / * ?, everything else
    as \\xNN, \\uNNNN or \\UNNNNNNNN. So no line end (\\r, \\n, \\v, \\f, U+2028...), no line
    splice (a backslash or ??/ before one), no */ or /*. `render` refuses one outside `//`."""

    __slots__ = ()

    def __new__(cls, text: str) -> Comment:
        if isinstance(text, Comment):
            return text
        return super().__new__(cls, _COMMENT_UNSAFE.sub(_escape_char, str(text)))


class Ident(CText):
    """A C identifier, checked: [A-Za-z_][A-Za-z0-9_]*."""

    __slots__ = ()

    def __new__(cls, text: str) -> Ident:
        if not _IDENT.fullmatch(text):
            raise ValueError(f"not a C identifier: {text!r}")
        return super().__new__(cls, text)


class Code(CText):
    """C built by views.py from numbers and fixed words: literals, offsets, lists, the exported
    declarations. Checked against a small alphabet: no quotes, comments, braces or `#`."""

    __slots__ = ()

    def __new__(cls, text: str) -> Code:
        if not _CODE.fullmatch(text):
            raise ValueError(f"not C built from numbers and fixed words: {text!r}")
        return super().__new__(cls, text)


class ByteString(CText):
    """Bytes as C string literals, every byte written \\xNN (so no quote, backslash or line end
    of the data reaches the C), LINE bytes to a literal, one literal a line: adjacent literals,
    which C joins into one. A library's weights: compilers read a long string literal many
    times faster, in a fraction of the memory, than the same floats as an initializer list."""

    __slots__ = ()
    LINE = 64

    def __new__(cls, data: bytes, indent: str = "    ") -> ByteString:
        escaped = ("x" + data.hex("x")).replace("x", "\\x") if data else ""
        width = 4 * cls.LINE
        lines = (escaped[i:i + width] for i in range(0, len(escaped), width))
        return super().__new__(cls, "\n".join(f'{indent}"{line}"' for line in lines))


_COMMENT_UNSAFE = re.compile(r"[^ !\"#$%&'()+,\-.0-9:;<=>@A-Z\[\]^_`a-z{|}~]")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CODE = re.compile(r"[A-Za-z0-9_ .,;+\-*()\n]*")

# _finalize puts this before every Comment it prints; render checks and removes it. A Comment
# never holds it (it is escaped) and neither does a template.
COMMENT_MARK = "\0"
# the start of a line up to its first `//`, with no quote or `/*` before it
_COMMENT_START = re.compile(r"""[^"'/]*(?:/[^"'/*][^"'/]*)*//""")


def _escape_char(match: re.Match) -> str:
    code = ord(match.group())
    return (f"\\x{code:02x}" if code < 0x100 else
            f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")


def _finalize(value):
    """What `{{ value }}` may print: an int, C text, or a macro's output (Markup: the environment
    autoescapes only so that macros return it). Anything else is an error: a str printed
    straight from the IR would reach the C unchecked."""
    if isinstance(value, Comment):
        return Markup(COMMENT_MARK + str(value))
    if isinstance(value, (Ident, Code, ByteString)):
        return Markup(str(value))
    if isinstance(value, Markup) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if isinstance(value, jinja2.Undefined):
        return str(value)  # StrictUndefined: raises UndefinedError, naming the missing field
    raise TypeError(f"a template printed {type(value).__name__} {value!r}: print only ints and "
                    f"the C text types of netc/codegen/env.py (Comment, Ident, Code, "
                    f"ByteString)")


@functools.lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=True,  # nothing is HTML-escaped: _finalize makes every value Markup first
        finalize=_finalize,
    )
    # most filters turn any str into Markup (safe, replace, join...): keep the one in use
    env.filters = {"length": env.filters["length"]}
    return env


def render(template: str | jinja2.Template, view: dict, **extra) -> str:
    """A template (by name) rendered, each Comment checked to follow `//` on its line (with no
    quote or `/*` before that), and its mark removed."""
    template = environment().get_template(template)
    text = template.render(view, **extra)
    if COMMENT_MARK not in text:
        return text
    for number, line in enumerate(text.split("\n"), 1):
        at = line.find(COMMENT_MARK)
        if at >= 0 and not _COMMENT_START.match(line[:at]):
            raise TypeError(f"{template.name}, line {number}: a Comment printed outside a // "
                            f"comment: {line[:at]!r}")
    return text.replace(COMMENT_MARK, "")
