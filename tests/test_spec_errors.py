"""Every class of bad spec ends in a SpecError whose format() is `file:line:col: error: ...`,
the offending line and a caret under the offending text. Messages and locations are literals."""
from __future__ import annotations

import pytest

from netc.errors import SpecError
from netc.lower import load_spec
from netc.passes.shapes import infer_shapes


def check(error: SpecError, text: str, where: str, caret: str, message: str, name="<string>"):
    """The three lines a user sees: location and message, the source line, the caret."""
    line, col = map(int, where.split(":"))
    head, shown, marks = error.format().splitlines()[:3]
    assert head == f"{name}:{where}: error: {message}"
    assert shown == "    " + text.splitlines()[line - 1]
    assert marks == "    " + " " * (col - 1) + caret


def fails(text: str, overrides=None) -> SpecError:
    with pytest.raises(SpecError) as info:
        load_spec(text, overrides)
    return info.value


# (id, line:col, caret, spec, message)
CASES = [
    ('missing_dash', '2:14', '^^^^',
     'input 1x28x28\nconv(6, k=5) pool(max, 2)\n',
     "unexpected 'pool': expected the end of the line, '-' or '*'"),
    ('trailing_dash', '2:15', '^',
     'input 1x28x28\nconv(6, k=5) -\n',
     "unexpected end of file: expected a layer or '('"),
    ('double_dash', '2:16', '^',
     'input 1x28x28\nconv(6, k=5) - - pool(max, 2)\n',
     "unexpected '-': expected a layer or '('"),
    ('missing_comma', '2:8', '^',
     'input 1x28x28\nconv(6 k=5)\n',
     "unexpected 'k': expected ')', '-', '+', '*', '/' or ','"),
    ('empty_value', '2:11', '^',
     'input 1x28x28\nconv(6, k=)\n',
     "unexpected ')': expected a number, a parameter, a size such as 3x5, '(', '-' or '+'"),
    ('extra_paren', '2:13', '^',
     'input 1x28x28\nconv(6, k=5))\n',
     "unexpected ')': expected the end of the line"),
    ('unclosed_paren', '3:5', '^',
     'input 1x28x28\nconv(6, k=5) -\npool(max, 2\n',
     "this '(' is never closed"),
    ('unclosed_group', '2:1', '^',
     'input 1x28x28\n(conv(6, k=3)*2\n',
     "this '(' is never closed"),
    ('bad_char', '2:14', '^',
     'input 1x28x28\nconv(6, k=5) $ pool\n',
     "unexpected character '$': expected the end of the line, '-' or '*'"),
    ('reference_mid_chain', '2:16', '^',
     'input 1x28x28\nconv(6, k=5) - @c1\n',
     "unexpected '@': expected a layer or '('"),
    ('misspelled_keyword', '1:7', '^^^^^^^',
     'inptu 1x28x28\nconv(6, k=5)\n',
     "unexpected '1x28x28': expected the end of the line, '(', '-', '*', ':' or '['"),
    ('input_without_size', '1:6', '^',
     'input\nconv(6, k=5)\n',
     'unexpected end of line: expected a number or a size such as 3x5'),
    ('repeat_without_count', '2:14', '^',
     'input 1x28x28\nconv(6, k=5)*\n',
     "unexpected end of file: expected a number, a parameter or '('"),
    ('reserved_label', '2:1', '^^^^^',
     'input 1x28x28\ntable: conv(6, k=5)\n',
     "'table' is a reserved word and cannot be a label"),
    ('unclosed_string', '1:9', '^',
     'network "lenet\ninput 1x28x28\nconv(6, k=5)\n',
     'quoted name is not closed on this line'),
    ('unclosed_table', '2:9', '^',
     'input 1x28x28\ntable t { X.X\n',
     "table body is not closed: no '}' after this '{'"),
    ('table_bad_char', '4:4', '^',
     'input 1x28x28\ntable t {\n  X.X\n  Xo.\n}\nconv(6, k=5, table=t)\n',
     "table rows are made of X (connected) and '.' (not), not 'o'"),
    ('table_ragged', '4:3', '^^',
     'input 1x28x28\ntable t {\n  X.X\n  XX\n}\nconv(6, k=5, table=t)\n',
     'table row 2 has 2 columns but row 1 has 3'),
    ('table_empty', '2:9', '^^^',
     'input 1x28x28\ntable t { }\nconv(6, k=5, table=t)\n',
     'table has no rows'),
    ('fractional_input', '1:7', '^^^',
     'input 7.5\nfc(2)\n',
     'input size must be a whole number, not 7.5'),
    ('unknown_layer', '2:1', '^^^^',
     'input 1x28x28\ncnov(6, k=5)\n',
     "unknown layer 'cnov'; did you mean 'conv'?"),
    ('unknown_argument', '2:9', '^^^^',
     'input 1x28x28\nconv(6, kk=5)\n',
     "conv has no argument 'kk'; did you mean 'k'?"),
    ('too_many_positional', '2:12', '^',
     'input 1x28x28\nconv(6, 3, 1)\n',
     'conv takes at most 2 positional arguments (out, k)'),
    ('positional_after_named', '2:13', '^',
     'input 1x28x28\nconv(out=6, 3)\n',
     'a positional argument cannot follow a named one'),
    ('argument_twice', '2:12', '^^^',
     'input 1x28x28\nconv(6, 3, k=3)\n',
     "argument 'k' is given twice"),
    ('missing_argument', '2:1', '^^^^^^^',
     'input 1x28x28\nconv(6)\n',
     "conv needs the argument 'k'"),
    ('zero_channels', '2:6', '^',
     'input 1x28x28\nconv(0, k=5)\n',
     'conv out is 0, which rounds to 0'),
    ('negative_channels', '2:6', '^^',
     'input 1x28x28\nconv(-3, k=5)\n',
     'conv out must be positive, not -3'),
    ('rounds_to_zero', '3:6', '^^^^',
     'input 1x28x28\nparam s = 0.01\nconv(20*s, k=5)\n',
     'conv out is 0.2, which rounds to 0'),
    ('fractional_kernel', '2:11', '^^^',
     'input 1x28x28\nconv(6, k=2.5)\n',
     'conv k must be a whole number, not 2.5'),
    ('zero_stride', '2:21', '^',
     'input 1x28x28\nconv(6, k=3, stride=0)\n',
     'conv stride must be at least 1, not 0'),
    ('negative_pad', '2:18', '^^',
     'input 1x28x28\nconv(6, k=3, pad=-1)\n',
     'conv pad must be at least 0, not -1'),
    ('zero_groups', '2:21', '^',
     'input 1x28x28\nconv(6, k=5, groups=0)\n',
     'conv groups must be at least 1, not 0'),
    ('three_dims_kernel', '2:11', '^^^^^',
     'input 1x28x28\nconv(6, k=3x3x3)\n',
     'conv k takes one size or two (height×width), not 3'),
    ('pad_same_even', '2:18', '^^^^',
     'input 1x28x28\nconv(6, k=4, pad=same)\n',
     'pad=same needs an odd kernel, not 4×4'),
    ('table_and_groups', '5:23', '^^^^^^^^',
     'input 1x28x28\ntable t {\n  X\n}\nconv(6, k=3, table=t, groups=2)\n',
     'conv takes either a table or groups, not both'),
    ('dropout_one', '2:16', '^',
     'input 1x28x28\nrelu - dropout(1)\n',
     'dropout p must be in [0, 1), not 1'),
    ('dropout_negative', '2:16', '^^^^',
     'input 1x28x28\nrelu - dropout(-0.1)\n',
     'dropout p must be in [0, 1), not -0.1'),
    ('pool_without_mode', '2:6', '^',
     'input 1x28x28\npool(2)\n',
     'pool mode must be max or avg'),
    ('bad_bias', '2:17', '^^^^^',
     'input 1x28x28\nconv(6, 3, bias=maybe)\n',
     'conv bias must be on or off'),
    ('bad_act', '2:18', '^^^^^',
     'input 1x28x28\nconv(6, k=3, act=relux)\n',
     "conv act must be relu, sigmoid, tanh or none; did you mean 'relu'?"),
    ('bad_tanh', '2:23', '^',
     'input 1x28x28\nconv(6, k=3, act=tanh(0))\n',
     'tanh a must be in (0, ∞), not 0'),
    ('dims_as_count', '2:6', '^^^',
     'input 1x28x28\nconv(3x3, k=3)\n',
     'conv out must be a number'),
    ('huge_count', '2:6', '^^^^^^^^^^^',
     'input 1x28x28\nconv(99999999999, k=3)\n',
     'conv out is absurdly large (1e+11; at most 2,147,483,647)'),
    ('label_on_group', '2:1', '^',
     'input 1x28x28\nb: (relu)*2\n',
     'a label names one layer, not a group'),
    ('duplicate_label', '2:17', '^',
     'input 1x28x28\nc: conv(6, 3) - c: relu\n',
     "label 'c' is already an earlier layer's label"),
    ('label_clashes_with_auto', '2:1', '^^^^^',
     'input 1x28x28\nconv2: conv(6, 3) - conv(4, 3)\n',
     "label 'conv2' is already the automatic label of layer 2, which has no label of its own"),
    ('repeated_label_clash', '2:21', '^^^',
     'input 1x28x28\n(c: conv(6, 3))*2 - c_1: relu\n',
     "label 'c_1' is already an earlier layer's label"),
    ('bad_default_argument', '2:30', '^^^^^^^',
     'input 1x28x28\ndefault conv = conv(32, k=3, strid=2)\nconv - conv\n',
     "conv has no argument 'strid'; did you mean 'stride'?"),
    ('default_of_unknown_layer', '2:16', '^^^^',
     'input 1x28x28\ndefault unit = covn(3)\nunit\n',
     "unknown layer 'covn'; did you mean 'conv'?"),
    ('unknown_layer_suggests_a_default', '3:1', '^^^^',
     'input 1x28x28\ndefault unit = conv(8, k=3)\nuint - relu\n',
     "unknown layer 'uint'; did you mean 'unit'?"),
    ('unused_default_is_still_checked', '2:21', '^^^^^^^^',
     'input 1x28x28\ndefault fc = fc(10, units=10)\nrelu\n',
     "argument 'units' is given twice"),
    ('default_twice', '3:1', '^^^^^^^^^^^^^^^^^^^^^^^^^^^^',
     'input 1x28x28\ndefault conv = conv(8, k=3)\ndefault conv = conv(16, k=3)\nconv\n',
     "default for 'conv' is already defined on line 2"),
    ('undefined_parameter', '3:6', '^^^^^',
     'input 1x28x28\nparam width = 8\nconv(widht, k=3)\n',
     "undefined parameter 'widht'; did you mean 'width'?"),
    ('parameter_declared_later', '2:11', '^',
     'input 1x28x28\nparam a = b * 2\nparam b = 4\nconv(a, k=3)\n',
     "undefined parameter 'b'"),
    ('redefined_parameter', '3:1', '^^^^^^^^^^^',
     'input 1x28x28\nparam N = 2\nparam n = 3\n(relu)*N\n',
     "parameter 'n' is already defined on line 2"),
    ('division_by_zero', '2:13', '^',
     'input 1x28x28\nparam p = 1/0\nrelu\n',
     'division by zero'),
    ('huge_number', '2:4', '^^^^^',
     'input 1x28x28\nfc(1e999)\n',
     'number is too large'),
    ('fractional_repeat', '3:8', '^',
     'input 1x28x28\nparam N = 1.5\n(relu)*N\n',
     'a repetition count must be a whole number, not 1.5'),
    ('negative_repeat', '2:9', '^^^',
     'input 1x28x28\n(relu)*(0-2)\n',
     'a repetition count must be at least 0, not -2'),
    ('absurd_repetition', '2:1', '^^^^^^^^^^^^^^^^^^^^^^',
     'input 1x28x28\n((conv(6, k=3))*16)*17\n',
     'this expands to more than 256 layers'),
    ('undefined_table', '5:20', '^^',
     'input 1x28x28\ntable c3 {\n  X\n}\nconv(6, k=5, table=c4)\n',
     "undefined table 'c4'"),
    ('no_input', '1:1', '^^^^^^^^^^^^',
     'conv(6, k=5)\n',
     "the spec has no 'input' statement"),
    ('no_layers', '2:1', '^^^^^^^^^^^',
     'input 1x28x28\nparam s = 1\n',
     'the spec has no layers'),
    ('second_body', '3:1', '^^^^',
     'input 1x28x28\nconv(6, k=3)\nrelu\n',
     "a second body: the network's layers already began on line 2"),
    ('input_twice', '2:1', '^^^^^^^^^^^^^',
     'input 1x28x28\ninput 1x28x28\nrelu\n',
     "'input' is already defined on line 1"),
    ('input_two_sizes', '1:7', '^^^^^',
     'input 28x28\nrelu\n',
     'input has 2 sizes; give C×H×W (e.g. 1x28x28) or one vector size (e.g. 784)'),
    ('input_zero', '1:7', '^^^^^^^',
     'input 0x28x28\nrelu\n',
     'an input size must be at least 1, not 0'),
    ('unknown_loss', '3:1', '^^^^^^^^^^^^^^^^^',
     'input 1x28x28\nfc(10) - softmax\nloss crossentropy\n',
     "unknown loss 'crossentropy'; did you mean 'cross_entropy'?"),
    ('cross_entropy_without_softmax', '3:1', '^^^^^^^^^^^^^^^^^^',
     'input 1x28x28\nfc(10)\nloss cross_entropy\n',
     'loss cross_entropy needs the network to end in softmax'),
    ('empty_expansion', '3:1', '^^^^^^^^^^',
     'input 1x28x28\nparam K = 0\n(fc(10))*K\n',
     'the body expands to no layers (every repetition is *0)'),
]


@pytest.mark.parametrize("name, where, caret, text, message", CASES, ids=[c[0] for c in CASES])
def test_bad_spec(name, where, caret, text, message):
    check(fails(text), text, where, caret, message)


def test_hints_say_what_to_do():
    assert fails("input 1x28x28\nconv(6, k=5) pool(max, 2)\n").hint == \
        "join layers with '-'; to continue on the next line, end this line with '-'"
    assert fails("inptu 1x28x28\nconv(6, k=5)\n").hint == "did you mean 'input'?"
    assert fails("input 1x28x28\n(conv(6, k=3)*2\n").hint == \
        "the file ends where ')' should follow"
    assert fails("input 1x28x28\nconv(6)\n").hint == "e.g. conv(32, k=3)"
    assert fails("input 1x28x28\nconv(6, k=5)\n- relu\n").hint == \
        "a line cannot start with '-'; end the previous line with '-' instead"
    assert fails("network mcn-base\ninput 2\nrelu\n").hint == \
        'quote a name that has a \'-\' in it: network "mcn-base"'


def test_parentheses_nested_65_deep_are_refused_before_any_recursion():
    text = "input 1x28x28\n" + "(" * 65 + "relu" + ")" * 65 + "\n"
    check(fails(text), text, "2:65", "^",
          "parentheses and brackets nested more than 64 levels deep")
    assert len(load_spec("input 1x28x28\n" + "(" * 64 + "relu" + ")" * 64).layers) == 1


@pytest.mark.parametrize("depth", [500, 19_000])
def test_long_unary_chains_are_refused_without_recursion_error(depth):
    e = fails("input 1x28x28\nparam p = " + "-" * depth + "1\nrelu\n")
    assert e.message == "expression nested too deeply (more than 400 levels)"
    assert (e.span.line, e.span.col) == (2, 409)


def test_long_flat_chains_and_sums_are_fine():
    net = load_spec("input 4\nparam n = " + "+".join(["1"] * 5000) + "\n" +
                    " - ".join(["relu"] * 256))
    assert net.params == (("n", 5000.0),) and len(net.layers) == 256


def test_the_largest_body_is_256_layers():
    assert len(load_spec("input 4\n(relu)*256\n").layers) == 256
    e = fails("input 4\n(relu)*128 - (relu)*129\n")
    assert e.message == "this expands to more than 256 layers"
    assert (e.span.col, e.span.end_col) == (14, 24)


def test_undeclared_override_is_one_line():
    e = fails("input 1x28x28\nparam N = 2\n(relu)*N\n", {"M": 3})
    assert e.span is None
    assert e.format() == "error: -D M: <string> declares no parameter 'M' (declared: N)"


def test_override_must_be_finite():
    e = fails("input 1x28x28\nparam N = 2\n(relu)*N\n", {"N": float("inf")})
    assert e.format() == "error: -D N=inf: not a finite number"


def test_absurd_repetition_through_an_override_is_refused_before_expanding():
    text = "input 1x28x28\nparam N = 2\n(relu)*N\n"
    check(fails(text, {"N": 1e9}), text, "3:1", "^^^^^^^^", "this expands to more than "
          "256 layers")


# ---- files


def test_missing_file(tmp_path):
    e = fails(str(tmp_path / "nope.net"))
    assert e.span is None
    assert e.format() == f"error: cannot read the spec '{tmp_path / 'nope.net'}': no such file"


def test_directory(tmp_path):
    (tmp_path / "d.net").mkdir()
    e = fails(tmp_path / "d.net")
    assert e.format() == f"error: cannot read the spec '{tmp_path / 'd.net'}': it is a " \
                         f"directory, not a regular file"


def test_unreadable_file(tmp_path, monkeypatch):
    path = tmp_path / "locked.net"
    path.write_text("input 2\nrelu\n")

    def deny(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("os.open", deny)
    assert fails(path).format() == f"error: cannot read the spec '{path}': Permission denied"


@pytest.mark.parametrize("content", [b"", b"\n\n", b"# only a comment\n   \n"])
def test_empty_file(tmp_path, content):
    path = tmp_path / "empty.net"
    path.write_bytes(content)
    e = fails(path)
    assert e.format().splitlines()[0] == f"{path}:1:1: error: the spec is empty: it has no " \
                                         f"statements"


def test_binary_file(tmp_path):
    path = tmp_path / "model.net"
    path.write_bytes(b"input 2\nfc(1)\0\0\x89PNG\n")
    e = fails(path)
    check(e, "input 2\nfc(1)\n", "2:6", "^",
          "this is a binary file (it contains NUL bytes), not a .net spec", name=str(path))


def test_non_utf8_file(tmp_path):
    path = tmp_path / "latin1.net"
    path.write_bytes("input 2\n# größe\nfc(1)\n".encode("latin-1"))
    e = fails(path)
    assert e.format().splitlines()[0] == \
        f"{path}:2:5: error: the file is not UTF-8 text: byte 0xf6 cannot be decoded"
    assert e.hint == "save the file as UTF-8"


def test_file_errors_name_the_file(tmp_path):
    path = tmp_path / "net.net"
    text = "input 1x28x28\nconv(6, k=5) - cnov(2, k=3)\n"
    path.write_text(text)
    check(fails(path), text, "2:16", "^^^^", "unknown layer 'cnov'; did you mean 'conv'?",
          name=str(path))


# ---- shape errors are raised by passes/shapes.py; they must point at the layer's call


def shape_error(text: str) -> SpecError:
    net = load_spec(text)
    with pytest.raises(SpecError) as info:
        infer_shapes(net)
    return info.value


def test_kernel_larger_than_input_points_at_the_layer():
    text = "input 1x28x28\nconv(6, k=5) - pool(max, 2) -\nconv(16, k=5) - pool(max, 2) -\n" \
           "big: conv(32, k=5)\n"
    e = shape_error(text)
    check(e, text, "4:6", "^^^^^^^^^^^^^", "big: kernel 5 is larger than the padded input "
          "height 4 (input is 16×4×4)")


def test_kernel_error_in_a_repetition_points_at_the_repeated_call():
    text = "input 1x16x16\nparam M = 5\n(conv(8, k=3, pad=1) - pool(max, 2))*M\n"
    e = shape_error(text)
    check(e, text, "3:24", "^^^^^^^^^^^^", "pool5: kernel 2 is larger than the padded input "
          "height 1 (input is 8×1×1)")


def test_table_channel_mismatch_points_at_the_conv():
    text = "input 1x32x32\ntable t {\n  XX.\n  .XX\n}\nconv(6, k=5) - c3: conv(3, k=5, table=t)\n"
    e = shape_error(text)
    check(e, text, "6:20", "^" * 21, "c3: table 't' is 2×3 (rows × columns) but the layer "
          "connects 6 input to 3 output channels")


def test_groups_must_divide_the_channels():
    text = "input 3x32x32\nconv(6, k=3, groups=2)\n"
    check(shape_error(text), text, "2:1", "^" * 22,
          "conv1: groups=2 must divide both the input channels (3) and the output channels (6)")


def test_error_from_a_default_points_at_the_default():
    text = "input 1x28x28\ndefault conv = conv(8, k=3, stride=0)\nconv - relu\n"
    check(fails(text), text, "2:36", "^", "conv stride must be at least 1, not 0")
