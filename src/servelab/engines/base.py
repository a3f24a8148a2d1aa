"""The engine protocol and the registry of engine kinds.

Owns the one small interface every engine implements (launch, wait healthy, describe, scrape
metrics, stop, and what to add to each request) and the lookup by kind. Engine modules register
themselves here; nothing else in servelab names a concrete engine class.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from servelab.engines.prom import MetricsSnapshot
from servelab.errors import UsageError
from servelab.spec.engine import EngineConfig


class Engine(Protocol):
    kind: str
    config: EngineConfig

    @property
    def base_url(self) -> str: ...

    def launch(self) -> None: ...

    def wait_healthy(self, timeout_s: float) -> None: ...

    def describe(self) -> dict[str, Any]: ...

    def scrape_metrics(self) -> MetricsSnapshot | None: ...

    def check_alive(self, grace_s: float = 0.0) -> None: ...

    def stop(self) -> None: ...

    def request_extras(self) -> dict[str, Any]: ...

    def request_headers(self) -> dict[str, str]: ...

    def chat_url(self) -> str: ...

    def completions_url(self) -> str: ...


EngineFactory = Callable[[EngineConfig, Path], Engine]
_REGISTRY: dict[str, EngineFactory] = {}


def register(kind: str, factory: EngineFactory) -> None:
    _REGISTRY[kind] = factory


def create_engine(config: EngineConfig, log_path: Path) -> Engine:
    """The engine for ``config.kind``; ``log_path`` receives a managed engine's output."""
    _load_builtin()
    try:
        factory = _REGISTRY[config.kind]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise UsageError(f"unknown engine kind {config.kind!r}; known kinds: {known}") from None
    return factory(config, log_path)


def kinds() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def _load_builtin() -> None:
    from servelab.engines import llamacpp, openai  # noqa: F401 - registers the kinds
