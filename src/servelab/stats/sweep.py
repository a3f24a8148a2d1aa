"""Concurrency sweep figures: aggregate and per-stream throughput, and scaling efficiency.

Owns the per-arm sweep table (docs/statistics.md): for each concurrency level the aggregate
output tok/s of a block (output tokens of its successful trial requests / wall time from the
first send to the last completion), its median over blocks, the per-stream tok/s (median
``decode_tps``), the median TTFT, and the scaling efficiency against ideal linear scaling.
Pure numpy, no I/O, no random steps.

Assumptions: a block at concurrency c keeps c requests in flight from its first send to its last
completion, so its wall time is the span of its requests; failed requests add no tokens and do
not stretch the span (they have no completion time). Efficiency is aggregate(c) /
(c x aggregate(1)); when c = 1 was not measured it is relative to the lowest level measured,
aggregate(c) / ((c / c0) x aggregate(c0)), and ``reference_concurrency`` says which.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Request:
    """The fields of one successful trial request that the sweep needs."""

    t_send_unix_s: float
    e2e_s: float
    n_out: int
    decode_tps: float | None
    ttft_s: float | None


@dataclass(frozen=True, slots=True)
class SweepPoint:
    concurrency: int
    n_blocks: int
    aggregate_tps: float | None  # median over blocks of the block's output tok/s
    per_stream_tps: float | None  # median decode_tps over requests
    ttft_s: float | None  # median over requests
    efficiency: float | None


@dataclass(frozen=True, slots=True)
class Sweep:
    points: tuple[SweepPoint, ...]  # by concurrency, ascending
    reference_concurrency: int | None  # the level efficiency is relative to (1 when measured)


def block_aggregate_tps(requests: Sequence[Request]) -> float | None:
    """Output tokens of the block / (last completion - first send); None without a span."""
    if not requests:
        return None
    start = min(r.t_send_unix_s for r in requests)
    end = max(r.t_send_unix_s + r.e2e_s for r in requests)
    span = end - start
    return sum(r.n_out for r in requests) / span if span > 0 else None


def _median(values: Sequence[float | None]) -> float | None:
    arr = np.array([v for v in values if v is not None], dtype=float)
    arr = arr[np.isfinite(arr)]
    return float(np.median(arr)) if arr.size else None


def sweep(levels: Mapping[int, Sequence[Sequence[Request]]]) -> Sweep:
    """One arm's sweep from ``{concurrency: [block requests, ...]}``."""
    rows = []
    for c in sorted(levels):
        blocks = [b for b in levels[c] if b]
        flat = [r for b in blocks for r in b]
        rows.append(
            (
                c,
                len(blocks),
                _median([block_aggregate_tps(b) for b in blocks]),
                _median([r.decode_tps for r in flat]),
                _median([r.ttft_s for r in flat]),
            )
        )
    measured = [(c, agg) for c, _, agg, _, _ in rows if agg is not None and agg > 0]
    ref = measured[0] if measured else None
    points = tuple(
        SweepPoint(c, n, agg, stream, ttft, _efficiency(c, agg, ref))
        for c, n, agg, stream, ttft in rows
    )
    return Sweep(points, ref[0] if ref else None)


def _efficiency(c: int, agg: float | None, ref: tuple[int, float] | None) -> float | None:
    if agg is None or ref is None:
        return None
    c0, agg0 = ref
    return agg / ((c / c0) * agg0)
