"""One speculative-decoding record and one prefix-cache record per arm, whichever engine ran.

Owns the summary's ``spec_decode`` and ``prefix_cache`` (``store.engine_records``):

- spec decoding: from an arm's trial rows when they carry ``draft_n`` / ``draft_accepted``
  (llama.cpp's per-request ``timings``; source ``requests``), with the draft count and the
  per-position acceptance taken from the engine's counters when the run stored them, and the
  acceptance of each request (accepted / drafted) as a distribution over the requests with
  the first ones listed (``request_acceptance``); else from
  the per-block counter deltas alone (vLLM, whose replies carry no timings; source
  ``metrics``). An arm with no draft token has no record;
- the prefix cache: per block, prompt tokens looked up and found, from the engine's counters
  (``CounterNames.prefix_cache_queries`` / ``prefix_cache_hits``: vLLM counts prompt tokens)
  or from rows' ``cache_n`` / ``n_in`` (llama.cpp), with how the block's cache was emptied. An
  arm appears when its effective configuration caches prompts or when it shows hits.

Both sections are None when no arm has a record, so summaries of runs without speculation or
caching keep their bytes. Pure: the caller reads the counter files and passes them in
(``CounterInputs``); counters are read only through the arm's engine ``CounterNames``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from servelab.analysis.row_selection import Row, block_of, load_level, trials
from servelab.engines.base import CounterNames
from servelab.store.engine_records import (
    REQUESTS_LISTED,
    FigureSource,
    PrefixCacheBlock,
    PrefixCacheRecord,
    RequestAcceptance,
    RequestDrafts,
    SpecDecodeRecord,
)
from servelab.store.metrics_files import BlockCache, BlockDeltas

__all__ = [
    "CounterInputs",
    "caching_of",
    "prefix_cache_record",
    "prefix_cache_section",
    "request_acceptance",
    "spec_decode_record",
    "spec_decode_section",
]


@dataclass(frozen=True, slots=True)
class CounterInputs:
    """What the caller read for one arm: its engine's counter names, its blocks' counter
    deltas, how each block's cache was emptied, and whether the arm caches prompts (its
    effective ``prefix_cache``; None when the run did not record it)."""

    names: CounterNames
    blocks: tuple[BlockDeltas, ...] = ()
    caches: tuple[BlockCache, ...] = ()
    caching: bool | None = None


def caching_of(effective: Mapping[str, object]) -> bool | None:
    """An arm's effective ``prefix_cache`` (``engine.prefix_cache`` in compare runs)."""
    value = effective.get("prefix_cache", effective.get("engine.prefix_cache"))
    return value if isinstance(value, bool) else None


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _total(blocks: Iterable[BlockDeltas], names: CounterNames, name: str | None) -> float | None:
    found = [v for b in blocks if (v := names.read(b.deltas, name)) is not None]
    return sum(found) if found else None


def _level_tag(row: Row) -> str:
    level = load_level(row)
    return f"c{level.concurrency}" if level.rate_rps is None else f"r{level.rate_rps:g}"


# ------------------------------------------------------------------------------ spec decoding


def _per_position(
    blocks: Sequence[BlockDeltas], names: CounterNames, drafts: float | None
) -> tuple[float, ...]:
    """Accepted tokens at position i / drafts, positions 0..max (a missing one accepted 0)."""
    if not drafts:
        return ()
    summed: dict[int, float] = {}
    for b in blocks:
        for label, value in names.by_label(
            b.deltas, names.accepted_per_position, "position"
        ).items():
            if label.isdigit():
                summed[int(label)] = summed.get(int(label), 0.0) + value
    if not summed:
        return ()
    return tuple(summed.get(i, 0.0) / drafts for i in range(max(summed) + 1))


def _drafts_of(row: Row) -> RequestDrafts:
    drafted = round(_number(row.get("draft_n")) or 0.0)
    accepted = round(_number(row.get("draft_accepted")) or 0.0)
    return RequestDrafts(
        block=block_of(row), prompt_id=str(row.get("prompt_id", "")), draft_tokens=drafted,
        accepted_tokens=accepted, acceptance_rate=accepted / drafted if drafted > 0 else None,
    )  # fmt: skip


def _reports_drafting(row: Row) -> bool:
    """The engine said what this request drafted: ``draft_n``, or a successful request's
    timings without it (llama-server leaves ``draft_n`` out when a request drafted nothing)."""
    if _number(row.get("draft_n")) is not None:
        return True
    return row.get("outcome") == "ok" and _number(row.get("server_decode_tps")) is not None


def request_acceptance(rows: Sequence[Row]) -> RequestAcceptance | None:
    """Acceptance per request over an arm's trial rows whose engine reported drafting (in
    run order: block, then ``seq``); None when there is none. A request that drafted nothing
    (timings without ``draft_n``) is counted in ``n_no_draft``, not in the quartiles: its
    acceptance is undefined."""
    reported = sorted(
        (r for r in trials(rows) if _reports_drafting(r)),
        key=lambda r: (block_of(r), _number(r.get("seq")) or 0.0),
    )  # fmt: skip
    if not reported:
        return None
    each = [_drafts_of(r) for r in reported]
    rates = np.array([d.acceptance_rate for d in each if d.acceptance_rate is not None])
    q = [float(x) for x in np.percentile(rates, [0, 25, 50, 75, 100])] if rates.size else []
    n_no_draft = len(each) - int(rates.size)
    return RequestAcceptance(
        n_requests=len(each), n_no_draft=n_no_draft, no_draft_share=n_no_draft / len(each),
        min=q[0] if q else None, q1=q[1] if q else None, median=q[2] if q else None,
        q3=q[3] if q else None, max=q[4] if q else None, listed=tuple(each[:REQUESTS_LISTED]),
    )  # fmt: skip


def _record(
    source: FigureSource, drafts: float | None, drafted: float, accepted: float,
    per_position: tuple[float, ...], n_blocks: int, n_requests: int | None = None,
    per_request: RequestAcceptance | None = None,
) -> SpecDecodeRecord:  # fmt: skip
    per_draft = accepted / drafts if drafts else None
    return SpecDecodeRecord(
        source=source, drafts=round(drafts) if drafts else None, draft_tokens=round(drafted),
        accepted_tokens=round(accepted), acceptance_rate=accepted / drafted,
        mean_accepted_length=per_draft,
        tokens_per_step=per_draft + 1 if per_draft is not None else None,
        per_position=per_position, n_blocks=n_blocks, n_requests=n_requests,
        per_request=per_request,
    )  # fmt: skip


def spec_decode_record(rows: Sequence[Row], counters: CounterInputs) -> SpecDecodeRecord | None:
    """One arm's record from its rows (``draft_n``) or, without them, its counter deltas;
    None when it drafted nothing."""
    names, blocks = counters.names, counters.blocks
    reported = [r for r in trials(rows) if _number(r.get("draft_n")) is not None]
    row_drafted = sum(_number(r.get("draft_n")) or 0.0 for r in reported)
    drafts = _total(blocks, names, names.drafts)
    if row_drafted > 0:
        accepted = sum(_number(r.get("draft_accepted")) or 0.0 for r in reported)
        n_blocks = len({(block_of(r), _level_tag(r)) for r in reported})
        return _record("requests", drafts, row_drafted, accepted,
                       _per_position(blocks, names, drafts), n_blocks, len(reported),
                       request_acceptance(rows))  # fmt: skip
    drafted = _total(blocks, names, names.draft_tokens)
    if not drafted:
        return None
    accepted = _total(blocks, names, names.draft_accepted_tokens) or 0.0
    n_blocks = sum(1 for b in blocks if names.read(b.deltas, names.draft_tokens) is not None)
    return _record("metrics", drafts, drafted, accepted, _per_position(blocks, names, drafts),
                   n_blocks)  # fmt: skip


def spec_decode_section(
    rows: Sequence[Row], arms: Mapping[str, CounterInputs]
) -> dict[str, SpecDecodeRecord] | None:
    """Per arm that speculated its record; None when none did (the key is then left out)."""
    out = {}
    for arm, counters in arms.items():
        record = spec_decode_record([r for r in rows if r.get("arm") == arm], counters)
        if record is not None:
            out[arm] = record
    return out or None


# ------------------------------------------------------------------------------ prefix cache


def _rate(hits: float, queried: float) -> float | None:
    return hits / queried if queried > 0 else None


def _counter_blocks(counters: CounterInputs) -> list[tuple[int, str, float, float]]:
    names = counters.names
    out = []
    for b in counters.blocks:
        queried = names.read(b.deltas, names.prefix_cache_queries)
        if queried is not None:
            out.append((b.block, b.level, names.read(b.deltas, names.prefix_cache_hits) or 0.0,
                        queried))  # fmt: skip
    return out


def _row_blocks(rows: Sequence[Row]) -> list[tuple[int, str, float, float]]:
    sums: dict[tuple[int, str], tuple[float, float]] = {}
    for r in trials(rows):
        cached, n_in = _number(r.get("cache_n")), _number(r.get("n_in"))
        if cached is None or n_in is None:
            continue
        key = (block_of(r), _level_tag(r))
        hits, queried = sums.get(key, (0.0, 0.0))
        sums[key] = (hits + cached, queried + n_in)
    return [(b, level, h, q) for (b, level), (h, q) in sorted(sums.items())]


def _emptied(caches: Sequence[BlockCache], block: int, level: str) -> str | None:
    for c in caches:
        if c.block == block and (c.level == level or not level or not c.level):
            return c.emptied
    return None


def prefix_cache_record(rows: Sequence[Row], counters: CounterInputs) -> PrefixCacheRecord | None:
    """One arm's prefix-cache figures per block (counters first, else rows); None when it has
    none, or when it neither caches prompts nor shows a hit."""
    found = _counter_blocks(counters)
    source: FigureSource = "metrics" if found else "requests"
    found = found or _row_blocks(rows)
    hits, queried = sum(f[2] for f in found), sum(f[3] for f in found)
    if not found or not (hits > 0 or counters.caching):
        return None
    blocks = tuple(
        PrefixCacheBlock(block, level, round(h), round(q), _rate(h, q),
                         _emptied(counters.caches, block, level))
        for block, level, h, q in sorted(found)
    )  # fmt: skip
    return PrefixCacheRecord(
        source=source, caching=counters.caching,
        hit_tokens=round(hits), queried_tokens=round(queried), hit_rate=_rate(hits, queried),
        blocks=blocks,
    )  # fmt: skip


def prefix_cache_section(
    rows: Sequence[Row], arms: Mapping[str, CounterInputs]
) -> dict[str, PrefixCacheRecord] | None:
    """Per arm that caches prompts or shows hits its record; None when there is none."""
    out = {}
    for arm, counters in arms.items():
        record = prefix_cache_record([r for r in rows if r.get("arm") == arm], counters)
        if record is not None:
            out[arm] = record
    return out or None
