"""The one place that finds grammar/ and templates/: inside an installed wheel or in a checkout."""
from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def _data_dir(name: str) -> Path:
    # A wheel carries the folders as netc/_data/<name> (pyproject's force-include); an editable
    # install or a plain checkout runs from the repository, where they sit beside netc/.
    for candidate in (_PACKAGE / "_data" / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"netc installation is incomplete: no {name}/ folder near {_PACKAGE}")


def grammar_path() -> Path:
    return _data_dir("grammar") / "netc.lark"


def templates_dir() -> Path:
    return _data_dir("templates")
