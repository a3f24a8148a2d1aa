"""analysis/capacity.py and report/capacity_view.py on synthetic rows in the row format."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydantic import TypeAdapter

from servelab.analysis.capacity import block_span_s, capacity_section, goodput_of
from servelab.report.blocks import Para, Table
from servelab.report.capacity_view import arm_capacity_words, capacity_blocks
from servelab.report.markdown import md_text
from servelab.spec.slo import parse_slos
from servelab.stats.capacity import CapacitySection
from servelab.store.summary import to_jsonable

SLOS = ("ttft_s.p90<=0.3", "itl_s.p99<=0.05")
RATES = (0.5, 1.0, 2.0, 4.0)


def _rows(arm: str, cap_rps: float, rounds: int = 3, n: int = 20, seed: int = 0) -> list[dict]:
    """TTFT grows with rate/cap: the p90 crosses 0.3 s near cap_rps / 0.95."""
    rng = np.random.default_rng(seed)
    out: list[dict] = []
    for b in range(rounds):
        for rate in RATES:
            t0 = 1000.0 * (b + 1) + rate
            for i in range(n):
                ttft = 0.3 * (rate / cap_rps) * rng.uniform(0.5, 1.0)
                out.append({
                    "arm": arm, "block": b, "phase": "trial", "outcome": "ok",
                    "concurrency": 4, "rate_rps": rate, "t_sched_unix_s": t0 + i / rate,
                    "t_send_unix_s": t0 + i / rate + 0.001, "ttft_s": ttft,
                    "e2e_s": ttft + 0.2, "itl_s": [0.01, 0.012], "seq": len(out),
                })  # fmt: skip
    return out


def test_goodput_known_answer() -> None:
    slos = parse_slos(SLOS)
    rows = [
        {"phase": "trial", "block": 0, "outcome": "ok", "rate_rps": 2.0, "t_send_unix_s": 10.0,
         "t_sched_unix_s": 10.0, "e2e_s": 1.0, "ttft_s": 0.1, "itl_s": [0.01]},
        {"phase": "trial", "block": 0, "outcome": "ok", "rate_rps": 2.0, "t_send_unix_s": 11.0,
         "t_sched_unix_s": 11.0, "e2e_s": 1.0, "ttft_s": 0.5, "itl_s": [0.01]},
        {"phase": "trial", "block": 0, "outcome": "timeout", "rate_rps": 2.0,
         "t_send_unix_s": 12.0, "t_sched_unix_s": 12.0, "e2e_s": None},
        {"phase": "warmup", "block": 0, "outcome": "ok", "t_send_unix_s": 0.0, "e2e_s": 9.0},
    ]  # fmt: skip
    assert block_span_s(rows[:3]) == pytest.approx(2.0)
    g = goodput_of(rows, slos)
    assert g is not None
    assert (g.level, g.open_loop, g.n_requests, g.n_good) == (2.0, True, 3, 1)
    assert g.goodput_rps == pytest.approx(0.5) and g.throughput_rps == pytest.approx(1.5)
    assert g.attainment == {SLOS[0]: pytest.approx(1 / 3), SLOS[1]: pytest.approx(2 / 3)}
    assert g.holds == {SLOS[0]: False, SLOS[1]: False}  # the timeout is the worst value
    # without SLOs, the rows' own slo_met counts
    flagged = [{**rows[0], "slo_met": True}, {**rows[1], "slo_met": False}]
    assert goodput_of(flagged, (), duration_s=4.0).goodput_rps == pytest.approx(0.25)  # type: ignore[union-attr]


def _section() -> tuple[CapacitySection, tuple]:
    rows = _rows("fast", 2.0, seed=1) + _rows("slow", 1.0, seed=2)
    result = capacity_section(
        rows, SLOS, arms=("fast", "slow"), pairs=[("fast", "slow")], confidence=0.9,
        min_effect=0.05, seed=0, n_resamples=200,
    )  # fmt: skip
    assert result is not None
    return result.section, result.comparisons


def test_capacity_per_arm_and_comparison() -> None:
    section, comps = _section()
    fast, slow = section.arms["fast"].capacity, section.arms["slow"].capacity
    assert fast is not None and slow is not None
    assert 1.8 <= fast.rps <= 2.4 and 0.9 <= slow.rps <= 1.2
    assert fast.ci_low is not None and fast.ci_high is not None
    assert fast.ci_low <= fast.rps <= fast.ci_high
    assert fast.censored == "none" and fast.held_rps == 2.0
    assert [g.level for g in section.arms["fast"].levels] == list(RATES)
    (c,) = comps
    assert (c.metric, c.baseline, c.candidate, c.verdict) == (
        "capacity_rps",
        "fast",
        "slow",
        "worse",
    )
    assert c.ratio == pytest.approx(0.5, rel=0.15)


def test_no_slos_no_section() -> None:
    assert capacity_section(
        _rows("a", 1.0), (), arms=("a",), pairs=(), confidence=0.9, min_effect=0.05, seed=0,
        n_resamples=10,
    ) is None  # fmt: skip


def test_section_round_trips_as_json() -> None:
    section, _ = _section()
    back = TypeAdapter(CapacitySection).validate_python(to_jsonable(section))
    assert back == section


def test_blocks_say_capacity_and_goodput() -> None:
    section, _ = _section()
    lead, cap_table, goodput, *_ = capacity_blocks(section)
    assert isinstance(lead, Para) and SLOS[0] in lead.text
    assert isinstance(cap_table, Table) and isinstance(goodput, Table)
    assert cap_table.headers[1] == "capacity (req/s)"
    assert [row[0] for row in cap_table.rows] == ["fast", "slow"]
    assert len(goodput.rows) == 2 * len(RATES) and goodput.headers[-2:] == SLOS
    # plain text: the Markdown renderer escapes what is active there
    assert md_text("ttft_s.p90<=0.3") == "ttft_s.p90\\<=0.3"
    none = capacity_blocks(None)[0]
    assert isinstance(none, Para) and "No SLOs" in none.text


def test_arm_capacity_words() -> None:
    section, _ = _section()
    words = arm_capacity_words("fast", section.arms["fast"], section.confidence)
    assert words is not None and words.startswith("fast: capacity 2.")
    assert "90 % CI" in words and "held at confidence: 2" in words


def test_capacity_margin_is_the_goodput_tables_statistic() -> None:
    """One number: the margin at a rate is the largest log(statistic / bound) of the table."""
    section, _ = _section()
    slos = parse_slos(SLOS)
    for arm in section.arms.values():
        assert arm.capacity is not None
        for point, level in zip(arm.capacity.points, arm.levels, strict=True):
            expect = max(math.log(level.statistic[s.text] / s.bound) for s in slos)  # type: ignore[operator]
            assert point.margin == pytest.approx(expect)
            assert point.holds == level.all_hold


def test_failed_requests_break_the_rate() -> None:
    rows = _rows("a", 2.0)
    for r in rows:
        if r["rate_rps"] == 4.0:
            r.update(outcome="timeout", ttft_s=None, e2e_s=None, itl_s=[])
    result = capacity_section(
        rows, SLOS, arms=("a",), pairs=(), confidence=0.9, min_effect=0.05, seed=0,
        n_resamples=50,
    )  # fmt: skip
    assert result is not None
    cap = result.section.arms["a"].capacity
    assert cap is not None and cap.points[-1].margin == pytest.approx(5.0)  # CLIP


def test_censored_comparison_sentence_says_why() -> None:
    rows = _rows("a", 0.1, seed=1) + _rows("b", 0.1, seed=2)  # both miss at the lowest rate
    result = capacity_section(
        rows, SLOS, arms=("a", "b"), pairs=[("a", "b")], confidence=0.9, min_effect=0.05,
        seed=0, n_resamples=50,
    )  # fmt: skip
    assert result is not None
    (c,) = result.comparisons
    assert c.verdict == "inconclusive" and "None" not in c.summary
    assert "their capacities are outside the sweep" in c.summary
