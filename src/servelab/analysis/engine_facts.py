"""What the analysis asks about an engine kind recorded in a manifest, via the engine registry.

Owns the two questions the analysis has about an arm's engine, answered by the engine class
(``servelab.engines.registry``), never by comparing kinds: does servelab start it as a local
process (so its bind address matters), and what are its counter names. A manifest written
before ``engine_config.kind`` existed ran llama.cpp, the only engine then, so a missing kind is
the registry's default kind. Pure.
"""

from __future__ import annotations

from servelab.engines.base import CounterNames, Engine
from servelab.engines.registry import ENGINES, find_engine_class

_DEFAULT_KIND = next(iter(ENGINES))  # the first engine servelab had, which old manifests omit


def engine_of(kind: object) -> type[Engine] | None:
    """The engine class of a recorded kind (None: a kind this servelab does not know)."""
    return find_engine_class(str(kind) if kind is not None else _DEFAULT_KIND)


def is_managed(kind: object) -> bool:
    cls = engine_of(kind)
    return bool(cls is not None and cls.managed)


def counter_names(kind: object) -> CounterNames:
    cls = engine_of(kind)
    return cls.counter_names if cls is not None else CounterNames()
