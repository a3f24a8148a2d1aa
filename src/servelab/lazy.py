"""Heavy third-party modules imported on first use, so that ``servelab --help`` and every
command's start-up pay only for what the command uses: ``scipy.stats`` alone takes about a
second to import, and a refused spec never needs it.

``sps = lazy_module("scipy.stats")`` at the top of a module stands for ``from scipy import
stats as sps``; the real module is imported when the first attribute is read (``sps.t``).
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class _LazyModule:
    """A module imported when one of its attributes is first read."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attr: str) -> Any:
        if self._module is None:
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attr)


def lazy_module(name: str) -> Any:
    """``name`` (e.g. ``"scipy.stats"``), imported on the first attribute read."""
    return _LazyModule(name)
