"""The jinja2 Environment for templates/: StrictUndefined, so a missing view field fails at render
time instead of printing wrong C. Never touches the IR; loads templates only."""
from __future__ import annotations

import functools

import jinja2

from ..resources import templates_dir


@functools.lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
