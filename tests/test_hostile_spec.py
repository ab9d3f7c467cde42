"""A hostile spec is refused early, with a located error, before it can cost time or memory or
put a control character anywhere: size limits before parsing, control characters and long names
at their caret, -D values out of range, files that are not regular files, inputs too large for
a C int. Messages, locations and limits are literals."""
from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import pytest

from netc import cli
from netc.errors import SpecError
from netc.lower import load_spec


def fails(spec, overrides=None) -> SpecError:
    with pytest.raises(SpecError) as info:
        load_spec(spec, overrides)
    return info.value


def shown(error: SpecError) -> tuple[str, str, str]:
    """The head line, the source line and the caret line a user sees."""
    head, line, caret = error.format().splitlines()[:3]
    return head, line, caret


@contextlib.contextmanager
def deadline(seconds: float):
    """Turns a hang (a blocking open, a parse that takes minutes) into a failure."""
    def expire(signum, frame):
        raise TimeoutError(f"took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    start = time.perf_counter()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert time.perf_counter() - start < seconds


# ---- control characters: refused anywhere in a spec, at a caret, never printed raw

# (id, spec, line:col, message)
CONTROLS = [
    ("escape_in_name", 'network "a\x1b[2Jb"\ninput 2\nrelu\n', "1:11",
     "a spec cannot contain the control character U+001B"),
    ("lone_cr_in_name", 'network "a\rb"\ninput 2\nrelu\n', "1:11",
     "a carriage return (U+000D) that does not end a line"),
    ("lone_cr_between_tokens", "input 2\rrelu\n", "1:8",
     "a carriage return (U+000D) that does not end a line"),
    ("c1_next_line", "input 2\nrelu # x\x85y\n", "2:9",
     "a spec cannot contain the control character U+0085"),
    ("delete", "input 2\x7f\nrelu\n", "1:8",
     "a spec cannot contain the control character U+007F"),
    ("form_feed", "input 2\n\frelu\n", "2:1",
     "a spec cannot contain the control character U+000C"),
    ("line_separator", "input 2\nrelu\u2028\n", "2:5",
     "a spec cannot contain the line separator U+2028"),
    ("bidi_override_in_comment", "input 2\n# \u202eter\u202c\nrelu\n", "2:3",
     "a spec cannot contain the bidirectional-text control U+202E"),
    ("lone_surrogate", "input 2\nrelu # \ud800\n", "2:8",
     "a spec cannot contain the lone surrogate U+D800"),
]


@pytest.mark.parametrize("spec, where, message", [c[1:] for c in CONTROLS],
                         ids=[c[0] for c in CONTROLS])
def test_control_characters_are_refused_at_a_caret(spec, where, message):
    head, line, caret = shown(fails(spec))
    line_no, col = map(int, where.split(":"))
    assert head == f"<string>:{where}: error: {message}"
    # The line is shown with U+FFFD in the character's place, so the caret still points at it.
    assert caret == "    " + " " * (col - 1) + "^"
    assert line[4 + col - 1] == "\ufffd"
    assert all(ord(ch) >= 0x20 and not 0x7f <= ord(ch) <= 0x9f for ch in line)


def test_a_tab_in_a_network_name_is_refused_but_tabs_and_crlf_elsewhere_are_fine():
    head, _, caret = shown(fails('network "LeNet\t5"\ninput 2\nrelu\n'))
    assert head == "<string>:1:15: error: a network's name cannot contain a tab"
    assert caret == "    " + " " * 14 + "^"
    net = load_spec('network "LeNet 5"\r\ninput 2\t# two\r\n\tfc(3) -\r\n  relu\r\n')
    assert net.name == "LeNet 5" and len(net.layers) == 2


def test_report_of_a_name_with_an_escape_prints_nothing_raw(tmp_path, capsys):
    spec = tmp_path / "evil.net"
    spec.write_text('network "\x1b]0;pwned\x07\x1b[2J"\ninput 2\nrelu\n')
    assert cli.main(["report", str(spec)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"{spec}:1:10: error: a spec cannot contain the control character "
                          f"U+001B")
    assert not any(ch in out + err for ch in "\x1b\x07")


# ---- names


def test_network_names_are_at_most_100_characters():
    assert load_spec(f'network "{"n" * 100}"\ninput 2\nrelu\n').name == "n" * 100
    head, line, caret = shown(fails(f'network "{"n" * 101}"\ninput 2\nrelu\n'))
    assert head == "<string>:1:9: error: this name is 101 characters long; a name has at most 100"
    assert caret == "    " + " " * 8 + "^" * 103


def test_other_names_are_bounded_too():
    label = "x" * 5000
    head, _, _ = shown(fails(f"input 2\n{label}: relu\n"))
    assert head == "<string>:2:1: error: this name is 5,000 characters long; a name has at " \
                   "most 100"


@pytest.mark.parametrize("spec, where, message", [
    ("input " + "9" * 5000 + "\nrelu\n", "1:7",
     "this number is 5,000 characters long; a number has at most 100"),
    ("input 1x" + "9" * 5000 + "x1\nrelu\n", "1:7",
     "this size is 5,004 characters long; a size has at most 100"),
    ("input 1x8x8\nconv(2, k=3x" + "9" * 400 + ")\n", "2:11",
     "this size is 402 characters long; a size has at most 100"),
])
def test_numbers_too_long_to_convert_are_refused_at_their_caret(spec, where, message):
    head, _, _ = shown(fails(spec))  # int() refuses 4,300 digits and more; a float overflows
    assert head == f"<string>:{where}: error: {message}"
    # The longest number allowed is 100 characters, and is refused as out of range.
    assert fails("input " + "9" * 100 + "\nrelu\n").message == \
        "an input size is absurdly large (1e+100; at most 2,147,483,647)"


def test_an_empty_network_name_is_refused():
    head, _, caret = shown(fails('network ""\ninput 2\nrelu\n'))
    assert head == "<string>:1:9: error: the network's name is empty"
    assert caret == "    " + " " * 8 + "^^"


@pytest.mark.parametrize("stem, why", [
    ("two\nlines", "contains the control character U+000A"),
    ("bell\x07", "contains the control character U+0007"),
    ('say "hi"', "contains a double quote"),
    ("l" * 101, "is 101 characters long; a name has at most 100"),
])
def test_a_file_name_that_cannot_be_a_network_name_needs_a_network_line(tmp_path, stem, why):
    path = tmp_path / f"{stem}.net"
    path.write_text("input 2\nrelu\n")
    e = fails(path)
    shown_stem = stem.replace("\n", "\\n").replace("\x07", "\\x07")
    assert e.format() == (f"error: the network would be named after the file, but the name "
                          f"'{shown_stem}' {why}\n"
                          f'hint: name the network in the spec, e.g. network "my net"')
    path.write_text('network "fine"\ninput 2\nrelu\n')
    assert load_spec(path).name == "fine"
    plain = tmp_path / "my net (v2).net"
    plain.write_text("input 2\nrelu\n")
    assert load_spec(plain).name == "my net (v2)"


# ---- size limits, checked before parsing


def test_a_spec_over_one_mebibyte_is_refused_before_parsing(tmp_path):
    text = "input 2\n" + "fc(2) - " * 1_000_000 + "relu\n"  # the 8 MB spec
    path = tmp_path / "huge.net"
    path.write_text(text)
    with deadline(5):
        assert fails(text).format() == \
            "error: the spec is larger than netc accepts (1,048,576 bytes at most)"
        assert fails(path).format() == \
            f"error: the spec '{path}' is larger than netc accepts (1,048,576 bytes at most)"
    exact = "input 2\nrelu\n"
    exact += "#" * (2**20 - len(exact) - 1) + "\n"
    assert len(load_spec(exact).layers) == 1


def test_a_spec_over_20000_tokens_is_refused_before_parsing():
    terms = " - ".join(["fc(2)"] * 5000)  # 25,000 tokens in 40 KB: 5,000 layers written out
    params = "\n".join(f"param p{i} = {i}" for i in range(6000))  # 24,000 tokens in 6,000 lines
    for filler, line in ((terms, 2), (params, 5001)):
        with deadline(5):
            e = fails("input 2\n" + filler + "\n")
        assert e.message == "the spec has more than 20,000 tokens (names, numbers and " \
                            "symbols); this is token 20,001"
        assert e.span.line == line
    # Comments count for nothing, and a table's rows for one token.
    rows = "\n".join("X" * 200 for _ in range(200))
    text = "# " + "word " * 30_000 + f"\ninput 200x4x4\ntable t {{\n{rows}\n}}\n" \
           "conv(200, k=1, table=t)\n"
    assert load_spec(text).layers[0].table.in_channels == 200


# ---- -D values


def test_an_override_too_large_for_a_float_is_refused():
    e = fails("input 2\nparam s = 1\n(relu)*s\n", {"s": 10**400})
    assert e.format() == "error: -D s: the value is too large (at most about 1.8e308)"


def test_an_override_name_is_printed_escaped():
    e = fails("input 2\nparam s = 1\nrelu\n", {"\x1b[2J": 1})
    assert e.format() == "error: -D \\x1b[2J: <string> declares no parameter '\\x1b[2J' " \
                         "(declared: s)"


# ---- files that are not regular files


def test_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "spec.net"
    os.mkfifo(fifo)
    with deadline(5):
        e = fails(fifo)
    assert e.format() == f"error: cannot read the spec '{fifo}': it is a FIFO (named pipe), " \
                         f"not a regular file"


def test_a_device_is_refused():
    e = fails(Path("/dev/null"))
    assert e.format() == "error: cannot read the spec '/dev/null': it is a character device, " \
                         "not a regular file"


# ---- sizes the generated C counts in an int


def test_an_input_of_2_to_the_31_elements_is_refused_at_its_size():
    head, _, caret = shown(fails("input 2x32768x32768\nrelu\n"))
    assert head == "<string>:1:7: error: the input is 2,147,483,648 elements, more than " \
                   "netc's limit of 2,147,483,647 (2**31 - 1)"
    assert caret == "    " + " " * 6 + "^" * 13
    assert load_spec("input 2147483647\nrelu\n").input == (2**31 - 1, 1, 1)


def test_an_error_deep_in_a_long_line_shows_a_window_around_the_caret():
    """A 1 MB one-line spec used to print the whole line and a 1 MB caret line."""
    from netc.span import CONTEXT_COLUMNS, Source, Span
    for before, after in ((10**6, 10**6), (0, 10**6), (10**6, 0), (10, 10)):
        text = "x" * before + "BAD" + "y" * after
        line, carets = Span(Source("a.net", text), 1, before + 1, 1, before + 4).context() \
            .split("\n")
        assert len(line) <= 4 + 3 + CONTEXT_COLUMNS + 3  # indent, "..." on each side
        at = carets.index("^")
        assert carets.strip() == "^^^" and line[at:at + 3] == "BAD"
