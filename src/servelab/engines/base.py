"""The engine protocol: what every engine kind answers for itself.

Owns the one small interface every engine implements, in two halves:

- class-level facts and pure functions of a configuration, answered without starting a
  process or binding a port: whether the client keeps connections alive, whether logits (and so
  perplexity / KL) are available, whether the engine reports its KV memory, whether servelab
  manages a local process, the effective configuration the confound guard compares, the counter
  names of its ``/metrics``, the command that runs a promoted configuration, and so on;
- the instance lifecycle: launch, wait healthy, describe, scrape metrics, check alive, stop,
  and what to add to each request.

Engine modules import this module; they never import the registry (``engines/registry.py``),
which imports them. Nothing outside ``engines/`` (and the spec's list of kinds) names a concrete
engine class or compares a kind to a string: it asks ``engine_class(kind).<attribute>``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol

from servelab.client.transport import Transport
from servelab.engines.prom import MetricsSnapshot
from servelab.errors import EngineError, UsageError
from servelab.spec.engine import EngineConfig
from servelab.theory.kvreport import MeasuredKv

_LABEL_PAIR = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def _label_order(value: str) -> tuple[int, float, str]:
    try:
        return (0, float(value), "")
    except ValueError:
        return (1, 0.0, value)


# One value of the flat effective configuration (``ArmEntry.effective`` in the manifest).
EffectiveValue = str | int | float | bool | None


@dataclass(frozen=True, slots=True)
class EffectiveEngineConfig:
    """The engine-specific part of an arm's effective configuration.

    ``values`` holds the flat keys the confound guard compares (``engine.binary``,
    ``model.sha256``, ``llama.spec-type``, ...), in the order the manifest records them;
    ``argv`` is the launch argument list with the port masked (empty when nothing is launched).
    """

    values: dict[str, EffectiveValue]
    argv: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CounterNames:
    """The Prometheus counter names (``/metrics``) an engine uses for each figure servelab
    reads from counter deltas; None where the engine has no such counter."""

    prompt_tokens: str | None = None
    prompt_seconds: str | None = None
    tokens_predicted: str | None = None
    tokens_predicted_seconds: str | None = None
    decode_calls: str | None = None
    drafts: str | None = None
    draft_tokens: str | None = None
    draft_accepted_tokens: str | None = None
    accepted_per_position: str | None = None  # labelled by ``position`` (0 = first draft token)
    prefix_cache_queries: str | None = None  # prompt tokens looked up in the prefix cache
    prefix_cache_hits: str | None = None  # prompt tokens found there
    extra: tuple[str, ...] = field(default=())  # other counters it has

    def read(self, deltas: Mapping[str, float], name: str | None) -> float | None:
        """The delta of counter ``name`` (one of this record's values) summed over its labelled
        samples (vLLM labels every sample ``{engine=..., model_name=...}``); None if absent."""
        if name is None:
            return None
        found = [v for k, v in deltas.items() if k == name or k.startswith(name + "{")]
        return sum(found) if found else None

    def by_label(
        self, deltas: Mapping[str, float], name: str | None, label: str
    ) -> dict[str, float]:
        """The deltas of counter ``name`` summed per value of ``label`` (``position`` of the
        per-position acceptance counters), in the label's numeric order when it is a number."""
        out: dict[str, float] = {}
        if name is None:
            return out
        for key, value in deltas.items():
            if not key.startswith(name + "{"):
                continue
            labels = dict(_LABEL_PAIR.findall(key[len(name) :]))
            if label in labels:
                out[labels[label]] = out.get(labels[label], 0.0) + value
        return dict(sorted(out.items(), key=lambda kv: _label_order(kv[0])))


class Engine(Protocol):
    """One engine kind. Class-level members need no instance (no process, no port)."""

    kind: ClassVar[str]
    keep_alive: ClassVar[bool]  # the client keeps connections alive (remote endpoints)
    has_logits: ClassVar[bool]  # llama-perplexity can score this engine's model (ppl, KL)
    reports_kv: ClassVar[bool]  # a start at kv_probe_config logs the KV memory it allocated
    managed: ClassVar[bool]  # servelab starts a local process (foreign-engine preflight applies)
    process_name: ClassVar[str]  # for messages: "starting llama-server"
    counter_names: ClassVar[CounterNames]

    config: EngineConfig

    def __init__(self, config: EngineConfig, log_path: Path) -> None: ...

    # -- class-level: pure functions of a configuration -------------------------------------
    @classmethod
    def effective_config(cls, config: EngineConfig, arm_name: str) -> EffectiveEngineConfig:
        """The engine-specific effective configuration, defaults explicit; binds nothing."""
        ...

    @classmethod
    def canonical_names(
        cls, names: tuple[str, ...], configs: Sequence[EngineConfig]
    ) -> tuple[str, ...]:
        """``declare`` / ``--allow-confound`` names with this engine's aliases made canonical."""
        ...

    @classmethod
    def launch_command(cls, argv: Sequence[str], port: int) -> list[str]:
        """The command that runs a recorded configuration (``argv`` as stored, port masked)
        listening on ``port``; empty when servelab launches nothing for this kind."""
        ...

    @classmethod
    def kv_probe_config(cls, config: EngineConfig) -> EngineConfig:
        """``config`` changed so that one start logs the KV memory (``reports_kv``)."""
        ...

    @classmethod
    def read_kv_report(cls, log_text: str) -> MeasuredKv | None:
        """The KV memory the engine reported in its log, None when the log holds none."""
        ...

    @classmethod
    def config_for_concurrency(cls, config: EngineConfig, concurrency: int) -> EngineConfig:
        """``config`` able to serve ``concurrency`` requests at once (bench)."""
        ...

    @classmethod
    def model_bytes(cls, config: EngineConfig) -> int:
        """Bytes of the local model file the engine loads (0 when none)."""
        ...

    # -- instance: one engine, launched or connected ----------------------------------------
    @property
    def base_url(self) -> str: ...

    def launch(self) -> None: ...

    def wait_healthy(self, timeout_s: float) -> None: ...

    def describe(self) -> dict[str, object]: ...

    def scrape_metrics(self) -> MetricsSnapshot | None: ...

    def check_alive(self, grace_s: float = 0.0) -> None: ...

    def stop(self) -> None: ...

    def reset_prefix_cache(self) -> str | None:
        """Empty the engine's prefix cache without a restart, before a block that reuses a
        running engine; return how (``"POST /reset_prefix_cache"``), or None when it cannot
        (the executor then restarts the engine if the arm caches prompts)."""
        ...

    def request_extras(self) -> dict[str, object]: ...

    def request_headers(self) -> dict[str, str]: ...

    def chat_url(self) -> str: ...

    def completions_url(self) -> str: ...

    def transport(self) -> Transport | None:
        """The transport the client sends through; None: the real network."""
        ...

    def tokenize(self, text: str, *, add_special: bool = False) -> list[int]:
        """The engine's token ids for ``text``; ``add_special`` adds the special tokens (BOS)
        the engine adds to a raw completion prompt. Raises ``UsageError`` when the engine
        cannot tokenize (trace replay with token counts then needs text prompts)."""
        ...

    def detokenize(self, tokens: Sequence[int]) -> str:
        """The text of ``tokens``; raises ``UsageError`` when the engine cannot."""
        ...


class NoLocalProcess:
    """The class-level answers of an engine servelab does not start (an endpoint someone else
    runs, the replay engine): no flags of its own to alias, no command to promote, no log to
    probe for its KV memory, no slots to raise, no local model file; and, unless the kind
    overrides it, no tokenizer."""

    kind: ClassVar[str]

    def tokenize(self, text: str, *, add_special: bool = False) -> list[int]:
        raise _no_tokenizer(self.kind)

    def detokenize(self, tokens: Sequence[int]) -> str:
        raise _no_tokenizer(self.kind)

    @classmethod
    def canonical_names(
        cls, names: tuple[str, ...], configs: Sequence[EngineConfig]
    ) -> tuple[str, ...]:
        return names

    @classmethod
    def launch_command(cls, argv: Sequence[str], port: int) -> list[str]:
        return []

    @classmethod
    def kv_probe_config(cls, config: EngineConfig) -> EngineConfig:
        return config

    @classmethod
    def read_kv_report(cls, log_text: str) -> MeasuredKv | None:
        return None

    @classmethod
    def config_for_concurrency(cls, config: EngineConfig, concurrency: int) -> EngineConfig:
        return config

    @classmethod
    def model_bytes(cls, config: EngineConfig) -> int:
        return 0

    def reset_prefix_cache(self) -> str | None:
        return None


def _no_tokenizer(kind: str) -> UsageError:
    return UsageError(
        f"the {kind} engine has no tokenizer, so prompts given as token counts cannot be "
        "synthesised; give the trace's prompts as text, or use the llamacpp or openai engine"
    )


def token_ids(body: object, who: str) -> list[int]:
    """The token ids in ``who``'s tokenizer answer ``{"tokens": [...]}``: plain ints, or
    ``{"id": int, "piece": ...}`` objects (llama-server with ``with_pieces``)."""
    tokens = body.get("tokens") if isinstance(body, dict) else None
    ids = [t.get("id") if isinstance(t, dict) else t for t in tokens or []]
    if not isinstance(tokens, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) for i in ids
    ):
        raise EngineError(f"{who}'s /tokenize answered without a list of token ids: {body!r:.80}")
    return [i for i in ids if isinstance(i, int)]
