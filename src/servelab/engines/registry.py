"""The engine kinds servelab knows: one static table, and the lookups over it.

Owns the mapping from a kind (``EngineConfig.kind``) to its engine class. Adding an engine is
one class in its own module plus one line in ``ENGINES``. The engine modules never import this
module (it imports them), so there is no cycle; code outside ``engines/`` asks
``engine_class(kind)`` for what an engine can do instead of comparing kinds to strings.
"""

from __future__ import annotations

from pathlib import Path

from servelab.engines.base import Engine
from servelab.engines.llamacpp import LlamaCppEngine
from servelab.engines.openai import OpenAIEngine
from servelab.engines.replay import ReplayEngine
from servelab.engines.vllm import VllmEngine
from servelab.errors import UsageError
from servelab.spec.engine import EngineConfig

# The default kind of an engine configuration; manifests written before kinds existed omit it.
DEFAULT_KIND: str = EngineConfig.model_fields["kind"].default

ENGINES: dict[str, type[Engine]] = {
    LlamaCppEngine.kind: LlamaCppEngine,
    OpenAIEngine.kind: OpenAIEngine,
    ReplayEngine.kind: ReplayEngine,
    VllmEngine.kind: VllmEngine,
}


def kinds() -> list[str]:
    """Every registered kind, sorted."""
    return sorted(ENGINES)


def find_engine_class(kind: str) -> type[Engine] | None:
    """The class for ``kind``, or None for a kind this servelab does not know (a manifest
    written by another version may name one)."""
    return ENGINES.get(kind)


def engine_class(kind: str) -> type[Engine]:
    """The class for ``kind``; a usage error naming the known kinds otherwise."""
    cls = ENGINES.get(kind)
    if cls is None:
        raise UsageError(f"unknown engine kind {kind!r}; known kinds: {', '.join(kinds())}")
    return cls


def create_engine(config: EngineConfig, log_path: Path) -> Engine:
    """The engine for ``config.kind``; ``log_path`` receives a managed engine's output."""
    return engine_class(config.kind)(config, log_path)


__all__ = ["DEFAULT_KIND", "ENGINES", "create_engine", "engine_class", "find_engine_class", "kinds"]
