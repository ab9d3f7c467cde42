"""`netc report` through main([...]) in-process: output, JSON schema, ranges, --rf-from, errors."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from netc.cli import main
from test_passes import VGG16_TABLE_15_2

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def report_json(capsys, *argv):
    code, out, err = run(capsys, "report", *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def test_lenet5_table(capsys):
    code, out, err = run(capsys, "report", str(EXAMPLES / "lenet5.net"))
    assert (code, err) == (0, "")
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    assert rows["c1"][5:8] == ["6×28×28", "156", "122,304"]
    assert rows["s2"][4] == "6×14×14"
    assert rows["f5"][4:6] == ["120", "48,120"]
    assert rows["total"][1] == "61,706"
    assert "training memory at batch 32 (float32, sgd, 1 thread): " in out
    assert max(map(len, out.splitlines())) <= 140


def test_lenet5_1998_json_has_lecuns_numbers(capsys):
    d = report_json(capsys, str(EXAMPLES / "lenet5-1998.net"))
    got = {r["label"]: (r["params"], r["connections"]) for r in d["layers"]}
    assert [got[k] for k in ("C1", "S2", "C3", "S4", "C5", "F6")] == [
        (156, 122_304), (12, 5_880), (1_516, 151_600), (32, 2_000), (48_120, 48_120),
        (10_164, 10_164)]
    c3 = d["layers"][2]
    assert c3["attrs"]["table"]["rows"][0] == "X...XXX..XXXX.XX"
    assert c3["attrs"]["act"] == {"kind": "tanh", "a": 1.7159, "b": pytest.approx(2 / 3)}


def test_json_schema(capsys):
    d = report_json(capsys, str(EXAMPLES / "vgg16.net"), "--batch", "4")
    assert d["schema_version"] == 2
    assert {"name", "input", "loss", "bindings", "layers", "totals", "final_rf", "training",
            "warnings"} <= set(d)
    for layer in d["layers"]:
        assert {"label", "type", "inputs", "attrs", "in", "out", "params", "connections", "rf",
                "macs", "flops", "act_bytes"} <= set(layer)
        assert set(layer["rf"]) == {"size", "jump", "start"}
    conv = d["layers"][0]
    assert (conv["type"], conv["attrs"]["kernel"], conv["attrs"]["stride"], conv["attrs"]["pad"],
            conv["attrs"]["out_channels"]) == ("conv", [3, 3], [1, 1], [1, 1], 64)
    pool = next(r for r in d["layers"] if r["label"] == "pool5")
    assert pool["attrs"]["mode"] == "max" and pool["rf"]["size"] == [212, 212]
    assert {"params": 138_357_544, "flops": 30_940_528_640}.items() <= d["totals"].items()
    assert d["training"]["batch"] == 4 and d["training"]["bytes"] > d["totals"]["param_bytes"]
    assert d["final_rf"]["layer"] == "pool5"


def test_rf_from_pool5_reproduces_table_15_2(capsys):
    code, out, err = run(capsys, "report", str(EXAMPLES / "vgg16.net"), "--rf-from", "pool5")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].startswith("receptive field of one element of pool5's output")
    assert [int(line.split()[-1]) for line in lines[4:]] == [*VGG16_TABLE_15_2, 1]
    assert lines[-1].split()[:3] == ["32", "fc6", "fc"]


def test_rf_from_in_json(capsys):
    d = report_json(capsys, str(EXAMPLES / "vgg16.net"), "--rf-from", "conv5_3")
    assert d["rf_from"]["layer"] == "conv5_3"
    assert d["rf_from"]["layers"][0] == {"index": 0, "label": "conv1_1", "input": [196, 196],
                                         "output": [194, 194]}
    assert d["rf_from"]["layers"][-1]["output"] == [1, 1]


def test_range_gives_a_comparison_table(capsys):
    code, out, err = run(capsys, "report", str(EXAMPLES / "design-rule.net"),
                         "-D", "N=1..3", "-D", "M=1..2", "--batch", "8")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == ("design_rule: 6 combinations, training memory at batch 8 "
                        "(float32, sgd, 1 thread)")
    assert lines[2].split()[:4] == ["N", "M", "params", "FLOPs"]
    rows = [line.split() for line in lines[4:]]
    assert [row[:2] for row in rows] == [["1", "1"], ["1", "2"], ["2", "1"], ["2", "2"],
                                         ["3", "1"], ["3", "2"]]
    # 3×3 convs grow the field by 2 (times the jump), a 2×2 pool doubles it
    assert [(row[4], row[5]) for row in rows] == [("4", "pool1"), ("10", "pool2"),
                                                   ("6", "pool1"), ("16", "pool2"),
                                                   ("8", "pool1"), ("22", "pool2")]


def test_range_json(capsys):
    d = report_json(capsys, str(EXAMPLES / "design-rule.net"), "-D", "K=1..2")
    assert d["schema_version"] == 2
    assert [r["bindings"]["K"] for r in d["comparison"]] == [1, 2]
    assert d["comparison"][0]["totals"]["params"] < d["comparison"][1]["totals"]["params"]


def test_plain_define(capsys):
    one = report_json(capsys, str(EXAMPLES / "mcn-sk.net"), "-D", "s=0.5")
    two = report_json(capsys, str(EXAMPLES / "mcn-sk.net"), "-D", "s=2")
    assert one["bindings"]["s"] == 0.5 and two["bindings"]["s"] == 2
    assert one["layers"][0]["out"][0] == 10 and two["layers"][0]["out"][0] == 40


def test_spec_error_points_at_the_line(capsys, tmp_path):
    spec = tmp_path / "small.net"
    spec.write_text("network small\ninput 1x4x4\nc1: conv(6, k=5)\n")
    code, out, err = run(capsys, "report", str(spec))
    assert (code, out) == (2, "")
    assert err.splitlines() == [
        f"{spec}:3:5: error: c1: kernel 5 is larger than the padded input height 4 "
        "(input is 1×4×4)",
        "    c1: conv(6, k=5)",
        "        ^^^^^^^^^^^^",
        "hint: use a smaller kernel, more padding, or fewer pooling layers before it"]


def test_absurd_layer_is_refused(capsys, tmp_path):
    spec = tmp_path / "big.net"
    spec.write_text("network big\ninput 3x4096x4096\nwide: conv(100000, k=1)\n")
    code, out, err = run(capsys, "report", str(spec))
    assert code == 2
    assert err.startswith(f"{spec}:3:7: error: wide: output 100000×4096×4096: "
                          "1,677,721,600,000 elements, more than netc's limit")
    assert "Traceback" not in err


def test_shape_warnings_go_to_stderr(capsys, tmp_path):
    spec = tmp_path / "odd.net"
    spec.write_text("network odd\ninput 1x7x7\np: pool(max, 2)\n")
    code, out, err = run(capsys, "report", str(spec))
    assert code == 0 and out
    assert err == (f"{spec}:3:4: warning: p: the window does not tile the input 1×7×7 exactly: "
                   "the last 1 row(s) and 1 column(s) are never seen\n")


@pytest.mark.parametrize("argv, message", [
    (["report", "missing.net"], "error: cannot read the spec 'missing.net': no such file"),
    (["report", "{lenet5}", "--rf-from", "nope"],
     "error: --rf-from: no layer is labelled 'nope'; the labels are c1, s2, c3, s4, f5, f6, "
     "out, softmax1"),
    (["report", "{rule}", "-D", "N=1..2", "--rf-from", "pool1"],
     "error: --rf-from reports one network, but -D gives a range"),
    (["report", "{rule}", "-D", "N=1", "-D", "N=2"], "error: -D N is given more than once"),
    (["report", "{rule}", "-D", "N=1..20", "-D", "M=1..20"],
     "error: -D gives 400 combinations, more than 256"),
])
def test_errors_are_one_line(capsys, argv, message):
    paths = {"lenet5": EXAMPLES / "lenet5.net", "rule": EXAMPLES / "design-rule.net"}
    code, out, err = run(capsys, *(a.format(**paths) for a in argv))
    assert (code, out, err) == (2, "", message + "\n")


@pytest.mark.parametrize("option, message", [
    (["-D", "N"], "argument -D: expected name=value, got 'N'"),
    (["-D", "N=x"], "argument -D: N: expected a number, got 'x'"),
    (["-D", "N=1.5..3"], "argument -D: N: expected a range of integers, as in N=1..3"),
    (["-D", "N=3..1"], "argument -D: N: a range holds 1 to 256 values, smaller end first"),
    (["-D", "N=1..1000000000"], "argument -D: N: a range holds 1 to 256 values"),
    (["-D", "N=nan"], "argument -D: N: expected a number, got 'nan'"),
    (["--batch", "0"], "argument --batch: expected a positive integer, got '0'"),
])
def test_bad_options_exit_2(capsys, option, message):
    code, out, err = run(capsys, "report", str(EXAMPLES / "lenet5.net"), *option)
    assert code == 2 and out == ""
    assert err.splitlines()[-1].startswith(f"netc report: error: {message}")


def test_unknown_option(capsys):
    code, out, err = run(capsys, "report", str(EXAMPLES / "lenet5.net"), "--frobnicate")
    assert (code, out) == (2, "")
    assert err.splitlines()[-1] == "netc: error: unrecognized arguments: --frobnicate"


def test_os_errors_are_one_line(capsys, monkeypatch):
    def refuse(path, overrides):
        raise PermissionError(13, "Permission denied", str(path))
    monkeypatch.setattr("netc.lower.load_spec", refuse)
    assert run(capsys, "report", "locked.net") == (2, "", "error: locked.net: Permission denied\n")


def test_no_arguments_prints_help(capsys):
    code, out, err = run(capsys)
    assert code == 0
    assert out.startswith("usage: netc") and "report" in out


def test_installed_console_script(tmp_path):
    script = shutil.which("netc", path=str(Path(sys.executable).parent)) or shutil.which("netc")
    assert script, "the netc console script is not installed (pip install -e .)"
    done = subprocess.run([script, "report", str(EXAMPLES / "cs231n.net")], capture_output=True,
                          text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "10×32×32" in done.stdout and "760" in done.stdout
    bad = subprocess.run([script, "report", "missing.net"], capture_output=True, text=True,
                         cwd=tmp_path)
    assert (bad.returncode, bad.stderr) == (
        2, "error: cannot read the spec 'missing.net': no such file\n")


def test_training_memory_follows_optimizer_and_threads_and_matches_the_compiled_model(capsys):
    import netc
    lenet = str(EXAMPLES / "lenet5.net")
    sgd = report_json(capsys, lenet, "--batch", "8")["training"]
    adam = report_json(capsys, lenet, "--batch", "8", "--optimizer", "adam")["training"]
    two = report_json(capsys, lenet, "--batch", "8", "--threads", "2")["training"]
    # Adam keeps two moments where momentum keeps one: one more float per parameter (61,706),
    # plus the step counter and the 64-byte alignment padding of the new buffers.
    assert 0 <= adam["bytes"] - sgd["bytes"] - 4 * 61_706 < 512
    assert (adam["optimizer"], two["threads"]) == ("adam", 2)
    model = netc.load(lenet).compile(batch=8, threads=2, flags=["-O0"])
    assert two["bytes"] == model.nbytes != sgd["bytes"]
