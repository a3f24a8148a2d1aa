"""The ``servelab`` command line: thin commands over library functions.

Owns nothing itself: ``app`` (the typer application), ``main`` (run it, return the exit code)
and ``entry`` (the console script) live in ``cli.main`` and are imported on first use, so
importing one command module does not build the whole application.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__all__ = ["app", "entry", "main"]

if TYPE_CHECKING:
    from servelab.cli.main import app, entry, main


def __getattr__(name: str) -> object:
    if name not in __all__:
        raise AttributeError(f"module 'servelab.cli' has no attribute {name!r}")
    return getattr(importlib.import_module("servelab.cli.main"), name)
