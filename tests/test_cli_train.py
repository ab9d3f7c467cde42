"""`netc train`, `netc eval` and `netc predict` through main([...]) in-process, on a few hundred
images of the shipped MNIST subset: output, files, resume, exit codes and error messages."""
import json

import numpy as np
import pytest

from digit_files import pixels, write_digits
from netc import checkpoint
from netc.cli import main

# 1x32x32: the 28x28 digits are zero-padded on the way in, as for LeNet-5.
SPEC = """network small
input 1x32x32
param w = 4
conv(w, k=5, act=relu) - maxpool(4) - fc(16, act=relu) - softmax(10)
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-train")
    d = write_digits(root, 300, 200)
    (root / "small.net").write_text(SPEC)
    h, w = d.test.x.shape[2:]
    (root / "seven.pgm").write_bytes(b"P5\n%d %d\n255\n" % (w, h) + pixels(d.test, 1)[0].tobytes())
    return root


@pytest.fixture(autouse=True)
def _light_flags(monkeypatch):
    monkeypatch.setenv("NETC_CFLAGS", "-O1")


@pytest.fixture(scope="module")
def trained(files):
    with pytest.MonkeyPatch.context() as m:
        m.setenv("NETC_CFLAGS", "-O1")
        code = main(["train", str(files / "small.net"), "--data", str(files / "digits.npz"),
                     "--epochs", "2", "--out", str(files / "run"), "--lr", "0.1"])
    assert code == 0
    return files / "run" / "checkpoint.npz"


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_train_prints_epochs_test_errors_and_the_checkpoint(capsys, files):
    code, out, err = run(capsys, "train", files / "small.net", "--data", files / "digits.npz",
                         "--epochs", "2", "--out", files / "printed", "--val-split", "0.2")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("small: ") and "240 train, 60 validation, 200 test" in lines[0]
    assert "1x28x28 zero-padded to 1x32x32" in lines[0]
    assert [line.split()[1] for line in lines if line.startswith("epoch")] == ["1/2", "2/2"]
    assert "val loss" in lines[2] and "img/s" in lines[2]
    assert lines[-3].startswith("test accuracy ") and " errors in 200)" in lines[-3]
    assert lines[-2].startswith(f"checkpoint: {files / 'printed' / 'checkpoint.npz'}")
    assert lines[-1] == f"curves: {files / 'printed' / 'curves.png'}"  # the plot extra's
    log = [json.loads(x) for x in (files / "printed" / "log.jsonl").read_text().splitlines()]
    assert [r.get("epoch") for r in log] == [1, 2, None]
    assert log[-1]["test_count"] == 200 and "\r" not in err  # no bar when not a terminal


def test_eval_prints_a_confusion_matrix_that_sums_to_the_count(capsys, files, trained):
    code, out, err = run(capsys, "eval", files / "small.net", trained)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "small on digits (test, 200 samples)"
    errors = int(lines[1].split("(")[1].split()[0])
    assert lines[1].endswith(f"({errors} errors in 200)")
    matrix = np.array([[int(v) for v in line.split()[1:]] for line in lines[4:]])
    assert matrix.shape == (10, 10) and matrix.sum() == 200
    assert 200 - np.trace(matrix) == errors


def test_predict_gives_class_and_probabilities(capsys, files, trained):
    code, out, err = run(capsys, "predict", files / "small.net", trained, files / "seven.npy",
                         files / "seven.pgm")
    assert code == 0, err
    a, b = out.splitlines()
    assert a.startswith(f"{files / 'seven.npy'}: ") and "top: " in a
    assert a.split(": ", 1)[1] == b.split(": ", 1)[1]  # same pixels, same answer
    code, out, err = run(capsys, "predict", files / "small.net", trained, files / "seven.npy",
                         "--json")
    p = json.loads(out)
    assert len(p["probabilities"]) == 10 and abs(sum(p["probabilities"]) - 1) < 1e-4
    assert p["class"] == int(np.argmax(p["probabilities"]))


def test_resume_continues_after_the_last_epoch(capsys, files, trained, tmp_path):
    (tmp_path / "checkpoint.npz").write_bytes(trained.read_bytes())
    code, out, err = run(capsys, "train", files / "small.net", "--resume",
                         tmp_path / "checkpoint.npz", "--epochs", "3")
    assert code == 0, err
    assert f"resuming from {tmp_path / 'checkpoint.npz'} after epoch 2" in out
    assert [line.split()[1] for line in out.splitlines() if line.startswith("epoch")] == ["3/3"]
    meta = checkpoint.read(tmp_path / "checkpoint.npz").meta
    assert meta["state"]["epoch"] == 3 and meta["config"]["lr"] == 0.1  # the run's own lr


def test_divergence_exits_5_with_a_hint_and_keeps_the_checkpoint(capsys, files, trained,
                                                                 tmp_path):
    (tmp_path / "checkpoint.npz").write_bytes(trained.read_bytes())
    code, out, err = run(capsys, "train", files / "small.net", "--resume",
                         tmp_path / "checkpoint.npz", "--epochs", "4", "--lr", "1e9")
    assert code == 5
    assert err.startswith("error: the loss became ") and "training diverged" in err
    assert "hint: lower the learning rate, e.g. --lr 1e+08" in err
    assert (tmp_path / "checkpoint.npz").read_bytes() == trained.read_bytes()


def test_bad_data_path_is_one_error_line(capsys, files):
    code, out, err = run(capsys, "train", files / "small.net", "--data", files / "missing")
    assert code == 4 and out == ""
    assert err.splitlines()[0] == (f"error: no data set '{files / 'missing'}': not a known name "
                                   f"and no such file or folder")
    assert "Traceback" not in err


def test_a_checkpoint_of_another_network_is_refused(capsys, files, trained):
    code, out, err = run(capsys, "eval", files / "small.net", trained, "-D", "w=5")
    assert code == 4
    assert err.startswith(f"error: {trained} was trained on a different network: "
                          f"parameters w=4 (here w=5)")
    code, out, err = run(capsys, "predict", "examples/lenet5.net", trained, files / "seven.npy")
    assert code == 4 and "different network" in err


def test_option_errors(capsys, files):
    code, out, err = run(capsys, "train", files / "small.net", "--batch", "0")
    assert code == 2 and "expected a positive integer or 'full'" in err
    code, out, err = run(capsys, "train", files / "small.net", "--val-split", "0", "--early-stop",
                         "2", "--data", files / "digits.npz")
    assert code == 2 and "early stopping watches the validation loss" in err
