"""The summary's records of what an engine did besides answering: speculative decoding and the
prefix cache (``summary.json``'s ``spec_decode`` and ``prefix_cache``, docs/summary-json.md).

Owns ``SpecDecodeRecord`` (one per arm that speculated, the same fields whichever engine ran:
counter deltas for vLLM, per-request ``draft_n`` / ``draft_accepted`` for llama.cpp) and
``PrefixCacheRecord`` with its ``PrefixCacheBlock`` per block. Frozen dataclasses written by
``store.summary.to_jsonable`` (fields in declaration order, ``OMIT_NONE`` keys left out when
None) and read back through the summary's validators. Pure: no files; ``analysis.spec_decode``
computes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

FigureSource = Literal["metrics", "requests"]  # counter deltas / per-request rows


@dataclass(frozen=True, slots=True)
class SpecDecodeRecord:
    """One arm's speculative decoding over its trial blocks.

    ``acceptance_rate`` = accepted / draft tokens; ``mean_accepted_length`` = accepted tokens
    per draft, ``tokens_per_step`` = that + 1 (the verified step's own token);
    ``per_position[i]`` = drafts whose token at position i (0: the first draft token) was
    accepted / drafts. Without a draft count (llama.cpp rows with no counters) the figures per
    draft are None and ``per_position`` is empty.
    """

    OMIT_NONE: ClassVar[frozenset[str]] = frozenset({"n_requests"})

    source: FigureSource
    drafts: int | None
    draft_tokens: int
    accepted_tokens: int
    acceptance_rate: float
    mean_accepted_length: float | None
    tokens_per_step: float | None
    per_position: tuple[float, ...]
    n_blocks: int
    n_requests: int | None = None  # rows that reported drafts (source "requests")


@dataclass(frozen=True, slots=True)
class PrefixCacheBlock:
    """One block's prefix-cache figures: prompt tokens looked up and found, and how the
    block's cache was emptied before it (None: not recorded, a run before issue 14)."""

    OMIT_NONE: ClassVar[frozenset[str]] = frozenset({"emptied"})

    block: int
    level: str  # "c4" (closed loop at 4 in flight) or "r2" (open loop at 2 req/s)
    hit_tokens: int
    queried_tokens: int
    hit_rate: float | None
    emptied: str | None = None  # "restart", the reset used ("POST /reset_prefix_cache"), ...


@dataclass(frozen=True, slots=True)
class PrefixCacheRecord:
    """One arm's prefix-cache hits over its trial blocks (``hit_rate`` = hit / queried
    prompt tokens), from the engine's counters or from rows' ``cache_n`` / ``n_in``."""

    source: FigureSource
    caching: bool | None  # the arm's effective ``prefix_cache`` (None: not recorded)
    hit_tokens: int
    queried_tokens: int
    hit_rate: float | None
    blocks: tuple[PrefixCacheBlock, ...]


__all__ = ["FigureSource", "PrefixCacheBlock", "PrefixCacheRecord", "SpecDecodeRecord"]
