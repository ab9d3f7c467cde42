"""Repository hygiene: the top level keeps its fixed shape, and no binary is committed outside the
data that netc ships (netc/data/).

"Committed" here means what git tracks plus new files it does not ignore, so a stray file fails
before it is committed; a tracked file already deleted from the work tree is on its way out.
"""
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

TOP_LEVEL = {"pyproject.toml", "README.md", ".gitignore", "netc", "grammar", "templates", "tests",
             "examples", "docs", "bench", ".ci"}
SHIPPED_DATA = "netc/data/"
BINARY_SUFFIXES = (".whl", ".so", ".o", ".a", ".dylib", ".dll", ".exe", ".pyc", ".zip", ".gz",
                   ".tar", ".npz", ".npy", ".png")


def repository_files() -> list[str]:
    try:
        done = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                               "--exclude-standard"], cwd=REPO, capture_output=True, text=True)
    except FileNotFoundError:
        pytest.skip("git is not installed")
    if done.returncode != 0:
        pytest.skip(f"{REPO} is not a git checkout")
    return [f for f in done.stdout.split("\0") if f and (REPO / f).is_file()]


def is_binary(path: Path) -> bool:
    # git's own test: a NUL byte near the start.
    with path.open("rb") as f:
        return b"\0" in f.read(8000)


def test_top_level_holds_only_the_fixed_set():
    extra = sorted({f.split("/")[0] for f in repository_files()} - TOP_LEVEL)
    assert not extra, f"not part of the project's top level: {extra}"


def test_no_binary_outside_the_shipped_data():
    binaries = sorted(f for f in repository_files() if not f.startswith(SHIPPED_DATA)
                      and (f.endswith(BINARY_SUFFIXES) or is_binary(REPO / f)))
    assert not binaries, f"binary files outside {SHIPPED_DATA}: {binaries}"
