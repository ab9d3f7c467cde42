"""`netc gradcheck` and netc.gradcheck: a correct net passes with an aligned table, a deliberately
wrong gradient fails, and the kinks of relu and max pool are recognised and skipped."""
from __future__ import annotations

import numpy as np
import pytest

import netc
from netc import cli, runtime
from netc.gradcheck import DEFAULT_STEP as STEP, gradcheck

SPEC = """network small
input 2x6x6
param w = 3
conv(w, k=3, pad=1, act=relu) - maxpool(2) - fc(4, act=tanh) - dropout(0.5) - softmax(3)
"""


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("netc-cache")


@pytest.fixture(autouse=True)
def env(monkeypatch, cache):
    monkeypatch.setenv("NETC_CACHE", str(cache))
    monkeypatch.setenv("NETC_CFLAGS", "-O1")


@pytest.fixture
def spec(tmp_path):
    path = tmp_path / "small.net"
    path.write_text(SPEC)
    return path


def run(capsys, *argv):
    rc = cli.main(["gradcheck", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


def rows(out):
    """{first word: line} of the table, and the header line."""
    lines = out.splitlines()
    return {line.split()[0]: line for line in lines[1:-1]}, lines[0]


def test_command_passes_with_an_aligned_table(capsys, spec):
    rc, out, err = run(capsys, spec, "--coords", 8)
    assert rc == 0, out + err
    table, header = rows(out)
    assert header.split()[:3] == ["layer", "kind", "tensors"]
    assert list(table) == ["conv1", "fc1", "fc2", "input"]  # layers with parameters, the input
    end = header.index("rel. error") + len("rel. error")
    for line in table.values():
        assert float(line[end - 8:end]) < 1e-6  # right-aligned under the header
        assert line.endswith("ok")
    assert out.splitlines()[-1].startswith("worst relative error")
    assert out.splitlines()[-1].endswith(": ok")


@pytest.mark.parametrize("broken, row", [("fc1.bias", "fc1"), ("input", "input")])
def test_command_fails_on_a_wrong_gradient(capsys, monkeypatch, spec, broken, row):
    real = runtime.Model.loss_and_grad

    def off_by_a_thousandth(self, x, y, **kwargs):
        loss = real(self, x, y, **kwargs)
        if broken == "input" and self.input_grad is not None:
            self.input_grad *= 1.001
        elif broken != "input":
            self.grads[broken][...] *= 1.001
        return loss

    monkeypatch.setattr(runtime.Model, "loss_and_grad", off_by_a_thousandth)
    rc, out, _ = run(capsys, spec, "--coords", 8)
    assert rc == 1
    table, _ = rows(out)
    assert table[row].endswith("FAIL")
    assert all(line.endswith("ok") for name, line in table.items() if name != row)
    assert out.splitlines()[-1].endswith("FAILED")


def test_command_parameters_and_bad_options(capsys, spec):
    rc, out, _ = run(capsys, spec, "-D", "w=2", "--coords", 4, "--seed", 5, "--batch", 2)
    assert rc == 0 and "conv1" in out
    rc, _, err = run(capsys, spec, "-D", "w=1..2")
    assert rc == 2 and "range" in err
    rc, _, err = run(capsys, spec, "--tol", "-1")
    assert rc == 2 and "--tol" in err
    rc, _, err = run(capsys, spec.with_name("missing.net"))
    assert rc == 2 and "missing.net" in err


def test_a_relu_kink_is_skipped_not_failed():
    model = netc.load("input 4\nloss mse\nrelu").compile(batch=1, dtype="float64")
    # 0.3 h above relu's kink: the central difference straddles it; target -1 makes the slope 1
    report = gradcheck(model, x=np.array([[0.3 * STEP, 1.0, -1.0, 2.0]]),
                       y=np.array([[-1.0, 0.0, 0.0, 0.0]]), coords=None)
    (check,) = report.tensors
    assert (check.checked, check.kinks) == (3, 1)
    assert report.ok, report.format()


def test_a_max_pool_tie_is_skipped_not_failed():
    model = netc.load("input 1x2x2\nloss mse\nmaxpool(2)").compile(batch=1, dtype="float64")
    # the two top entries are within h of each other: a step of either one swaps the arg-max
    x = np.array([[[[1.0, 1.0 + 0.2 * STEP], [0.0, -1.0]]]])
    report = gradcheck(model, x=x, y=np.array([[-1.0]]), coords=None)
    (check,) = report.tensors
    assert (check.checked, check.kinks) == (2, 2)
    assert report.ok, report.format()


def test_gradcheck_wants_the_float64_build():
    model = netc.load("input 4\nloss mse\nrelu").compile(batch=1, dtype="float32")
    with pytest.raises(ValueError, match="float64"):
        gradcheck(model)
