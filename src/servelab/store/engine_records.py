"""The summary's records of what an engine did besides answering: speculative decoding and the
prefix cache (``summary.json``'s ``spec_decode`` and ``prefix_cache``, docs/summary-json.md).

Owns ``SpecDecodeRecord`` (one per arm that speculated, the same fields whichever engine ran:
counter deltas for vLLM, per-request ``draft_n`` / ``draft_accepted`` for llama.cpp, then also
the distribution of acceptance over requests, ``RequestAcceptance``, with the first requests
listed as ``RequestDrafts``) and ``PrefixCacheRecord`` with its ``PrefixCacheBlock`` per
block. Frozen dataclasses written by ``store.summary.to_jsonable`` (fields in declaration
order, ``OMIT_NONE`` keys left out when None) and read back through the summary's validators.
Pure: no files; ``analysis.spec_decode`` computes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

FigureSource = Literal["metrics", "requests"]  # counter deltas / per-request rows


@dataclass(frozen=True, slots=True)
class RequestDrafts:
    """One trial request's drafting as the engine reported it (llama.cpp's ``timings``):
    ``acceptance_rate`` = accepted / draft tokens, None when it drafted nothing."""

    block: int
    prompt_id: str
    draft_tokens: int
    accepted_tokens: int
    acceptance_rate: float | None


@dataclass(frozen=True, slots=True)
class RequestAcceptance:
    """Acceptance per request over an arm's trial requests that reported drafts.

    ``n_requests``: those requests; ``n_no_draft``: those that drafted nothing (their
    acceptance is undefined, so they are counted, not averaged in) and ``no_draft_share`` =
    n_no_draft / n_requests. ``min`` .. ``max``: quartiles (numpy's linear interpolation) of
    accepted / draft tokens per request over the ``n_requests - n_no_draft`` that drafted (None
    when none did). ``listed``: the first requests in run order (block, then send order), at
    most ``REQUESTS_LISTED``; the rest are in the figures above and in requests.jsonl.
    """

    n_requests: int
    n_no_draft: int
    no_draft_share: float
    min: float | None
    q1: float | None
    median: float | None
    q3: float | None
    max: float | None
    listed: tuple[RequestDrafts, ...]


REQUESTS_LISTED = 12  # per arm; a summary stays small however long the run


@dataclass(frozen=True, slots=True)
class SpecDecodeRecord:
    """One arm's speculative decoding over its trial blocks.

    ``acceptance_rate`` = accepted / draft tokens; ``mean_accepted_length`` = accepted tokens
    per draft, ``tokens_per_step`` = that + 1 (the verified step's own token);
    ``per_position[i]`` = drafts whose token at position i (0: the first draft token) was
    accepted / drafts. Without a draft count (llama.cpp rows with no counters) the figures per
    draft are None and ``per_position`` is empty. ``per_request`` (source "requests" only):
    acceptance per request, its distribution and the first requests.
    """

    OMIT_NONE: ClassVar[frozenset[str]] = frozenset({"n_requests", "per_request"})

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
    per_request: RequestAcceptance | None = None  # source "requests"


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


__all__ = [
    "REQUESTS_LISTED",
    "FigureSource",
    "PrefixCacheBlock",
    "PrefixCacheRecord",
    "RequestAcceptance",
    "RequestDrafts",
    "SpecDecodeRecord",
]
