"""Engines: one protocol (``base``), one module per kind, and the static registry of kinds.

The registry's names are re-exported lazily, so importing a leaf module such as
``servelab.engines.prom`` does not load every engine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from servelab.engines.base import Engine
    from servelab.engines.registry import create_engine, engine_class, find_engine_class, kinds

__all__ = ["Engine", "create_engine", "engine_class", "find_engine_class", "kinds"]


def __getattr__(name: str) -> object:
    if name == "Engine":
        from servelab.engines import base

        return base.Engine
    if name in __all__:
        from servelab.engines import registry

        return getattr(registry, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
