"""The report's "Speculative decoding" and "Prefix cache" sections, from the summary's
``spec_decode`` and ``prefix_cache`` records (``store.engine_records``).

Owns how an arm's drafting and prompt caching read, the same whichever engine ran: per arm the
source of its figures (the engine's counters or its replies), drafts, draft and accepted tokens,
acceptance rate, mean accepted length, tokens per verify step and the acceptance at each draft
position; per arm its prefix-cache hits and per block how the cache was emptied. Pure: the
renderers escape every string.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from servelab.report.blocks import Block, Para, Table
from servelab.store.engine_records import PrefixCacheRecord, SpecDecodeRecord

POSITIONS_SHOWN = 8  # per-position acceptance beyond this is summarised, not listed
SOURCE_WORDS = {"metrics": "engine counters", "requests": "per-request timings"}
SPEC_LEAD = (
    "Acceptance rate = accepted / draft tokens; mean accepted length = accepted tokens per "
    "draft, and a verify step yields that + 1 tokens; acceptance at position i = drafts whose "
    "i-th token (1 = the first) was accepted / drafts. From the engine's /metrics counter deltas "
    "over the trial blocks (vLLM) or the replies' draft_n / draft_n_accepted (llama.cpp, "
    "with the draft count and positions from its counters when the run stored them)."
)
CACHE_LEAD = (
    "Prompt tokens the engine found in its prefix cache over the trial blocks, of those it "
    "looked up; each block starts with an empty cache (emptied: how)."
)


def _n(x: float | None, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def positions_text(per_position: Sequence[float]) -> str:
    """``1: 0.92, 2: 0.85, ...`` (1-based), the tail beyond ``POSITIONS_SHOWN`` summarised."""
    if not per_position:
        return "-"
    shown = ", ".join(f"{i + 1}: {p:.2f}" for i, p in enumerate(per_position[:POSITIONS_SHOWN]))
    rest = per_position[POSITIONS_SHOWN:]
    if rest:
        shown += f", ... {len(per_position)}: {rest[-1]:.2f}"
    return shown


def _spec_row(arm: str, r: SpecDecodeRecord) -> tuple[str, ...]:
    covers = f"{r.n_blocks} blocks" + (f", {r.n_requests} requests" if r.n_requests else "")
    return (
        arm, SOURCE_WORDS.get(r.source, r.source), _n(r.drafts, "d"), str(r.draft_tokens),
        str(r.accepted_tokens), f"{r.acceptance_rate * 100:.1f} %",
        _n(r.mean_accepted_length, ".2f"), _n(r.tokens_per_step, ".2f"),
        positions_text(r.per_position), covers,
    )  # fmt: skip


def spec_decode_blocks(records: Mapping[str, SpecDecodeRecord] | None) -> tuple[Block, ...]:
    if not records:
        return (Para("No arm drafted tokens."),)
    rows = tuple(_spec_row(arm, r) for arm, r in records.items())
    headers = ("arm", "source", "drafts", "draft tokens", "accepted", "acceptance rate",
               "mean accepted length", "tokens per step", "acceptance by position",
               "covers")  # fmt: skip
    return (Para(SPEC_LEAD), Table(headers, rows))


def _emptied(record: PrefixCacheRecord) -> str:
    how = list(dict.fromkeys(b.emptied or "not recorded" for b in record.blocks))
    return ", ".join(how) if how else "-"


def prefix_cache_blocks(records: Mapping[str, PrefixCacheRecord] | None) -> tuple[Block, ...]:
    if not records:
        return (Para("No arm cached prompts or found prompt tokens in a cache."),)
    caching = {True: "on", False: "off", None: "not recorded"}
    rows = tuple(
        (arm, caching[r.caching], SOURCE_WORDS.get(r.source, r.source), str(r.hit_tokens),
         str(r.queried_tokens), _n(r.hit_rate * 100 if r.hit_rate is not None else None, ".1f")
         + (" %" if r.hit_rate is not None else ""), str(len(r.blocks)), _emptied(r))
        for arm, r in records.items()
    )  # fmt: skip
    headers = ("arm", "caching", "source", "hit tokens", "queried tokens", "hit rate",
               "blocks", "emptied by")  # fmt: skip
    return (Para(CACHE_LEAD), Table(headers, rows))
