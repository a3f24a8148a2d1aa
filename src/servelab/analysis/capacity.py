"""Goodput and capacity of a run: request rows -> per-arm records and capacity comparisons.

Owns the step from trial rows and SLO texts to ``stats.capacity``'s records: per arm and load
level (``rate_rps`` for an open loop, else ``concurrency``), the goodput (requests meeting every
SLO per second of the level's blocks), each SLO's attainment and whether its run-level
statistic held (``goodput_of``); per arm, the capacity from its open-loop rates
(``stats.capacity.capacity`` over each rate's pooled requests); per candidate, the capacity
comparison with its reference as a ``Comparison`` of the decision metric ``capacity_rps``.
Pure: rows in, records out; the seed keys every generator. docs/capacity.md is the user's page.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from servelab.analysis.comparisons import sentence
from servelab.analysis.row_selection import Row, block_of, trials
from servelab.spec.slo import (
    Slo,
    parse_slos,
    quantile_of,
    request_meets,
    slo_met_by,
    slo_values,
    statistic,
)
from servelab.stats.capacity import (
    CAPACITY_STATISTIC,
    ArmCapacity,
    Blocks,
    Capacity,
    CapacityComparison,
    CapacitySection,
    GoodputLevel,
    SloTerm,
    capacity,
    compare_capacity,
)
from servelab.store.summary import Comparison

CAPACITY_METRIC = "capacity_rps"
Level = tuple[bool, float]  # (open loop, rate or concurrency)


@dataclass(frozen=True, slots=True)
class CapacityResult:
    """The capacity section and the ``capacity_rps`` comparisons that go with it."""

    section: CapacitySection
    comparisons: tuple[Comparison, ...]


def level_key(row: Row) -> Level:
    """A row's load level: its open-loop rate, else its concurrency (1 when unsaid)."""
    rate = row.get("rate_rps")
    if isinstance(rate, int | float) and not isinstance(rate, bool):
        return True, float(rate)
    return False, float(row.get("concurrency") or 1)


def _number(v: object) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def block_span_s(rows: Sequence[Row]) -> float:
    """One block's duration: its first (scheduled, else actual) send to its last end."""
    starts, ends = [], []
    for r in rows:
        send = _number(r.get("t_send_unix_s"))
        if send is None:
            continue
        starts.append(_number(r.get("t_sched_unix_s")) or send)
        ends.append(send + (_number(r.get("e2e_s")) or 0.0))
    return max(ends) - min(starts) if starts else 0.0


def _good(slos: Sequence[Slo], row: Row) -> bool:
    met = request_meets(slos, row) if slos else row.get("slo_met")
    return met is True


def goodput_of(
    rows: Sequence[Row], slos: Sequence[Slo], duration_s: float | None = None
) -> GoodputLevel | None:
    """Goodput of one level's trial rows (all from one level; several blocks allowed).

    ``duration_s`` defaults to the sum of the blocks' spans (``block_span_s``). Without SLOs
    a row's own ``slo_met`` counts (None counts as not met). None when there are no trials."""
    tried = trials(rows)
    if not tried:
        return None
    blocks = _by_block(tried)
    span = duration_s if duration_s is not None else sum(map(block_span_s, blocks.values()))
    n_good = sum(_good(slos, r) for r in tried)
    open_loop, level = level_key(tried[0])
    stats = {s.text: statistic(s.statistic, slo_values(s, tried)) for s in slos}
    return GoodputLevel(
        level=level, open_loop=open_loop, n_requests=len(tried), n_good=n_good,
        duration_s=span, goodput_rps=n_good / span if span > 0 else None,
        throughput_rps=len(tried) / span if span > 0 else None,
        attainment={s.text: _share(s, tried) for s in slos}, statistic=stats,
        holds={s.text: _held(s, v) for s, v in zip(slos, stats.values(), strict=True)},
        n_blocks=len(blocks),
    )  # fmt: skip


def _share(slo: Slo, rows: Sequence[Row]) -> float:
    return sum(slo_met_by(slo, r) for r in rows) / len(rows)


def _held(slo: Slo, stat: float | None) -> bool:
    return stat is not None and stat == stat and slo.met_by(stat)


def _by_block(rows: Sequence[Row]) -> dict[int, list[Row]]:
    out: dict[int, list[Row]] = {}
    for r in rows:
        out.setdefault(block_of(r), []).append(r)
    return out


def _by_level(rows: Sequence[Row]) -> dict[Level, list[Row]]:
    out: dict[Level, list[Row]] = {}
    for r in rows:
        out.setdefault(level_key(r), []).append(r)
    return dict(sorted(out.items()))


def terms_of(slos: Sequence[Slo]) -> tuple[SloTerm, ...]:
    """What ``stats.capacity`` needs of each SLO: its quantile (None: mean), bound, direction."""
    return tuple(SloTerm(quantile_of(s.statistic), s.bound, s.lower_is_better) for s in slos)


def blocks_of(slos: Sequence[Slo], rows: Sequence[Row]) -> Blocks:
    """``{rate_rps: {round: each SLO's values}}`` of one arm's open-loop trial rows."""
    out: dict[float, dict[int, list[list[float]]]] = {}
    for (open_loop, rate), level_rows in _by_level(trials(rows)).items():
        if open_loop:
            blocks = _by_block(level_rows).items()
            out[rate] = {b: [slo_values(s, rs) for s in slos] for b, rs in blocks}
    return out


def _rng(seed: int, *key: object) -> np.random.Generator:
    digest = zlib.crc32("|".join(map(str, key)).encode())
    return np.random.default_rng(np.random.SeedSequence([seed, digest]))


def arm_capacity(
    slos: Sequence[Slo], rows: Sequence[Row], *, confidence: float, seed: int, arm: str,
    n_resamples: int,
) -> ArmCapacity:  # fmt: skip
    """One arm's goodput per level and its capacity (None without rates or SLOs)."""
    levels = [g for rs in _by_level(trials(rows)).values() if (g := goodput_of(rs, slos))]
    blocks = blocks_of(slos, rows) if slos else {}
    cap: Capacity | None = None
    if blocks:
        rng = _rng(seed, "capacity", arm)
        cap = capacity(
            blocks, terms_of(slos), confidence=confidence, rng=rng, n_resamples=n_resamples
        )
    return ArmCapacity(tuple(levels), cap)


def _comparison(
    c: CapacityComparison, reference: str, candidate: str, concurrency: int, *,
    confidence: float, min_effect: float,
) -> Comparison:  # fmt: skip
    iv, d = c.interval, c.decision
    lo, hi = iv.ci_low, iv.ci_high
    width = hi - lo if lo is not None and hi is not None else None
    words = sentence(CAPACITY_METRIC, iv.ratio, lo, hi, d.verdict, min_effect,
                     d.blocks_needed, confidence)  # fmt: skip
    if d.verdict == "inconclusive" and d.blocks_needed is None and lo is not None:
        ci = f"{confidence * 100:g} % CI {lo:.2f}-{hi:.2f}"
        words = f"{CAPACITY_METRIC} inconclusive (ratio {iv.ratio:.2f}, {ci})"
    return Comparison(
        metric=CAPACITY_METRIC, baseline=reference, candidate=candidate, concurrency=concurrency,
        statistic=CAPACITY_STATISTIC, lower_is_better=False, ratio=iv.ratio, ci_low=lo, ci_high=hi,
        ratio_mean=None, ci_low_mean=None, ci_high_mean=None, verdict=d.verdict,
        min_effect=min_effect, n_blocks=c.n_rounds, blocks_needed=d.blocks_needed, paired=True,
        confidence_level=confidence, ci_width=width,
        n_blocks_baseline=c.n_rounds, n_blocks_candidate=c.n_rounds,
        summary=words + (f"; {c.note}" if c.note else ""), method="rounds",
    )  # fmt: skip


def _cap_concurrency(rows: Sequence[Row]) -> int:
    """The concurrency the open-loop rows record (their cap; 0: uncapped), for the label."""
    caps = [int(r.get("concurrency") or 0) for r in rows if level_key(r)[0]]
    return max(set(caps), key=caps.count) if caps else 0


def capacity_section(
    rows: Sequence[Row],
    slo_texts: Sequence[str],
    *,
    arms: Sequence[str],
    pairs: Sequence[tuple[str, str]],
    confidence: float,
    min_effect: float,
    seed: int,
    n_resamples: int,
) -> CapacityResult | None:
    """The capacity section of a run with SLOs (None without): per arm goodput and capacity,
    and for each (reference, candidate) pair with both capacities, the ``capacity_rps``
    comparison. Raises ValueError on a bad SLO text (the spec validates them first)."""
    slos = parse_slos(slo_texts)
    if not slos:
        return None
    by_arm = {a: [r for r in trials(rows) if r.get("arm") == a] for a in arms}
    out = {
        a: arm_capacity(slos, rs, confidence=confidence, seed=seed, arm=a, n_resamples=n_resamples)
        for a, rs in by_arm.items()
        if rs
    }
    comps, notes = [], {}
    for ref, cand in pairs:
        if ref not in out or cand not in out or not (out[ref].capacity and out[cand].capacity):
            continue
        c = compare_capacity(
            blocks_of(slos, by_arm[ref]), blocks_of(slos, by_arm[cand]), terms_of(slos),
            confidence=confidence, min_effect=min_effect, rng=_rng(seed, "capacity", ref, cand),
            n_resamples=n_resamples,
        )  # fmt: skip
        if c.note:
            notes[cand] = c.note
        conc = _cap_concurrency(by_arm[cand])
        comps.append(_comparison(c, ref, cand, conc, confidence=confidence, min_effect=min_effect))
    section = CapacitySection(tuple(s.text for s in slos), confidence, out, notes)
    return CapacityResult(section, tuple(comps))
