"""No text from a spec reaches the generated C except inside a `//` comment, escaped: names,
labels and table names full of line ends, line splices, `*/`, `#`, NUL and unicode give C that is
the same code as with plain names, pure ASCII, and compiles without a warning. The environment
prints only ints and the C text types of netc/codegen/env.py."""
from __future__ import annotations

import random
import re
import subprocess

import jinja2
import numpy as np
import pytest

import netc
from netc import ir
from netc.build import BASE_FLAGS, build, find_compiler
from netc.codegen import env as cenv
from netc.codegen import views
from netc.codegen.env import Code, Comment, CText, Ident, render
from netc.errors import SpecError
from netc.passes import memory
from netc.passes.shapes import infer_shapes

# pieces of hostile text: C line ends as gcc reads them, line splices, comment ends and starts,
# preprocessor lines, trigraphs, NUL, unicode line separators, quotes, jinja2 syntax, escapes
PIECES = ["\r", "\n", "\r\n", "\\", "\\\n", "\\ \n", "*/", "/*", "//", "#", "#define X 1", "??/",
          "??=", "\u2028", "\u2029", "\x85", "\x00", "\x0b", "\x0c", "\t", "\x7f", "\x1b[2J",
          '"', "'", "é", "\U0001f600", "\ud800", "{{ name }}", "{%", "%s", "a", "_", "0", " ",
          ";", "}", "int x;"]
CANARY = "Qz9"  # in every hostile string: its bytes must show up in comments only
PAYLOAD = ("demo\r#ifndef PWN\r#define PWN\r__attribute__((constructor)) static void pwn(void)"
           "{{char c[] = \"touch {path}\"; int system(const char*); system(c);}}\r#endif\r//")


def _net(name: str, labels: list[str], table: str, **extra) -> ir.Net:
    """Every layer kind, with a connection table, labelled as given."""
    relu = ir.Activation("relu")
    rows = tuple(tuple(ch == "X" for ch in row) for row in ("X.XX", "XX.X", ".XXX"))
    kinds = [
        (ir.Conv, dict(out_channels=4, kernel=(3, 2), pad=(1, 1), table=ir.Table(table, rows),
                       act=ir.Activation("tanh", 1.7159, 2 / 3))),
        (ir.BatchNorm, {}),
        (ir.Pool, dict(mode="max", kernel=(3, 3), stride=(2, 2), pad=(1, 1))),
        (ir.Conv, dict(out_channels=6, kernel=(1, 1), groups=2, bias=False, act=relu)),
        (ir.Conv, dict(out_channels=6, kernel=(1, 1))),  # takes the relu derivative above
        (ir.Act, dict(fn=ir.Activation("sigmoid", 1.5))),
        (ir.Subsample, dict(kernel=(2, 2), stride=(1, 1), act=relu)),
        (ir.Pool, dict(mode="avg", kernel=(2, 2), stride=(1, 1), pad=(1, 1))),
        (ir.GlobalAvgPool, {}),
        (ir.Flatten, {}),
        (ir.FC, dict(units=7, act=relu)),
        (ir.Dropout, dict(p=0.3)),
        (ir.FC, dict(units=5)),
        (ir.Softmax, {}),
    ]
    layers = tuple(kind(label=label, **args) for (kind, args), label in zip(kinds, labels))
    return ir.Net(name, (3, 9, 8), layers, **extra)


N_LAYERS = 14


def _hostile(rng: random.Random) -> str:
    text = "".join(rng.choice(PIECES) for _ in range(rng.randint(1, 10)))
    return text + CANARY + chr(rng.randint(0x80, 0x10ffff))


def _pair(name: str, labels: list[str], table: str) -> tuple[ir.Net, ir.Net]:
    """A net named with hostile text, and its twin with plain names and the same identifier."""
    hostile = _net(name, labels, table, params=((labels[0], 1.0),), source=name)
    plain = _net(views.identifier(name), [f"l{i}" for i in range(N_LAYERS)], "t")
    return hostile, plain


def _code_only(text: str) -> str:
    """C as gcc's first phases see it, comments replaced by a space: lines end at \\r\\n, \\r or
    \\n; a backslash, maybe blanks, then a line end splices; literals are kept whole."""
    text = re.sub(r"\r\n?", "\n", text)
    text = re.sub(r"\\[ \t\v\f]*\n", "", text)
    token = re.compile(r'"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'|//[^\n]*|/\*.*?\*/', re.S)
    return token.sub(lambda m: " " if m.group().startswith("/") else m.group(), text)


def _check_c(hostile: ir.Net, plain: ir.Net, batch: int = 3) -> netc.codegen.CSource:
    src = netc.Network(hostile).emit(batch=batch)
    twin = netc.Network(plain).emit(batch=batch)
    for text, twin_text in ((src.text, twin.text), (src.header, twin.header)):
        # (a) the code outside comments is the plain twin's: no line the spec controls
        assert _code_only(text) == _code_only(twin_text)
        # (b) nothing gcc or an editor could take as a line end, a splice or a trigraph
        assert text.isascii() and not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", text)
        assert [line for line in text.split("\n") if line.endswith("\\")] == [
            line for line in twin_text.split("\n") if line.endswith("\\")]  # the PROF macros
        assert text.count("??") == twin_text.count("??") == 0
        assert (text.count("*/"), text.count("/*")) == (twin_text.count("*/"),
                                                        twin_text.count("/*"))
    assert CANARY in src.text  # the names were printed, escaped, in the comments
    assert src.name == twin.name and src.name.isidentifier()
    return src


def _syntax_only(text: str) -> str:
    """The compiler's warnings for C text, with the project's warning flags, not compiling."""
    run = subprocess.run([*find_compiler(), *BASE_FLAGS, "-fsyntax-only", "-x", "c", "-"],
                         input=text, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    return run.stderr


FIXED = [
    "\r#define N 1\r", "a\nb", "trailing\\", "splice\\ \n", "x */ int y; /*", "??/", "# 1",
    "\u2028#error u2028", "\x85nel", "nul\x00", "v\x0bf\x0c", "\U0001f600", "\ud800", "'\"",
]


def test_every_string_field_with_hostile_text_stays_in_comments():
    labels = [f"<{i}>{FIXED[i % len(FIXED)]}{CANARY}" for i in range(N_LAYERS)]
    src = _check_c(*_pair(FIXED[0] + CANARY + "\\", labels, "tab\n#include <x>" + CANARY))
    assert build(src.text, src.cdef, name=src.name, flags=["-O1"]).warnings == ""
    assert "// \\x0d#define N 1\\x0dQz9\\x5c: generated by netc" in src.text
    assert "\\x0a#include <x>Qz9" in src.text  # the table, in its conv's comment


def test_fuzz_hostile_names_compile_to_the_plain_code():
    rng = random.Random(20240611)
    for _ in range(50):
        labels = [f"<{i}>{_hostile(rng)}" for i in range(N_LAYERS)]
        src = _check_c(*_pair(_hostile(rng), labels, _hostile(rng)), batch=rng.randint(1, 5))
        assert _syntax_only(src.text) == ""
        assert _syntax_only(src.header) == ""


def test_the_issue_payload_runs_nothing(tmp_path):
    # the spec of the report: a lone \r ended the `// name` comment and the rest became C
    proof = tmp_path / "pwned"
    net = _net(PAYLOAD.format(path=proof), [f"l{i}" for i in range(N_LAYERS)], "t")
    model = netc.Network(net).compile(batch=2, flags=["-O1"], cache_dir=tmp_path)  # dlopen
    assert not proof.exists()
    out = model.forward(np.zeros((2, 3, 9, 8), np.float32))
    assert np.isfinite(out).all()
    assert not proof.exists()


def test_the_view_holds_no_text_but_c_text():
    labels = [f"<{i}>{FIXED[i % len(FIXED)]}" for i in range(N_LAYERS)]
    net, _ = _pair("n\r", labels, "t\n")
    shapes = infer_shapes(net)
    view = views.net_view(net, shapes, memory.plan(net, shapes, 2))
    templates = {"template", "loss_template", "optimizer_template"}  # names, never printed

    def walk(value, key=None):
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, k)
        elif isinstance(value, (list, tuple)):
            for v in value:
                walk(v, key)
        elif isinstance(value, str):
            assert isinstance(value, CText) or key in templates, (key, value)
        else:
            assert value is None or type(value) is int, (key, value)
    walk(view)


@pytest.mark.parametrize("source, value", [
    ("{{ x }}", "raw text"),
    ("{{ x }}", 0.5),  # floats print through views.lit only
    ("{{ x }}", True),
    ("{{ x ~ '' }}", Comment("c")),  # joined: no longer C text
    ("{{ x.upper() }}", Ident("a")),
    ("{{ m() ~ x }}", Code("1")),  # joined to a macro's Markup
])
def test_the_environment_prints_only_ints_and_c_text(source, value):
    template = cenv.environment().from_string("{% macro m() %}a{% endmacro %}" + source)
    with pytest.raises(TypeError):
        template.render(x=value)


def test_filters_that_make_markup_are_gone():
    for name in ("safe", "replace", "join", "format", "e", "forceescape", "string"):
        with pytest.raises(jinja2.TemplateAssertionError):
            cenv.environment().from_string("{{ x | %s }}" % name)


def test_a_comment_prints_only_after_two_slashes():
    ok = cenv.environment().from_string("x = 1;  // {{ c }} and more\n")
    assert render(ok, {"c": Comment("a\r\n*/b")}) == "x = 1;  // a\\x0d\\x0a\\x2a\\x2fb and more\n"
    for source in ("int {{ c }};\n", 'puts("//"); {{ c }}\n', "/* // */ {{ c }}\n",
                   "x = 1 /* {{ c }} */;\n"):
        with pytest.raises(TypeError, match="outside a // comment"):
            render(cenv.environment().from_string(source), {"c": Comment("a")})


@pytest.mark.parametrize("text", ["", "1a", "a b", "a\n", "é", "a-b", "a;b"])
def test_identifiers_are_checked(text):
    with pytest.raises(ValueError):
        Ident(text)


@pytest.mark.parametrize("text", ['"', "a/b", "#x", "{", "\r", "a\\"])
def test_code_is_numbers_and_fixed_words(text):
    with pytest.raises(ValueError):
        Code(text)


def test_comment_escapes_everything_but_plain_ascii():
    text = "".join(map(chr, range(0x100))) + "\u2028\U0001f600"
    escaped = Comment(text)
    assert escaped.isascii() and not re.search(r"[\x00-\x1f\x7f/*?]", escaped)
    assert re.fullmatch(r"(\\x[0-9a-f]{2}|\\u[0-9a-f]{4}|\\U[0-9a-f]{8}|[^\\])*", escaped)
    assert Comment(escaped) is escaped  # not escaped twice
    plain = "c1: conv 3 3x3 (1, 6, 6) -> (3, 4, 4), 'p=0.5' [x_y] #2"
    assert Comment(plain) == plain


@pytest.mark.parametrize("layer", [
    ir.Act(label="a", fn=ir.Activation("relu); system(0")),
    ir.FC(label="f", units=2, act=ir.Activation("elu")),
    ir.Dropout(label="d", p=float("nan")),
])
def test_a_net_the_templates_cannot_print_is_refused(layer):
    net = ir.Net("n", (2, 1, 1), (layer,), loss="mse")
    with pytest.raises(SpecError):
        netc.Network(net).emit(batch=2)


def test_an_unknown_loss_is_refused():
    net = ir.Net("n", (2, 1, 1), (ir.FC(label="f", units=2),), loss="../mse")
    with pytest.raises(SpecError, match="unknown loss"):
        netc.Network(net).emit(batch=2)
