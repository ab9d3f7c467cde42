"""The `netc` command's one error boundary (issue 9 §11, §12, §14; issue 10 §9, §10): one line and
a status for everything, never a traceback: huge -D values, Ctrl-C at any point (imports
included), a closed stdout, messages that quote control characters, out of memory; help that
offers ranges only where they work; the compile notice on a cold cache; a BatchNorm hint that
names the option."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from netc.cli import main

ROOT = Path(__file__).resolve().parent.parent
FC_BN = "input 6\nfc(10) - bn - relu - fc(3) - softmax"


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def spec(tmp_path):
    path = tmp_path / "s.net"
    path.write_text("param s = 2\ninput 4\nfc(s) - softmax\n")
    return path


def netc_process(*argv, env=None, cwd=None, timeout=120, code=None):
    """`python -m netc ARGV` (or the given -c code) with the test's environment."""
    command = [sys.executable, *(["-c", code] if code else ["-m", "netc"]), *map(str, argv)]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          env={**os.environ, "NETC_CFLAGS": "-O0", **(env or {})})


# ---- -D values that do not fit a float

HUGE = "1" + "0" * 400


@pytest.mark.parametrize("value, message", [
    (HUGE, f"s: expected a number, got '{HUGE[:24]}'... (401 characters)"),
    ("-" + HUGE, "s: expected a number, got '-1000"),
    (f"1..{HUGE[:301]}", "s: a range holds 1 to 256 values, smaller end first"),
    (f"{HUGE}..{HUGE}", "s: expected a range of integers, as in N=1..3, got '1000"),
])
def test_a_400_digit_value_is_one_clean_error(capsys, spec, value, message):
    code, out, err = run(capsys, "report", spec, "-D", f"s={value}")
    assert (code, out) == (2, "")
    assert err.splitlines()[-1].startswith(f"netc report: error: argument -D: {message}")
    assert len(err.splitlines()[-1]) < 200


# ---- help offers a..b ranges only where they work

@pytest.mark.parametrize("command", ["compile", "gradcheck", "train", "eval", "predict"])
def test_help_offers_ranges_only_for_report(capsys, command):
    assert main([command, "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "a..b" not in text and "range" not in text
    assert "-D NAME=VALUE set a parameter of the spec to one value" in text
    assert main(["report", "--help"]) == 0
    assert "a..b is an integer range" in " ".join(capsys.readouterr().out.split())


def test_threads_beyond_the_limit_are_refused_at_once(spec):
    done = netc_process("report", spec, "--threads", 2**40, timeout=30)
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1].startswith(
        "netc report: error: argument --threads: expected 1 to 1024 threads")


# ---- Ctrl-C anywhere: status 130 and one line

INTERRUPT_AT_IMPORT = textwrap.dedent("""
    import importlib.abc, os, runpy, signal, sys
    entry, module, argv = sys.argv[1], sys.argv[2], sys.argv[3:]

    class Interrupt(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name == module:  # as if Ctrl-C came while this module loads
                os.kill(os.getpid(), signal.SIGINT)

    sys.meta_path.insert(0, Interrupt())
    sys.argv = ["netc", *argv]
    if entry == "script":  # what the installed `netc` script does (pyproject's entry point)
        from netc.__main__ import main
        sys.exit(main())
    runpy.run_module("netc", run_name="__main__")
""")


def test_the_netc_command_enters_through_the_guarded_main():
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '\nnetc = "netc.__main__:main"\n' in pyproject


@pytest.mark.parametrize("entry", ["script", "python -m netc"])
@pytest.mark.parametrize("module", ["lark", "numpy", "netc.cli"])
def test_ctrl_c_while_importing_is_status_130_and_no_traceback(spec, module, entry):
    done = netc_process(entry, module, "gradcheck", spec, code=INTERRUPT_AT_IMPORT)
    assert done.returncode == 130, done.stderr
    assert "Traceback" not in done.stderr and "KeyboardInterrupt" not in done.stderr
    # before main() exists (netc.cli loading) the status alone; afterwards one line too
    assert done.stderr.strip() == ("" if module == "netc.cli" else "interrupted")


def test_ctrl_c_inside_a_command_is_one_line(capsys, monkeypatch, spec):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("netc.lower.load_spec", interrupted)
    # one line: no empty line before it when stderr is not a terminal (here, captured)
    assert run(capsys, "compile", spec, "--emit-c") == (130, "", "interrupted\n")


def test_out_of_memory_is_one_line(capsys, monkeypatch, spec):
    def exhausted(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr("netc.lower.load_spec", exhausted)
    assert run(capsys, "report", spec) == (2, "", "error: out of memory\n")


# ---- a closed stdout: quiet, status 141, as Unix tools

def test_train_into_head_stops_quietly_with_141(tmp_path):
    command = (f"{sys.executable} -m netc train {ROOT / 'examples/xor.net'} --data xor "
               f"--batch full --lr 2 --epochs 5000 --out {tmp_path / 'run'} 2> {tmp_path / 'err'}"
               " | head -3; echo \"status ${PIPESTATUS[0]}\"")
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NETC_CFLAGS": "-O0"})
    lines = done.stdout.splitlines()
    assert len(lines) == 4 and lines[-1] == "status 141", done.stdout
    err = (tmp_path / "err").read_text()
    assert "error" not in err and "Broken pipe" not in err and "Exception" not in err, err


# ---- control characters in messages are shown, not obeyed

@pytest.mark.parametrize("name", ["a\x1b[31mred.net", "over\rwrite.net", "bell\x07\x9b.net"])
def test_messages_show_control_characters_as_escapes(capsys, tmp_path, name):
    code, out, err = run(capsys, "report", tmp_path / name)
    assert code == 2 and out == ""
    assert all(c == "\n" or c.isprintable() for c in err), repr(err)
    assert ascii(name)[1:-1] in err  # each control character written as its escape


def test_os_error_messages_show_control_characters_as_escapes(capsys, monkeypatch, spec):
    def refuse(path, overrides):
        raise PermissionError(13, "Permission denied", "locked\x1b]0;title\x07.net")

    monkeypatch.setattr("netc.lower.load_spec", refuse)
    assert run(capsys, "report", spec) == (
        2, "", "error: locked\\x1b]0;title\\x07.net: Permission denied\n")


# ---- the first compile says so

def test_a_cold_cache_says_compiling_once(tmp_path, spec):
    env = {"NETC_CACHE": str(tmp_path / "cache")}
    first = netc_process("compile", spec, "-o", tmp_path / "out", env=env)
    second = netc_process("compile", spec, "-o", tmp_path / "out", env=env)
    assert (first.returncode, second.returncode) == (0, 0), first.stderr + second.stderr
    assert first.stderr.splitlines().count("compiling s (first run; cached afterwards)") == 1
    assert "compiling" not in second.stderr


# ---- the BatchNorm batch-1 hint names the option, not the API

@pytest.fixture
def fc_bn(tmp_path):
    (tmp_path / "fc_bn.net").write_text(FC_BN)
    return tmp_path / "fc_bn.net"


def test_gradcheck_batch_1_hint_names_the_option(capsys, fc_bn):
    code, out, err = run(capsys, "gradcheck", fc_bn, "--batch", 1)
    assert code == 2 and out == ""
    assert err.startswith("error: BatchNorm layer 'bn1' gets an input of shape (1, 10, 1, 1)")
    assert err.endswith("hint: train on batches of at least 2 samples: --batch 2 or more\n")
    assert "train=False" not in err


def test_train_batch_1_hint_names_the_option(capsys, tmp_path, fc_bn):
    code, out, err = run(capsys, "train", fc_bn, "--data", "xor", "--batch", 1,
                         "--out", tmp_path / "run")
    assert code == 2 and "train=False" not in err
    assert err.endswith("hint: train on batches of at least 2 samples: --batch 2 or more\n")
    assert not (tmp_path / "run").exists()  # refused before loading data or compiling


# ---- what commands write: never through a FIFO or a link, paths escaped on stdout

def test_compile_output_replaces_fifos_and_links_and_escapes_the_path(tmp_path, spec):
    out = tmp_path / "o\x1b[31m"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    os.mkfifo(out / "s.c")  # opening it to write would wait for a reader forever
    os.symlink(victim, out / "s.h")
    done = netc_process("compile", spec, "-o", out, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stdout and "o\\x1b[31m/s.c" in done.stdout
    assert victim.read_text() == "keep" and not (out / "s.h").is_symlink()
    assert (out / "s.c").read_text().startswith("// s: generated by netc")


def test_train_replaces_a_fifo_where_its_log_goes(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    os.mkfifo(run_dir / "log.jsonl")
    done = netc_process("train", ROOT / "examples" / "xor.net", "--data", "xor", "--epochs", "2",
                        "--out", run_dir, timeout=60)
    assert done.returncode == 0, done.stderr
    assert len((run_dir / "log.jsonl").read_text().splitlines()) == 3  # 2 epochs and the test


@pytest.mark.parametrize("command", ["train", "gradcheck"])
def test_a_negative_seed_is_refused_by_the_option_parser(capsys, spec, command):
    assert main([command, str(spec), "--seed", "-1"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"netc {command}: error: argument --seed: expected an integer ≥ 0, got '-1'")
