"""Spec text -> syntax.Program, with lark. Every failure becomes a SpecError with a caret.

Reading files lives here too (read_source), because a spec that is binary, empty or not UTF-8 is
a syntax-level problem. Nothing here evaluates parameters or knows about the IR.
"""
from __future__ import annotations

import difflib
import functools
import os
import re

from lark import Lark, Token, Transformer_NonRecursive, Tree, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken, VisitError

from . import syntax as s
from .errors import SpecError, did_you_mean
from .files import read_regular
from .resources import grammar_path
from .span import CONTROL, Source, Span

MAX_PARENS = 64  # nesting of ( ); far beyond any real network, far below Python's stack
MAX_TREE_DEPTH = 400  # the same guard for other nesting (- - - - 1), checked before transforming
# Checked before parsing, so that an oversized spec costs milliseconds, not minutes: lark takes
# about 0.1 ms a token (20,000 took 1.7 s). The largest example is 1,160 bytes, 181 tokens.
MAX_BYTES = 1 << 20
MAX_TOKENS = 20_000
MAX_NAME = 100  # characters in any name, the network's included, and in a number or a size

KEYWORDS = ("network", "input", "loss", "param", "default", "table", "block")
MERGE_KINDS = ("add", "concat")


def read_source(path: str | os.PathLike) -> Source:
    """The spec at `path`, checked to be a regular file of at most MAX_BYTES, text, and UTF-8."""
    name = os.fspath(path)
    data = read_regular(path, "the spec", MAX_BYTES, error=SpecError)
    if data.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte-order mark, as some editors write
        data = data[3:]
    text = data.decode("utf-8", errors="replace")
    if b"\0" in data:  # show the text only up to the first NUL; the rest is not for a terminal
        before = data[: data.index(b"\0")].decode("utf-8", errors="replace")
        at = _offset_span(Source(name, before), len(before))
        raise SpecError("this is a binary file (it contains NUL bytes), not a .net spec", at)
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        offset = len(data[: e.start].decode("utf-8", errors="replace"))
        raise SpecError(f"the file is not UTF-8 text: byte 0x{data[e.start]:02x} cannot be "
                        f"decoded", _offset_span(Source(name, text), offset),
                        hint="save the file as UTF-8") from None
    return Source(name, text)


def parse(source: Source) -> s.Program:
    """Parse a whole spec. Raises SpecError for syntax errors and malformed tables, and, before
    parsing, for a spec over the size limits or holding a control character."""
    text = source.text
    if len(text) > MAX_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        raise SpecError(f"the spec is larger than netc accepts ({MAX_BYTES:,} bytes at most)")
    _check_characters(source)
    if not _has_statements(text):
        raise SpecError("the spec is empty: it has no statements",
                        Span(source, 1, 1, 1, 1),
                        hint="a spec needs at least `input ...` and a body of layers")
    _check_tokens(source)
    try:
        tree = _parser().parse(text)
    except _Refused as e:
        raise SpecError(e.message, _token_span(source, e.token)) from None
    except UnexpectedInput as e:
        raise _syntax_error(source, e) from None
    _check_depth(source, tree)
    try:
        statements = _ToSyntax(source).transform(tree)
    except VisitError as e:
        if isinstance(e.orig_exc, SpecError):
            raise e.orig_exc from None
        raise
    return s.Program(tuple(statements), source)


def parse_text(text: str, name: str = "<string>") -> s.Program:
    return parse(Source(name, text))


# ---- checks before parsing, and the rule for network names


def name_problem(name: str) -> str | None:
    """Why `name` cannot name a network, or None. The rule is what `network "..."` can hold:
    1 to MAX_NAME characters, no control characters, no double quote."""
    if not name:
        return "is empty"
    if len(name) > MAX_NAME:
        return f"is {len(name):,} characters long; a name has at most {MAX_NAME}"
    control = CONTROL.search(name)
    if control:
        return f"contains the control character U+{ord(control[0]):04X}"
    if '"' in name:
        return "contains a double quote"
    return None


# Every CONTROL character but tab, newline and the CR of a CRLF.
_REFUSED = re.compile(r"(?![\t\n]|\r\n)" + CONTROL.pattern)
_BIDI = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _check_characters(source: Source) -> None:
    found = _REFUSED.search(source.text)
    if found is None:
        return
    ch = found[0]
    at = _offset_span(source, found.start())
    if ch == "\r":
        raise SpecError("a carriage return (U+000D) that does not end a line", at,
                        hint="save the file with Unix (LF) or Windows (CRLF) line endings")
    what = "bidirectional-text control" if _BIDI.match(ch) else \
        "line separator" if ch in "\u2028\u2029" else \
        "lone surrogate" if "\ud800" <= ch <= "\udfff" else "control character"
    raise SpecError(f"a spec cannot contain the {what} U+{ord(ch):04X}", at,
                    hint="a spec is plain text: delete the character (it is invisible or moves "
                         "the cursor in most editors and terminals)")


# What _check_tokens counts as one token: a name or number (with its . and x), a quoted name, a
# table's { } body, or any other symbol; a comment counts for nothing. Close to lark's tokens
# (1e-5 counts as 3, 3 x 5 as 3), and a regular expression rather than lark, so that counting
# a spec too large to parse takes milliseconds.
_TOKEN = re.compile(r'#[^\n]*|\{[^}]*\}|"[^"\n]*"|[\w.]+|[^\w\s]')


def _check_tokens(source: Source) -> None:
    count = 0
    for token in _TOKEN.finditer(source.text):
        if token[0][0] != "#":
            count += 1
            if count > MAX_TOKENS:
                raise SpecError(f"the spec has more than {MAX_TOKENS:,} tokens (names, numbers "
                                f"and symbols); this is token {count:,}",
                                _offset_span(source, token.start()),
                                hint="netc refuses a spec this long before parsing it; a real "
                                     "network needs a few thousand tokens at most")


# ---- lark setup


class _Refused(Exception):
    """Raised from the postlexer for a token netc will not parse further; parse() reports it."""

    def __init__(self, message: str, token: Token):
        self.message, self.token = message, token


class _Newlines:
    """Decides which newlines end a statement (see the grammar's header), guards nesting, and
    bounds the length of names and numbers."""

    always_accept = ("_NL",)
    # After these a newline cannot end the statement; after _NL it is a blank line.
    _CONTINUES = frozenset({"MINUS", "STAR", "PLUS", "SLASH", "EQUAL", "COMMA", "COLON", "LPAR",
                            "LSQB", "VBAR", "_NL"})
    # Bounded to MAX_NAME characters; a number that long is absurd already, and a longer one
    # would exceed what int() converts (4,300 digits) or a float holds.
    _BOUNDED = {"NAME": "name", "STRING": "name", "NUMBER": "number", "DIMS": "size"}

    def process(self, stream):
        depth, last = 0, None  # last: the last token passed on to the parser
        for tok in stream:
            if tok.type == "_NL":
                if last is None or depth > 0 or last.type in self._CONTINUES:
                    continue
            elif tok.type in ("LPAR", "LSQB"):
                depth += 1
                if depth > MAX_PARENS:
                    raise _Refused(f"parentheses and brackets nested more than {MAX_PARENS} "
                                   f"levels deep", tok)
            elif tok.type in self._BOUNDED:
                length = len(tok) - 2 if tok.type == "STRING" else len(tok)
                if length > MAX_NAME:
                    what = self._BOUNDED[tok.type]
                    raise _Refused(f"this {what} is {length:,} characters long; a {what} has at "
                                   f"most {MAX_NAME}", tok)
            elif tok.type in ("RPAR", "RSQB"):
                depth = max(0, depth - 1)
            yield tok
            last = tok
        if last is not None and last.type != "_NL":  # "" marks the end of the file
            yield Token("_NL", "", last.end_pos, last.end_line, last.end_column,
                        last.end_line, last.end_column + 1, last.end_pos)


@functools.lru_cache(maxsize=1)
def _parser() -> Lark:
    return Lark(grammar_path().read_text(encoding="utf-8"), parser="lalr", lexer="contextual",
                postlex=_Newlines(), propagate_positions=True, maybe_placeholders=False)


def _has_statements(text: str) -> bool:
    return any(line.split("#", 1)[0].strip() for line in text.splitlines())


def _check_depth(source: Source, tree: Tree) -> None:
    stack = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_TREE_DEPTH:
            raise SpecError(f"expression nested too deeply (more than {MAX_TREE_DEPTH} levels)",
                            _meta_span(source, node.meta))
        stack.extend((child, depth + 1) for child in node.children if isinstance(child, Tree))


# ---- tree -> syntax nodes


class _Label(str):
    span: Span


class _Repeat:
    def __init__(self, expr: s.Expr):
        self.expr = expr


@v_args(meta=True)
class _ToSyntax(Transformer_NonRecursive):
    """One method per grammar rule that means something; spans from lark's propagated meta."""

    def __init__(self, source: Source):
        super().__init__()
        self.source = source

    def _span(self, meta) -> Span:
        return _meta_span(self.source, meta)

    def start(self, meta, statements):
        return statements

    def network(self, meta, children):
        (tok,) = children
        name = tok[1:-1] if tok.type == "STRING" else str(tok)
        if "\t" in name:  # the one control character parse() lets through, as whitespace
            col = tok.column + 1 + name.index("\t")
            raise SpecError("a network's name cannot contain a tab",
                            Span(self.source, tok.line, col, tok.line, col + 1))
        problem = name_problem(name)
        if problem:  # the characters and the length were checked already; "" is left
            raise SpecError(f"the network's name {problem}", _token_span(self.source, tok))
        return s.NetworkStmt(name, self._span(meta))

    def input(self, meta, children):
        (tok,) = children
        at = _token_span(self.source, tok)
        if tok.type == "DIMS":
            return s.InputStmt(_dims(tok), self._span(meta), at)
        if not tok.isdigit():
            raise SpecError(f"input size must be a whole number, not {tok}", at,
                            hint="e.g. `input 784` or `input 1x28x28`")
        return s.InputStmt((int(tok),), self._span(meta), at)

    def loss(self, meta, children):
        return s.LossStmt(str(children[0]), self._span(meta))

    def param(self, meta, children):
        name, expr = children
        return s.ParamStmt(str(name), expr, self._span(meta))

    def default(self, meta, children):
        name, call = children
        return s.DefaultStmt(str(name), call, self._span(meta))

    def table(self, meta, children):
        name, body = children
        return s.TableStmt(str(name), _table_rows(self.source, body), self._span(meta))

    def block(self, meta, children):
        name, *rest = children
        params = rest[0] if len(rest) == 2 else ()
        seen = set()
        for p in params:
            if p.name.lower() in seen:
                raise SpecError(f"block {name}: parameter '{p.name}' is declared twice", p.span)
            seen.add(p.name.lower())
        return s.BlockStmt(str(name), tuple(params), rest[-1], self._span(meta))

    def block_params(self, meta, children):
        return list(children)

    def block_param(self, meta, children):
        return s.BlockParam(str(children[0]), children[1] if len(children) == 2 else None,
                            self._span(meta))

    def merge(self, meta, children):
        name, *branches = children
        if name.lower() not in MERGE_KINDS:
            raise SpecError(f"unknown merge '{name}'{did_you_mean(name, MERGE_KINDS)}",
                            _token_span(self.source, name),
                            hint="add[ a | b ] sums its branches, concat[ a | b ] joins their "
                                 "channels")
        return s.Merge(name.lower(), tuple(branches), self._span(meta))

    def branch(self, meta, children):
        start = next((c for c in children if isinstance(c, s.At)), None)
        chain = next((c for c in children if isinstance(c, s.Chain)), None)
        return s.Branch(start, chain, None if meta.empty else self._span(meta))

    def at(self, meta, children):
        return s.At(str(children[0]), self._span(meta))

    def body(self, meta, children):
        return s.BodyStmt(children[0], self._span(meta))

    def chain(self, meta, terms):
        return s.Chain(tuple(terms), self._span(meta))

    def term(self, meta, children):
        label = next((c for c in children if isinstance(c, _Label)), None)
        repeat = next((c.expr for c in children if isinstance(c, _Repeat)), None)
        (unit,) = [c for c in children if isinstance(c, (s.Call, s.Group, s.Merge))]
        return s.Term(unit, self._span(meta), label and str(label), label and label.span, repeat)

    def label(self, meta, children):
        label = _Label(children[0])
        label.span = _token_span(self.source, children[0])
        return label

    def group(self, meta, children):
        return s.Group(children[0], self._span(meta))

    def repeat(self, meta, children):
        return _Repeat(children[0])

    def call(self, meta, children):
        name, *args = children
        # `conv` and `conv()` both have no arguments; only the span tells them apart.
        bare = (meta.end_line, meta.end_column) == (name.end_line, name.end_column)
        return s.Call(str(name), tuple(args), bare, self._span(meta))

    def value_call(self, meta, children):
        name, *args = children
        return s.Call(str(name), tuple(args), False, self._span(meta))

    def argument(self, meta, children):
        name = str(children[0]) if len(children) == 2 else None
        return s.Argument(name, children[-1], self._span(meta))

    def dims(self, meta, children):
        return s.Dims(_dims(children[0]), self._span(meta))

    def sum(self, meta, children):
        return self._arith(meta, children)

    def product(self, meta, children):
        return self._arith(meta, children)

    def _arith(self, meta, children):
        rest = tuple((str(children[i]), children[i + 1]) for i in range(1, len(children), 2))
        return s.Arith(children[0], rest, self._span(meta))

    def sign(self, meta, children):
        op, operand = children
        return s.Negate(operand, self._span(meta)) if op == "-" else operand

    def number(self, meta, children):
        return s.Number(float(children[0]), self._span(meta))

    def ref(self, meta, children):
        return s.Ref(str(children[0]), self._span(meta))


def _dims(tok: Token) -> tuple[int, ...]:
    return tuple(int(part) for part in tok.lower().replace("×", "x").split("x"))


def _table_rows(source: Source, tok: Token) -> tuple[str, ...]:
    """The rows between { and }: one per line, X (or x) = connected, '.' = not; # comments."""
    rows, first = [], None
    for i, line in enumerate(tok[1:-1].split("\n")):
        lineno = tok.line + i
        col0 = tok.column + 1 if i == 0 else 1  # column of the line's first character
        code = line.split("#", 1)[0].rstrip()
        row = ""
        for j, ch in enumerate(code):
            if ch in " \t\r":
                continue
            if ch not in "Xx.":
                raise SpecError(f"table rows are made of X (connected) and '.' (not), not "
                                f"{ch!r}", Span(source, lineno, col0 + j, lineno, col0 + j + 1))
            row += "X" if ch in "Xx" else "."
        if not row:
            continue
        start = col0 + len(code) - len(code.lstrip())
        span = Span(source, lineno, start, lineno, col0 + len(code))
        if first is None:
            first = row
        elif len(row) != len(first):
            raise SpecError(f"table row {len(rows) + 1} has {len(row)} columns but row 1 has "
                            f"{len(first)}", span,
                            hint="every row needs one column per output channel")
        rows.append(row)
    if not rows:
        raise SpecError("table has no rows", _token_span(source, tok),
                        hint="one row per input channel, one column per output channel")
    return tuple(rows)


# ---- spans and syntax-error messages


def _meta_span(source: Source, meta) -> Span:
    return Span(source, meta.line, meta.column, meta.end_line, meta.end_column)


def _token_span(source: Source, tok: Token) -> Span:
    end_line = tok.end_line or tok.line
    end_col = tok.end_column if tok.end_column and tok.value else tok.column + 1
    return Span(source, tok.line, tok.column, end_line, end_col)


def _offset_span(source: Source, offset: int) -> Span:
    line = source.text.count("\n", 0, offset) + 1
    col = offset - (source.text.rfind("\n", 0, offset) + 1) + 1
    return Span(source, line, col, line, col + 1)


_WORDS = {
    "NUMBER": "a number", "DIMS": "a size such as 3x5", "STRING": "a quoted name",
    "TABLE_BODY": "'{' and the table's rows", "_NL": "the end of the line",
    "$END": "the end of the file", "LPAR": "'('", "RPAR": "')'", "MINUS": "'-'",
    "PLUS": "'+'", "STAR": "'*'", "SLASH": "'/'", "EQUAL": "'='", "COMMA": "','", "COLON": "':'",
    "LSQB": "'['", "RSQB": "']'", "VBAR": "'|'", "AT": "'@'",
}
_STATEMENT_WORDS = {kw.upper() for kw in KEYWORDS}


def _describe_expected(expected: set[str]) -> str:
    expected = set(expected)
    words = []
    if expected & _STATEMENT_WORDS:
        expected -= _STATEMENT_WORDS
        words.append("a statement (" + ", ".join(KEYWORDS) + ")")
    if "NAME" in expected:
        expected.discard("NAME")
        # Which name a position wants follows from what else could stand there.
        if "NUMBER" in expected:
            words += ["a number", "a parameter"]
            expected.discard("NUMBER")
        elif "LPAR" in expected or "COLON" in expected or words:
            words.append("a layer")
        else:
            words.append("a name")
    order = list(_WORDS)
    words += [_WORDS.get(t, repr(t.lower())) for t in sorted(expected, key=lambda t: (
        order.index(t) if t in order else len(order), t))]
    if not words:
        return ""
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _syntax_error(source: Source, e: UnexpectedInput) -> SpecError:
    # lark's e.expected over-approximates (LALR merges lookaheads); accepts() is exact.
    parser = getattr(e, "interactive_parser", None)
    expected = parser.accepts() if parser else set(getattr(e, "expected", None) or ())
    if isinstance(e, UnexpectedCharacters):
        ch = source.text[e.pos_in_stream]
        at = Span(source, e.line, e.column, e.line, e.column + 1)
        if ch == "{":
            return SpecError("table body is not closed: no '}' after this '{'", at)
        if ch == '"':
            return SpecError("quoted name is not closed on this line", at)
        return SpecError(f"unexpected character {ch!r}: expected "
                         f"{_describe_expected(expected or e.allowed)}", at)
    # LALR reports the end of input as an UnexpectedToken too; other kinds get the same words.
    tok = e.token if isinstance(e, UnexpectedToken) else Token("$END", "")
    if tok.type == "$END" or tok.value == "":
        unclosed = _unclosed_paren(source)
        if unclosed is not None:
            return SpecError("this '(' is never closed", unclosed,
                             hint=f"the file ends where {_describe_expected(expected)} "
                                  f"should follow")
        lines = source.text.rstrip().splitlines() or [""]
        at = Span(source, len(lines), len(lines[-1]) + 1, len(lines), len(lines[-1]) + 2)
        what = "end of file"
    else:
        at = _token_span(source, tok)
        what = "end of line" if tok.type == "_NL" else f"'{tok}'"
    first = re.match(r"\s*(\w*)", source.line(at.line))
    if tok.type == "COLON" and first.group(1).lower() in KEYWORDS:  # table: conv(...)
        return SpecError(f"'{first.group(1)}' is a reserved word and cannot be a label",
                         Span(source, at.line, first.start(1) + 1, at.line, first.end(1) + 1))
    hint = None
    if tok.type == "AT":
        hint = "a reference starts a branch: concat[ | @c1 - conv(16, k=1) ]"
    elif tok.type in ("NAME", "LPAR") and {"MINUS", "_NL"} <= expected:
        hint = "join layers with '-'; to continue on the next line, end this line with '-'"
    elif tok.type == "MINUS" and expected & _STATEMENT_WORDS:
        hint = "a line cannot start with '-'; end the previous line with '-' instead"
    elif tok.type == "MINUS" and first.group(1).lower() == "network":
        hint = 'quote a name that has a \'-\' in it: network "mcn-base"'
    close = difflib.get_close_matches(first.group(1).lower(), KEYWORDS, n=1, cutoff=0.7)
    if close and close[0] != first.group(1).lower() and not hint:
        hint = f"did you mean '{close[0]}'?"
    return SpecError(f"unexpected {what}: expected {_describe_expected(expected)}", at, hint)


def _unclosed_paren(source: Source) -> Span | None:
    """The innermost '(' left open at the end of the text, skipping comments, names and tables."""
    opened, skip_to = [], None
    for i, ch in enumerate(source.text):
        if skip_to is not None:
            skip_to = None if ch == skip_to else skip_to
        elif ch in '#"{':
            skip_to = {"#": "\n", '"': '"', "{": "}"}[ch]
        elif ch == "(":
            opened.append(i)
        elif ch == ")" and opened:
            opened.pop()
    return _offset_span(source, opened[-1]) if opened else None
