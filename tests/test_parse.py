"""parse: text -> syntax tree. Statements, newline rules, spans, tables, file reading."""
from __future__ import annotations

from netc import syntax as s
from netc.parse import parse, parse_text, read_source
from netc.resources import grammar_path


def body(text: str) -> s.Chain:
    (stmt,) = [st for st in parse_text(text).statements if isinstance(st, s.BodyStmt)]
    return stmt.chain


def call(name, *args, bare=False):
    return s.Call(name, tuple(args), bare)


def arg(value, name=None):
    return s.Argument(name, value)


def test_grammar_is_found():
    assert grammar_path().is_file()


def test_statements():
    prog = parse_text("network lenet5  # a comment\n"
                      "input 1x32x32\n"
                      "loss mse\n"
                      "param N = 2\n"
                      "default conv = conv(32, k=3)\n"
                      "table t {\n  X.\n  .X\n}\n"
                      "conv\n")
    assert prog.statements == (
        s.NetworkStmt("lenet5"),
        s.InputStmt((1, 32, 32)),
        s.LossStmt("mse"),
        s.ParamStmt("N", s.Number(2.0)),
        s.DefaultStmt("conv", call("conv", arg(s.Number(32.0)), arg(s.Number(3.0), "k"))),
        s.TableStmt("t", ("X.", ".X")),
        s.BodyStmt(s.Chain((s.Term(call("conv", bare=True)),))),
    )


def test_keywords_are_case_insensitive_and_names_keep_their_spelling():
    prog = parse_text('NETWORK "LeNet-5 (1998)"\nInput 784\nCONV(6, K=5)\n')
    assert prog.statements[:2] == (s.NetworkStmt("LeNet-5 (1998)"), s.InputStmt((784,)))
    assert body('Input 784\nCONV(6, K=5)\n').terms[0].unit == \
        call("CONV", arg(s.Number(6.0)), arg(s.Number(5.0), "K"))


def test_design_rule_literally():
    chain = body("input 3x32x32\n((CONV)*N-POOL)*M-(FC)*K-SOFTMAX\n")
    conv, pool, fc, softmax = (call(n, bare=True) for n in ("CONV", "POOL", "FC", "SOFTMAX"))
    inner = s.Chain((s.Term(s.Group(s.Chain((s.Term(conv),))), repeat=s.Ref("N")),
                     s.Term(pool)))
    assert chain == s.Chain((
        s.Term(s.Group(inner), repeat=s.Ref("M")),
        s.Term(s.Group(s.Chain((s.Term(fc),))), repeat=s.Ref("K")),
        s.Term(softmax),
    ))


def test_repeat_count_is_a_number_a_name_or_parenthesised():
    terms = body("input 2\nrelu*3 - relu*n - relu*(n+1) - relu\n").terms
    assert [t.repeat for t in terms] == [
        s.Number(3.0), s.Ref("n"), s.Arith(s.Ref("n"), (("+", s.Number(1.0)),)), None]


def test_a_body_spans_lines_after_a_trailing_dash_and_inside_parentheses():
    text = ("input 1x28x28\n"
            "conv(6,\n"
            "     k=5) -      # comment after the dash\n"
            "\n"
            "# a comment line between\n"
            "pool(max, 2) - (\n"
            "  relu\n"
            ")\n")
    assert [t.unit.name if isinstance(t.unit, s.Call) else "group" for t in body(text).terms] \
        == ["conv", "pool", "group"]


def test_windows_line_endings_and_a_missing_final_newline():
    assert len(body("input 2\r\nrelu -\r\nrelu").terms) == 2


def test_labels_and_bare_versus_empty_parentheses():
    terms = body("input 2\nc1: conv - relu() - out: softmax(10)\n").terms
    assert [(t.label, t.unit.bare) for t in terms] == [("c1", True), (None, False),
                                                        ("out", False)]


def test_argument_values():
    (term,) = body("input 2\n"
                   "conv(6, k=3x5, pad=1 x 2, stride=2×2, act=tanh(1.7159, 2/3), table=c3)\n"
                   ).terms
    assert term.unit.args == (
        arg(s.Number(6.0)),
        arg(s.Dims((3, 5)), "k"),
        arg(s.Dims((1, 2)), "pad"),
        arg(s.Dims((2, 2)), "stride"),
        arg(call("tanh", arg(s.Number(1.7159)),
                 arg(s.Arith(s.Number(2.0), (("/", s.Number(3.0)),)))), "act"),
        arg(s.Ref("c3"), "table"),
    )


def test_arithmetic_is_flat_with_precedence():
    (_, stmt, _) = parse_text("input 2\nparam a = -1 + 2*3 - 4/2 + (5)\nrelu\n").statements
    two_times_three = s.Arith(s.Number(2.0), (("*", s.Number(3.0)),))
    four_over_two = s.Arith(s.Number(4.0), (("/", s.Number(2.0)),))
    assert stmt.expr == s.Arith(s.Negate(s.Number(1.0)), (
        ("+", two_times_three), ("-", four_over_two), ("+", s.Number(5.0))))


def test_numbers():
    (_, *params, _) = parse_text("input 2\nparam a = 1.5\nparam b = .5\nparam c = 1e-5\n"
                                 "param d = 2.\nrelu\n").statements
    assert [p.expr.value for p in params] == [1.5, 0.5, 1e-5, 2.0]


def test_spans():
    prog = parse_text("input 1x28x28\nc1: conv(6, k=5) -\n  pool(max, 2)\n")
    first, second = prog.statements[1].chain.terms
    conv = first.unit
    assert (conv.span.line, conv.span.col, conv.span.end_line, conv.span.end_col) == \
        (2, 5, 2, 17)
    assert (first.label_span.col, first.label_span.end_col) == (1, 3)
    k = conv.args[1]
    assert (k.span.col, k.span.end_col, k.value.span.col) == (13, 16, 15)
    assert (second.unit.span.line, second.unit.span.col) == (3, 3)
    assert str(conv.span) == "<string>:2:5"
    assert prog.statements[0].size_span.col == 7


def test_table_rows_lowercase_x_spaces_and_comments():
    (_, table, _) = parse_text("input 2\ntable t {  # rows are inputs\n"
                               "  x . X   # row 1\n"
                               "  .X.\n"
                               "}\nrelu\n").statements
    assert table == s.TableStmt("t", ("X.X", ".X."))


def test_table_on_one_line():
    (_, table, _) = parse_text("input 2\ntable t { XX }\nrelu\n").statements
    assert table.rows == ("XX",)


def test_read_source_strips_a_byte_order_mark(tmp_path):
    path = tmp_path / "bom.net"
    path.write_bytes("\ufeffinput 2\nrelu\n".encode("utf-8"))
    src = read_source(path)
    assert (src.name, src.text) == (str(path), "input 2\nrelu\n")
    assert parse(src).statements[0] == s.InputStmt((2,))
