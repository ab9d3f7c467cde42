"""checkpoint.read against damaged and crafted files: every one is refused with one error line
(exit 4 through the CLI), never a traceback, a hang or a huge allocation; and a spec without a
`network` line works through train, eval, predict and --resume."""
import io
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from digit_files import write_digits
from netc import checkpoint
from netc.cli import main
from netc.errors import DataError

# No `network` line: the name comes from the file ("m"), the stored text lowers as "<string>"'s.
SPEC = "input 1x28x28\nfc(8, act=relu) - softmax(10)\n"


@pytest.fixture(autouse=True)
def _light_flags(monkeypatch):
    monkeypatch.setenv("NETC_CFLAGS", "-O1")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A spec without a network line, trained for 2 epochs on 200 digits through the CLI."""
    root = tmp_path_factory.mktemp("ckpt")
    write_digits(root, 200, 100)
    (root / "m.net").write_text(SPEC)
    with pytest.MonkeyPatch.context() as m:
        m.setenv("NETC_CFLAGS", "-O1")
        assert main(["train", str(root / "m.net"), "--data", str(root / "digits.npz"),
                     "--epochs", "2", "--out", str(root / "run")]) == 0
    return root


def cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def members(path):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def rewrite_meta(src, dst, change):
    arrays = members(src)
    meta = json.loads(str(arrays["meta"]))
    change(meta)
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(dst, **arrays)
    return dst


def test_a_spec_without_a_network_line_works_through_every_command(capsys, run):
    ckpt = run / "run" / "checkpoint.npz"
    code, out, err = cli(capsys, "eval", run / "m.net", ckpt)
    assert code == 0, err
    assert out.startswith("m on digits (test, 100 samples)")
    code, out, err = cli(capsys, "predict", run / "m.net", ckpt, run / "seven.npy")
    assert code == 0, err
    assert out.startswith(f"{run / 'seven.npy'}: ")
    (run / "again").mkdir()
    (run / "again" / "checkpoint.npz").write_bytes(ckpt.read_bytes())
    code, out, err = cli(capsys, "train", run / "m.net", "--resume",
                         run / "again" / "checkpoint.npz", "--epochs", "3")
    assert code == 0, err
    assert [line.split()[1] for line in out.splitlines() if line.startswith("epoch")] == ["3/3"]
    # a file of another name holding the same network is the same network
    (run / "other.net").write_text("# renamed\n" + SPEC)
    assert cli(capsys, "eval", run / "other.net", ckpt)[0] == 0


BROKEN_META = {
    "config missing": (lambda m: m.pop("config"), "meta field 'config' must be a dict"),
    "state not an object": (lambda m: m.update(state="x"), "meta field 'state'"),
    "epochs not a number": (lambda m: m["config"].update(epochs="many"),
                            "epochs must be an integer, not 'many'"),
    "a config field missing": (lambda m: m["config"].pop("seed"), "its config lacks seed"),
    "history too short": (lambda m: m["state"].update(history=[]),
                          "one record per finished epoch"),
    "too few class names": (lambda m: m.update(classes=["a"]),
                            "it names 1 classes, its network has 10"),
    "undeclared parameter": (lambda m: m.update(params={"zz": 1}),
                             "its stored spec does not lower"),
    "altered spec": (lambda m: m.update(spec=m["spec"].replace("fc(8", "fc(9")),
                     "does not match its spec_sha256"),
    "bad shuffle state": (lambda m: m.update(shuffle_rng={"state": 1}),
                          "its shuffle_rng is not a PCG64 state"),
    "bad dtype": (lambda m: m.update(dtype="int8"), "'dtype' must be float32 or float64"),
}


@pytest.mark.parametrize("case", BROKEN_META)
def test_a_broken_meta_field_is_one_error_line(capsys, run, tmp_path, case):
    change, message = BROKEN_META[case]
    bad = rewrite_meta(run / "run" / "checkpoint.npz", tmp_path / "bad.npz", change)
    for command in (["eval", run / "m.net", bad], ["predict", run / "m.net", bad,
                                                   run / "seven.npy"],
                    ["train", run / "m.net", "--resume", bad]):
        code, out, err = cli(capsys, *command)
        assert code == 4, (command[0], err)
        assert err.startswith(f"error: {bad}: ") and message in err, err
        assert "Traceback" not in err


def test_members_are_checked_against_the_network_before_reading(run, tmp_path):
    good = members(run / "run" / "checkpoint.npz")
    wrong_dtype = good | {"param/fc1.weight": np.full((8, 784), "a")}
    np.savez(tmp_path / "dtype.npz", **wrong_dtype)
    with pytest.raises(DataError, match=r"param/fc1.weight is <U1 \(8, 784\), the network "
                                        r"needs float32 \(8, 784\)"):
        checkpoint.read(tmp_path / "dtype.npz")
    np.savez(tmp_path / "extra.npz", **good, **{"param/spare": np.zeros(3)})
    with pytest.raises(DataError, match="unexpected param/spare"):
        checkpoint.read(tmp_path / "extra.npz")


def test_a_header_declaring_2_to_the_40_elements_is_refused_before_any_allocation(run,
                                                                                   tmp_path):
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False,
                                                  "shape": (2 ** 40,)})
    with zipfile.ZipFile(run / "run" / "checkpoint.npz") as src, \
            zipfile.ZipFile(tmp_path / "huge.npz", "w") as dst:
        for info in src.infolist():
            body = src.read(info)
            if info.filename == "param/fc1.weight.npy":
                body = header.getvalue() + b"\0" * 64
            dst.writestr(info.filename, body)
    with pytest.raises(DataError, match="fc1.weight.npy' declares .1099511627776,. float32 but "
                                        "holds"):
        checkpoint.read(tmp_path / "huge.npz")


def test_a_compressed_checkpoint_is_refused(run, tmp_path):
    np.savez_compressed(tmp_path / "zipped.npz", **members(run / "run" / "checkpoint.npz"))
    with pytest.raises(DataError, match="is compressed or larger than the file"):
        checkpoint.read(tmp_path / "zipped.npz")


@pytest.mark.parametrize("content", [b"just text\n", b"\x80\x04K\x01."])  # text, a pickle
def test_a_file_that_is_not_an_npz_gets_a_plain_message(capsys, run, tmp_path, content):
    (tmp_path / "c.npz").write_bytes(content)
    code, out, err = cli(capsys, "eval", run / "m.net", tmp_path / "c.npz")
    assert code == 4
    assert err.startswith(f"error: {tmp_path / 'c.npz'}: not a readable netc checkpoint")
    assert "pickle" not in err


def test_a_single_npy_array_is_not_a_checkpoint(capsys, run, tmp_path):
    np.save(tmp_path / "w.npy", np.zeros(3))
    code, out, err = cli(capsys, "eval", run / "m.net", tmp_path / "w.npy")
    assert code == 4 and "not a readable netc checkpoint" in err and "Traceback" not in err


def test_a_fifo_is_refused_at_once(run, tmp_path):
    os.mkfifo(tmp_path / "pipe.npz")
    done = subprocess.run([sys.executable, "-m", "netc", "eval", str(run / "m.net"),
                           str(tmp_path / "pipe.npz")], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 4
    assert "it is a FIFO (named pipe), not a regular file" in done.stderr


def test_nan_weights_are_evaluated_with_a_warning(capsys, run, tmp_path):
    arrays = members(run / "run" / "checkpoint.npz")
    arrays["param/fc1.weight"] = np.full_like(arrays["param/fc1.weight"], np.nan)
    np.savez(tmp_path / "nan.npz", **arrays)
    code, out, err = cli(capsys, "eval", run / "m.net", tmp_path / "nan.npz")
    assert code == 0
    assert err.startswith(f"warning: {tmp_path / 'nan.npz'}: fc1.weight hold NaN or infinite")
