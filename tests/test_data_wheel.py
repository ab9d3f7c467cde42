"""The wheel ships the MNIST subset, and netc.data finds it when run from the unpacked wheel."""
import importlib.util
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SUBSET = ["netc/data/mnist-10k/" + f for f in (
    "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
    "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")]

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    importlib.util.find_spec("hatchling") is None,
    reason="hatchling is not installed; building without it would need the network")]


def test_wheel_ships_the_subset_and_it_loads_from_there(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", tmp_path, REPO], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("netc-*.whl")
    with zipfile.ZipFile(wheel) as z:
        assert set(SUBSET) | {"netc/data/README.md"} <= set(z.namelist())
        for name in SUBSET:
            assert z.read(name) == (REPO / name).read_bytes()
        z.extractall(tmp_path / "site")
    code = ("import netc.data as d; s = d.load(); "
            "print(d.__file__, len(s.train), len(s.test), s.train.y[:4].tolist())")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(tmp_path / "site")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, check=True,
                         capture_output=True, text=True).stdout.split(maxsplit=1)
    assert Path(out[0]).is_relative_to(tmp_path / "site")
    assert out[1].strip() == "10000 10000 [5, 0, 4, 1]"
