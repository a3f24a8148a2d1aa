"""What the analysis asks about an engine kind recorded in a manifest, via the engine registry.

Owns the questions the analysis has about an arm's engine, answered by the engine class
(``servelab.engines.registry``), never by comparing kinds: does servelab start it as a local
process (so its bind address matters), and what are its counter names. An endpoint servelab
connects to (``openai``) records which engine answered there (``describe()["identity"]``,
``engines.identify``); its counters are then read under that engine's names. A manifest written
before ``engine_config.kind`` existed ran llama.cpp, the only engine then, so a missing kind is
the registry's default kind. Pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from servelab.engines.base import CounterNames, Engine
from servelab.engines.identify import counters_for
from servelab.engines.registry import ENGINES, find_engine_class

_DEFAULT_KIND = next(iter(ENGINES))  # the first engine servelab had, which old manifests omit
_NOT_IDENTIFIED = (None, "", "unknown")


def engine_of(kind: object) -> type[Engine] | None:
    """The engine class of a recorded kind (None: a kind this servelab does not know)."""
    return find_engine_class(str(kind) if kind is not None else _DEFAULT_KIND)


def is_managed(kind: object) -> bool:
    cls = engine_of(kind)
    return bool(cls is not None and cls.managed)


def identity_engine(describes: Iterable[Mapping[str, object]]) -> str | None:
    """The engine an endpoint was identified as at its first start that recorded one
    (``describe()["identity"]["engine"]``); None when no start recorded an identity."""
    for d in describes:
        identity = d.get("identity")
        engine = identity.get("engine") if isinstance(identity, Mapping) else None
        if isinstance(engine, str) and engine:
            return engine
    return None


def counter_names(kind: object, identity_engine: str | None = None) -> CounterNames:
    """The counter names to read an arm's ``/metrics`` deltas under: those of the engine the
    endpoint was identified as, when it was (none for one without Prometheus counters, such as
    Ollama); else those of the recorded kind."""
    if identity_engine not in _NOT_IDENTIFIED:
        return counters_for(identity_engine) or CounterNames()
    cls = engine_of(kind)
    return cls.counter_names if cls is not None else CounterNames()
