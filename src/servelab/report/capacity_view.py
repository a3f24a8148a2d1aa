"""The capacity section of a report: each arm's SLO-holding rate and its goodput per load level.

Owns ``capacity_blocks`` (``summary.capacity`` -> report blocks: a capacity table with the
interval and the rate held at confidence, and a goodput table with each SLO's attainment and
run-level statistic per level). Pure. Text is plain: the Markdown and HTML renderers escape it.
"""

from __future__ import annotations

import math

from servelab.report.blocks import Block, Para, Table
from servelab.stats.capacity import ArmCapacity, Capacity, CapacitySection, GoodputLevel


def _rps(x: float | None) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{x:.3g}"


def capacity_text(cap: Capacity) -> str:
    """The point estimate, censoring said in words."""
    lowest, highest = cap.points[0].rate_rps, cap.points[-1].rate_rps
    if cap.censored == "above":
        return f"≥ {_rps(highest)} (held at every rate tried)"
    if cap.censored == "below":
        return f"< {_rps(lowest)} (missed at the lowest rate tried)"
    return _rps(cap.rps)


def _capacity_words(cap: Capacity) -> str:
    if cap.censored == "above":
        return f"at least {_rps(cap.points[-1].rate_rps)} req/s (held at every rate tried)"
    if cap.censored == "below":
        return f"below {_rps(cap.points[0].rate_rps)} req/s (missed at the lowest rate tried)"
    return f"{_rps(cap.rps)} req/s"


def interval_text(cap: Capacity) -> str:
    """The interval; an end beyond the sweep is written as a bound on the rates tried."""
    if not cap.has_interval:
        return "need ≥ 2 rounds"
    low = _rps(cap.ci_low) if cap.ci_low is not None else f"< {_rps(cap.points[0].rate_rps)}"
    high = _rps(cap.ci_high) if cap.ci_high is not None else f"> {_rps(cap.points[-1].rate_rps)}"
    return f"{low} to {high}"


def _held(cap: Capacity) -> str:
    if not cap.has_interval:
        return "—"
    return "none" if cap.held_rps is None else _rps(cap.held_rps)


def capacity_table(section: CapacitySection) -> Table | None:
    conf = f"{section.confidence * 100:g} %"
    rows = [
        (arm, capacity_text(c), interval_text(c), _held(c), str(c.n_rounds))
        for arm, a in section.arms.items()
        if (c := a.capacity) is not None
    ]
    if not rows:
        return None
    headers = ("arm", "capacity (req/s)", f"{conf} CI", f"held at {conf} (req/s)", "rounds")
    return Table(headers, tuple(rows))


def _level(g: GoodputLevel) -> str:
    return f"{g.level:g} req/s" if g.open_loop else f"concurrency {g.level:g}"


def _slo_cell(g: GoodputLevel, slo: str) -> str:
    stat = g.statistic.get(slo)
    held = "held" if g.holds.get(slo) else "missed"
    stat_text = "—" if stat is None else f"{stat:.3g}"
    return f"{g.attainment.get(slo, 0.0) * 100:.0f} % met; run {stat_text} {held}"


def goodput_table(section: CapacitySection) -> Table:
    headers = ("arm", "load", "requests", "goodput (req/s)", "throughput (req/s)", *section.slos)
    rows = [
        (arm, _level(g), f"{g.n_good}/{g.n_requests}", _rps(g.goodput_rps),
         _rps(g.throughput_rps), *(_slo_cell(g, s) for s in section.slos))
        for arm, a in section.arms.items()
        for g in a.levels
    ]  # fmt: skip
    return Table(headers, tuple(rows))


def _lead(section: CapacitySection) -> Para:
    conf = f"{section.confidence * 100:g} %"
    return Para(
        f"SLOs: {', '.join(section.slos)}. Capacity is the request rate at which the worst "
        "SLO's statistic (the 'run' figure below) crosses its bound, log-linear between the "
        "bracketing rates; "
        f"its {conf} CI resamples rounds; 'held at {conf}' is the highest rate that, with "
        "every lower rate, held all SLOs at that confidence. Goodput counts requests that "
        "met every SLO (a failed request meets none) per second of the level's blocks."
    )


def capacity_blocks(section: CapacitySection | None) -> tuple[Block, ...]:
    """The report blocks of a run's capacity section (a sentence when the run had no SLOs)."""
    if section is None:
        return (Para("No SLOs given: no goodput or capacity (add slo: to the spec or --slo)."),)
    blocks: list[Block] = [_lead(section)]
    table = capacity_table(section)
    blocks.append(table if table is not None else Para("No open-loop rates: no capacity."))
    blocks.append(goodput_table(section))
    blocks += [Para(f"{arm}: {note}") for arm, note in section.notes.items()]
    return tuple(blocks)


def arm_capacity_words(arm: str, a: ArmCapacity, confidence: float) -> str | None:
    """One sentence per arm for a terminal summary: "A: capacity 1.73 req/s (95 % CI ...)"."""
    if a.capacity is None:
        return None
    c = a.capacity
    return (
        f"{arm}: capacity {_capacity_words(c)} ({confidence * 100:g} % CI "
        f"{interval_text(c)}; held at confidence: {_held(c)})"
    )
