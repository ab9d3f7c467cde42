"""Training curves (netc.plot, `netc plot`, DIR/curves.png from `netc train`): the log reader on a
resumed run's real log, the drawn data against the log's numbers, the PNG's content and size, the
legend of overlaid runs, bad logs, the throttle, and the message without matplotlib."""
import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from xml.etree import ElementTree

import numpy as np
import pytest

import netc
from netc import plot
from netc.cli import main
from netc.data import load_image
from netc.errors import DataError
from netc.train import Config, fit

MLP = "network mlp\ninput 1x28x28\nfc(16, act=relu) - fc(10) - softmax\n"
QUIET = dict(echo=lambda *a: None, progress=False, flags=["-O1"])
NO_MATPLOTLIB = "import sys; sys.modules['matplotlib'] = None; from netc.cli import main; " \
                "sys.exit(main(sys.argv[1:]))"
SVG = "{http://www.w3.org/2000/svg}"
MISSING = "error: netc plot needs matplotlib: pip install 'netc[plot]'"


@pytest.fixture(autouse=True)
def _light_flags(monkeypatch):
    monkeypatch.setenv("NETC_CFLAGS", "-O1")


@pytest.fixture(scope="module")
def resumed(tmp_path_factory, digits):
    """A run of 2 epochs resumed to 4: its folder, holding the log --resume rewrote."""
    out = tmp_path_factory.mktemp("runs") / "base"
    fit(netc.load(MLP), digits, Config(epochs=2, seed=3), out=out, **QUIET)
    fit(netc.load(MLP), digits, Config(epochs=4, seed=3), resume=out / "checkpoint.npz", **QUIET)
    return out


def json_lines(run):
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def png_size(path):
    """(width, height) from the IHDR of a PNG whose every chunk's CRC is right."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    at, chunks = 8, []
    while at < len(data):
        length, kind = struct.unpack(">I4s", data[at:at + 8])
        body = data[at + 8:at + 8 + length]
        assert struct.unpack(">I", data[at + 8 + length:at + 12 + length])[0] == \
            zlib.crc32(kind + body)
        chunks.append((kind, body))
        at += 12 + length
    assert chunks[0][0] == b"IHDR" and chunks[-1][0] == b"IEND"
    return struct.unpack(">II", chunks[0][1][:8])


def svg_texts(path):
    """The SVG's root element (checked to be an <svg>) and the strings of its <text> elements."""
    root = ElementTree.fromstring(path.read_bytes())
    assert root.tag == f"{SVG}svg"
    return root, [t.text for t in root.iter(f"{SVG}text")]


def lines_of(axes, gid):
    return [line for line in axes.get_lines() if line.get_gid() == gid]


def test_the_reader_gives_a_resumed_run_as_one_series_of_the_logs_numbers(resumed):
    records = json_lines(resumed)
    epochs, test = records[:-1], records[-1]
    log = plot.read_log(resumed)
    assert log.name == "base" and log.epochs == [1, 2, 3, 4] == [r["epoch"] for r in epochs]
    for series in ("train_loss", "train_acc", "val_loss", "val_acc"):
        assert getattr(log, series) == [r[series] for r in epochs]
    assert (log.test_loss, log.test_acc) == (test["test_loss"], test["test_acc"])
    assert plot.read_log(resumed / "log.jsonl") == log  # the folder or its log


def test_the_figure_draws_the_logs_numbers(resumed):
    records = json_lines(resumed)
    epochs, test = records[:-1], records[-1]
    loss, acc = plot.draw([plot.read_log(resumed)]).axes
    for axes, key, scale in ((loss, "loss", 1), (acc, "acc", 100)):
        (train,), (val,), (marker,) = (lines_of(axes, g) for g in ("train", "val", "test"))
        assert list(train.get_xdata()) == [1, 2, 3, 4] == list(val.get_xdata())
        assert list(train.get_ydata()) == [scale * r[f"train_{key}"] for r in epochs]
        assert list(val.get_ydata()) == [scale * r[f"val_{key}"] for r in epochs]
        assert list(marker.get_xdata()) == [4]
        assert list(marker.get_ydata()) == [scale * test[f"test_{key}"]]
        assert any(t.get_text().startswith("test ") for t in axes.texts)


def test_netc_plot_writes_a_png_of_the_expected_size(capsys, resumed, tmp_path):
    out = tmp_path / "curves.png"
    assert main(["plot", str(resumed), "-o", str(out)]) == 0
    assert capsys.readouterr().out == f"curves: {out}\n"
    assert png_size(out) == (1000, 400) == (plot.SIZE[0] * plot.DPI, plot.SIZE[1] * plot.DPI)
    pixels = load_image(out, keep_channels=True)
    assert pixels.shape[1:] == (400, 1000) and pixels.std() > 0.05  # drawn, not blank
    assert not list(tmp_path.glob(".tmp-*"))  # written atomically, nothing left beside it


def test_a_svg_name_gives_an_svg_with_its_text_as_text_the_same_each_time(capsys, resumed,
                                                                         tmp_path):
    first, second = tmp_path / "a.svg", tmp_path / "b.SVG"
    for out in (first, second):
        assert main(["plot", str(resumed), "-o", str(out)]) == 0
    root, texts = svg_texts(first)
    assert (root.get("width"), root.get("height")) == ("720pt", "288pt")  # 10×4 inches
    test = json_lines(resumed)[-1]
    assert {"epoch", "loss", "accuracy (%)", f"test {100 * test['test_acc']:.2f}%",
            f"test {test['test_loss']:.4f}"} <= set(texts)
    assert first.read_bytes() == second.read_bytes()  # no date, no random ids


def test_several_runs_are_overlaid_with_a_legend_of_their_names(resumed, tmp_path):
    runs = []
    for i, name in enumerate(("BASE", "BN", "SK")):
        shutil.copytree(resumed, tmp_path / name)
        records = json_lines(resumed)[:4 - i]  # 4, 3 and 2 epochs, without the test line
        (tmp_path / name / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        runs.append(plot.read_log(tmp_path / name))
    loss, acc = plot.draw(runs).axes
    assert [t.get_text() for t in loss.get_legend().get_texts()] == ["BASE", "BN", "SK"]
    assert [t.get_text() for t in acc.get_legend().get_texts()] == ["training", "validation"]
    trains = lines_of(loss, "train")
    assert [len(line.get_xdata()) for line in trains] == [4, 3, 2]
    assert len({line.get_color() for line in trains}) == 3 and not lines_of(loss, "test")


def test_runs_in_folders_of_the_same_name_are_told_apart_by_path(capsys, resumed, tmp_path):
    for parent in ("a", "b"):
        shutil.copytree(resumed, tmp_path / parent / "base")
    out = tmp_path / "both.png"
    assert main(["plot", str(tmp_path / "a" / "base"), str(tmp_path / "b" / "base" / "log.jsonl"),
                 "-o", str(out)]) == 0
    assert png_size(out) == (1000, 400)


def epoch(n, **changes):
    return {"epoch": n, "lr": 0.05, "train_loss": 0.5, "train_acc": 0.8, "seconds": 0.1,
            "images_per_s": 1000.0} | changes


TEST = {"test_loss": 0.4, "test_acc": 0.9, "test_errors": 20, "test_count": 200,
        "checkpoint": "c.npz"}


@pytest.mark.parametrize("records, message", [
    ([epoch(1), epoch(3)], "line 2: epoch 3 where epoch 2 was expected"),
    ([epoch(2)], "line 1: epoch 2 where epoch 1 was expected"),
    ([epoch(1), epoch(1)], "line 2: epoch 1 where epoch 2 was expected"),
    ([epoch(True)], "line 1: epoch true where"),
    ([epoch(1, train_loss=float("nan"))], "line 1: train_loss must be a finite number ≥ 0, "
                                          "not NaN"),
    ([epoch(1, train_acc="0.9")], "train_acc must be a finite number ≥ 0, not \"0.9\""),
    ([epoch(1, train_acc=1.5)], "line 1: train_acc is a fraction in [0, 1], not 1.5"),
    ([epoch(1, val_loss=0.3)], "line 1: the epoch has no val_acc"),
    ([{"epoch": 1, "train_acc": 0.5}], "line 1: the epoch has no train_loss"),
    ([epoch(1), TEST, epoch(2)], "line 3: a line after the test result"),
    ([epoch(1), TEST | {"test_errors": -1}], "line 2: test_errors must be a whole number ≥ 0"),
    ([epoch(1), {"loss": 1}], "line 2: neither an epoch nor a test result"),
    ([epoch(1), [1, 2]], "line 2: not a JSON object"),
    ([TEST], "holds no finished epoch"),
])
def test_a_bad_log_is_refused_in_one_line_naming_it(tmp_path, records, message):
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    with pytest.raises(DataError) as e:
        plot.read_log(tmp_path)
    assert message in e.value.message and "\n" not in e.value.message


def test_netc_plot_of_a_broken_log_says_why_in_one_line(capsys, tmp_path):
    (tmp_path / "log.jsonl").write_bytes(json.dumps(epoch(1)).encode() + b"\n{\"epoch\": 2,\xff\n")
    assert main(["plot", str(tmp_path), "-o", str(tmp_path / "c.png")]) == 4
    err = capsys.readouterr().err
    assert err == f"error: {tmp_path / 'log.jsonl'}, line 2: not a JSON line\n"
    assert main(["plot", str(tmp_path / "nothing")]) == 4
    assert "no such file" in capsys.readouterr().err and not (tmp_path / "c.png").exists()


def test_train_redraws_curves_after_each_epoch_then_the_test(digits, tmp_path):
    live, seen = plot.LiveCurves(share=1.0), []  # share 1: no throttle
    png = tmp_path / "curves.png"

    def on_log(log):
        live.update(log)
        seen.append(os.stat(png).st_mtime_ns)

    fit(netc.load(MLP), digits, Config(epochs=2), out=tmp_path, on_log=on_log, **QUIET)
    assert len(seen) == 3 and len(set(seen)) == 3  # epoch 1, epoch 2, the test line
    assert live.finish() and live.path == png
    assert os.stat(png).st_mtime_ns == seen[-1]  # nothing was pending: no drawing at the end
    assert png_size(png) == (1000, 400)


def test_drawing_is_throttled_for_quick_epochs_and_done_at_the_end(resumed, tmp_path):
    shutil.copytree(resumed, tmp_path / "run")
    live = plot.LiveCurves()
    for _ in range(50):  # 50 lines in well under the first drawing's 4.5 s
        live.update(tmp_path / "run" / "log.jsonl")
    assert not (tmp_path / "run" / "curves.png").exists()
    assert live.finish() and png_size(tmp_path / "run" / "curves.png") == (1000, 400)


@pytest.fixture
def train_args(digits, tmp_path):
    """`netc train` of the MLP for 2 epochs on 300 digits, into tmp_path/run."""
    np.savez(tmp_path / "digits.npz", x=np.round(digits.train.x[:, 0] * 255).astype(np.uint8),
             y=digits.train.y)
    (tmp_path / "mlp.net").write_text(MLP)
    return ["train", str(tmp_path / "mlp.net"), "--data", str(tmp_path / "digits.npz"),
            "--epochs", "2", "--out", str(tmp_path / "run")]


def test_netc_train_writes_curves_and_says_so_at_the_end(capsys, train_args, tmp_path):
    assert main(train_args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-2].startswith("checkpoint: ")
    assert lines[-1] == f"curves: {tmp_path / 'run' / 'curves.png'}"
    assert png_size(tmp_path / "run" / "curves.png") == (1000, 400)


def test_without_matplotlib_plot_says_what_to_install_and_train_goes_on(resumed, train_args,
                                                                        tmp_path):
    def netc(*argv):
        return subprocess.run([sys.executable, "-c", NO_MATPLOTLIB, *map(str, argv)],
                              capture_output=True, text=True)

    done = netc("plot", resumed, "-o", tmp_path / "c.png")
    assert (done.returncode, done.stdout, done.stderr) == (2, "", MISSING + "\n")
    assert not (tmp_path / "c.png").exists()
    done = netc(*train_args)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1].startswith("checkpoint: ")  # nothing said of curves
    assert "curves" not in done.stderr and not (tmp_path / "run" / "curves.png").exists()
