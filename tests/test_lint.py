"""The code passes ruff with the configuration in pyproject.toml ([tool.ruff]).

ruff comes with the `test` extra; it lints the whole repository (netc/, tests/, bench/), skipping
what .gitignore names (the virtual environment, build outputs).
"""
import importlib.util
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_ruff_check_passes():
    assert importlib.util.find_spec("ruff") is not None, \
        "ruff is missing: pip install -e '.[test]' installs it"
    # --no-cache: no .ruff_cache/ left in the checkout by a test run.
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", str(REPO)],
                          cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, f"ruff check failed:\n{done.stdout}{done.stderr}"
