"""netc.report on hand-built nets: the JSON dict, the tables drawn from it, their widths."""
import json

import pytest

from netc import ir, report
from netc.passes import analyze, memory
from netc.passes.receptive import rf_from
from test_passes import SAMPLES, VGG16_TABLE_15_2, alexnet, lenet5, lenet5_1998, vgg16

LAYER_KEYS = {"index", "label", "type", "inputs", "summary", "attrs", "in", "out", "params",
              "weights", "biases", "buffers", "connections", "rf", "macs", "flops", "param_bytes",
              "act_bytes"}


def data(net, batch=32):
    return report.data(net, analyze(net), batch)


def last_column(table: str) -> list[int]:
    """The numbers of a rendered table's last column, below its header and rule."""
    return [int(line.split()[-1]) for line in table.splitlines()[4:] if line.strip()]


@pytest.mark.parametrize("fused", [True, False], ids=["act=relu", "relu layers"])
def test_rf_from_pool5_renders_table_15_2_row_for_row(fused):
    net = vgg16(fused)
    d = data(net)
    d["rf_from"] = report.reach_data(net, rf_from(net, analyze(net).shapes, "pool5"))
    text = report.render_reach(d)
    assert last_column(text) == [*VGG16_TABLE_15_2, 1]
    rows = text.splitlines()[4:]
    assert rows[0].split()[:2] == ["1", "conv1_1"]
    assert rows[1].split()[:2] == ["2", "relu" if fused else "relu1_1"]
    assert rows[30].split()[:2] == ["31", "pool5"]
    assert rows[31].split()[:3] == ["32", "fc6", "fc"]


def test_reach_data_gives_input_and_output_extents():
    net = vgg16()
    reach = report.reach_data(net, rf_from(net, analyze(net).shapes, "pool5"))
    assert reach["layer"] == "pool5"
    assert reach["layers"][0] == {"index": 0, "label": "conv1_1", "input": [212, 212],
                                  "output": [210, 210]}
    assert reach["layers"][-1] == {"index": 17, "label": "pool5", "input": [2, 2],
                                   "output": [1, 1]}


def test_rf_from_the_last_layer_ends_with_the_output():
    net = lenet5()
    d = data(net)
    d["rf_from"] = report.reach_data(net, rf_from(net, analyze(net).shapes, "prob"))
    text = report.render_reach(d)
    assert text.splitlines()[-1].split() == ["13", "(output)", "1"]  # 8 layers, 4 act=


def test_json_has_every_layer_attribute_and_round_trips():
    net = lenet5_1998()
    d = data(net)
    assert json.loads(json.dumps(d)) == d
    assert d["schema_version"] == 2
    assert set(d) == {"schema_version", "netc_version", "name", "input", "loss", "bindings",
                      "layers", "totals", "final_rf", "training", "warnings"}
    assert all(set(layer) == LAYER_KEYS for layer in d["layers"])
    c3 = d["layers"][2]
    assert c3["attrs"] == {
        "out_channels": 16, "kernel": [5, 5], "stride": [1, 1], "pad": [0, 0], "bias": True,
        "groups": 1, "act": {"kind": "tanh", "a": 1.7159, "b": 2 / 3},
        "table": {"name": "c3", "rows": ["X...XXX..XXXX.XX", "XX...XXX..XXXX.X",
                                         "XXX...XXX..X.XXX", ".XXX..XXXX..X.XX",
                                         "..XXX..XXXX.XX.X", "...XXX..XXXX.XXX"]}}
    assert (c3["in"], c3["out"], c3["params"], c3["connections"]) == (
        [6, 14, 14], [16, 10, 10], 1_516, 151_600)
    assert c3["rf"] == {"size": [14, 14], "jump": [2, 2], "start": [6.5, 6.5]}
    assert d["layers"][1]["attrs"] == {
        "kernel": [2, 2], "stride": [2, 2], "act": {"kind": "tanh", "a": 1.7159, "b": 2 / 3}}
    assert d["final_rf"] == {"layer": "s4", "size": [16, 16], "jump": [4, 4],
                             "start": [7.5, 7.5]}


def test_json_totals_and_training_memory_from_the_plan():
    net = vgg16()
    a = analyze(net)
    d = report.data(net, a, 8)
    assert d["totals"]["params"] == 138_357_544
    assert d["totals"]["macs"] == 15_470_264_320
    assert d["totals"]["flops"] == 30_940_528_640
    assert d["totals"]["train_flops"] == 92_821_585_920
    plan = memory.plan(net, a.shapes, 8, "float32", "sgd")
    assert d["training"]["bytes"] == plan.total_bytes
    assert d["training"]["by_role"] == plan.bytes_by_role()
    assert (d["training"]["batch"], d["training"]["dtype"], d["training"]["optimizer"]) == (
        8, "float32", "sgd")
    assert sum(d["training"]["by_role"].values()) == d["training"]["bytes"]


def test_render_vgg16_fits_and_shows_the_totals():
    text = report.render(data(vgg16()))
    assert max(map(len, text.splitlines())) <= 140
    table = text.split("\n\n")[1].splitlines()
    assert table[0].split() == ["layer", "type", "output", "params", "connections", "rf", "jump",
                                "start", "MACs", "FLOPs", "act/sample"]
    assert table[2].split() == ["conv1_1", "conv", "64", "3×3", "p1", "relu", "64×224×224",
                                "1,792", "89,915,392", "3", "1", "0", "86.7M", "173M",
                                "12.2", "MiB"]
    assert table[-1].split() == ["total", "138,357,544", "15,483,821,032", "15.5G", "30.9G",
                                 "57.6", "MiB"]
    assert table[19].split()[:6] == ["pool5", "maxpool", "2×2", "s2", "512×7×7", "0"]
    assert "forward per sample: 15.5G MACs = 30.9G FLOPs; training step: 46.4G MACs" in text
    assert "training memory at batch 32 (float32, sgd, 1 thread): " in text
    assert "FLOPs = 2 × MACs" in text and "0-indexed pixel centres, padding included" in text


@pytest.mark.parametrize("net", [lenet5(), lenet5_1998(), vgg16(False), alexnet()],
                         ids=lambda n: n.name)
def test_every_table_fits_140_columns(net):
    d = data(net)
    assert max(map(len, report.render(d).splitlines())) <= 140
    d["rf_from"] = report.reach_data(net, rf_from(net, analyze(net).shapes, net.layers[-1].label))
    assert max(map(len, report.render_reach(d).splitlines())) <= 140


def test_summaries():
    net = lenet5_1998()
    assert [report.summary(layer) for layer in net.layers] == [
        "conv 6 5×5 tanh(1.7159, 0.6667)", "subsample 2×2 s2 tanh(1.7159, 0.6667)",
        "conv 16 5×5 table c3 tanh(1.7159, 0.6667)", "subsample 2×2 s2 tanh(1.7159, 0.6667)",
        "conv 120 5×5 tanh(1.7159, 0.6667)", "fc 84 tanh(1.7159, 0.6667)", "fc 10", "softmax"]
    assert report.summary(alexnet().layers[2]) == "conv 256 5×5 p2 g2 relu"
    odd = ir.Conv(label="x", out_channels=3, kernel=(3, 5), stride=(2, 1), pad=(1, 2),
                  bias=False, act=ir.Activation("sigmoid", 2.0))
    assert report.summary(odd) == "conv 3 3×5 s2×1 p1×2 nobias sigmoid(2)"


@pytest.mark.parametrize("kind", ir.LAYER_KINDS, ids=lambda k: k.__name__)
def test_every_kind_renders(kind):
    net = ir.Net("t", (2, 6, 6), (SAMPLES[kind],))
    d = data(net)
    assert d["layers"][0]["type"] == kind.__name__.lower()
    assert d["layers"][0]["summary"] == report.summary(SAMPLES[kind])
    assert "x" in report.render(d)


def test_comparison_table_has_a_row_per_combination():
    def net(n):
        layers = [ir.Conv(label=f"c{i}", out_channels=4, kernel=(3, 3), pad=(1, 1))
                  for i in range(n)]
        return ir.Net("rule", (1, 8, 8), (*layers, ir.Pool(label="p", mode="max", kernel=(2, 2),
                                                          stride=(2, 2)),
                                         ir.FC(label="fc", units=2)), params=(("N", n), ("K", 7)))
    text = report.render_comparison([data(net(n)) for n in (1, 2, 3)])
    lines = text.splitlines()
    assert lines[0] == "rule: 3 combinations, training memory at batch 32 (float32, sgd, 1 thread)"
    assert lines[2].split() == ["N", "params", "FLOPs", "final", "rf", "at", "train", "memory"]
    assert [line.split()[:5] for line in lines[4:]] == [
        ["1", "170", "4.86k", "4", "p"], ["2", "318", "23.3k", "6", "p"],
        ["3", "466", "41.7k", "8", "p"]]


def test_warnings_are_in_the_json():
    net = ir.Net("t", (1, 7, 7), (ir.Pool(label="p", mode="max", kernel=(2, 2), stride=(2, 2)),))
    (w,) = data(net)["warnings"]
    assert w["layer"] == "p" and "never seen" in w["message"] and w["where"] is None


@pytest.mark.parametrize("n, text", [(999, "999"), (999_499, "999k"), (999_500, "1M"),
                                     (15_470_264_320, "15.5G"), (2 * 10**12, "2T")])
def test_si(n, text):
    assert report._si(n) == text


@pytest.mark.parametrize("n, text", [(999, "999 B"), (1000, "0.977 KiB"), (1024, "1 KiB"),
                                     (1_040_000, "0.992 MiB"), (5 * 2**30, "5 GiB")])
def test_bytes(n, text):
    assert report._bytes(n) == text

