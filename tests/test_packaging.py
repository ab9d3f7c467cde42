"""The wheel carries grammar/, templates/, the license and the sample digits, and an installed
netc runs from another directory.

Slow-ish (~15 s): builds the wheel and installs it into a fresh virtual environment. Offline: the
venv borrows this interpreter's dependencies through a .pth file and gets netc only from the wheel.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import cffi
import jinja2
import lark
import markupsafe
import numpy
import pycparser
import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def run(cmd: list, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kwargs)
    assert done.returncode == 0, f"{cmd} failed:\n{done.stdout}\n{done.stderr}"
    return done


def build_wheel(out: Path) -> Path:
    # Without build isolation when hatchling is here: isolation would download it.
    isolated = importlib.util.find_spec("hatchling") is None
    if importlib.util.find_spec("build") is not None:
        cmd = [sys.executable, "-m", "build", "--wheel", "--outdir", out]
        cmd += [] if isolated else ["--no-isolation"]
    else:
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", out]
        cmd += [] if isolated else ["--no-build-isolation"]
    run([*cmd, REPO])
    (wheel,) = out.glob("netc-*.whl")
    return wheel


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("dist"))


def test_wheel_carries_grammar_and_every_template(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "netc/_data/grammar/netc.lark" in names
    templates = [p.relative_to(REPO / "templates").as_posix()
                 for p in (REPO / "templates").rglob("*") if p.is_file()]
    assert templates, "templates/ is empty"
    assert {f"netc/_data/templates/{t}" for t in templates} <= names


def test_wheel_carries_the_license_and_the_sample_digits(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        licenses = [n for n in names if n.startswith("netc-") and "/licenses/" in n]
        assert [z.read(n) for n in licenses] == [(REPO / "docs" / "LICENSE").read_bytes()]
        metadata = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: MIT" in metadata.splitlines()
    samples = {p.relative_to(REPO).as_posix() for p in (REPO / "netc/data/samples").glob("*.png")}
    assert samples and samples <= names


def test_installed_wheel_reports_lenet5_from_another_directory(wheel, tmp_path):
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", venv])
    python, netc = venv / "bin" / "python", venv / "bin" / "netc"
    site = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"])
                .stdout.strip())
    # The dependencies come from this interpreter's site-packages, appended after the venv's own;
    # `.pth` lines add paths only, so an editable netc there is never activated.
    deps = {str(Path(m.__file__).parents[1]) for m in (cffi, jinja2, lark, markupsafe, numpy,
                                                       pycparser)}
    (site / "netc_test_deps.pth").write_text("\n".join(sorted(deps)) + "\n")
    run([python, "-m", "pip", "install", "--no-deps", "--no-index", wheel])

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["NETC_CACHE"] = str(tmp_path / "cache")
    where = run([python, "-c", "import netc, netc.resources as r; "
                 "print(netc.__file__); print(r.grammar_path()); print(r.templates_dir())"],
                cwd=elsewhere, env=env).stdout.split()
    assert all(Path(p).is_relative_to(venv) for p in where), where
    report = run([netc, "report", REPO / "examples" / "lenet5.net"], cwd=elsewhere, env=env)
    assert "61,706" in report.stdout  # LeNet-5's parameters, a closed-form literal
