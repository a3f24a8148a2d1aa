"""spec/slo.py: the SLO grammar, per-request checks and run-level holds."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from servelab.spec.slo import (
    Slo,
    parse_slo,
    parse_slos,
    request_meets,
    slo_holds,
    slo_values,
    statistic,
)


def test_parse_known_forms() -> None:
    assert parse_slo("ttft_s.p90<=0.3") == Slo("ttft_s", "p90", "<=", 0.3)
    assert parse_slo(" itl_s.p99 <= 50ms ") == Slo("itl_s", "p99", "<=", 0.05)
    assert parse_slo("decode_tps.p10>=20") == Slo("decode_tps", "p10", ">=", 20.0)
    assert parse_slo("e2e_s.median<=2s").statistic == "median"
    assert parse_slo("tpot_s.p99.9<=1e-1").bound == pytest.approx(0.1)
    assert parse_slo("ttft_s.p90<=0.3").text == "ttft_s.p90<=0.3"
    assert parse_slo("decode_tps.mean>=20").text == "decode_tps.mean>=20"


@pytest.mark.parametrize(
    ("text", "fix"),
    [
        ("ttft.p90<=0.3", "use one of"),  # unknown metric
        ("n_out.p90<=3", "use one of"),  # a count, no direction
        ("ttft_s.p100<=0.3", "use pN"),
        ("ttft_s.avg<=0.3", "use pN"),
        ("ttft_s<=0.3", "e.g. ttft_s.p90<=0.3"),
        ("ttft_s.p90>=0.3", "write <="),
        ("decode_tps.p10<=20", "write >="),
        ("decode_tps.p10>=20ms", "drop the unit"),
        ("ttft_s.p90<0.3", "e.g."),
    ],
)
def test_bad_slo_says_the_fix(text: str, fix: str) -> None:
    with pytest.raises(ValueError, match=fix) as err:
        parse_slo(text)
    assert "\n" not in str(err.value)


def test_duplicate_slo_refused() -> None:
    with pytest.raises(ValueError, match="twice"):
        parse_slos(["ttft_s.p90<=0.3", "ttft_s.p90<=300ms"])


_metric = st.sampled_from(["ttft_s", "e2e_s", "itl_s", "tpot_s", "decode_tps", "e2e_tps"])
_stat = st.one_of(
    st.sampled_from(["mean", "median", "min", "max"]),
    st.integers(1, 99).map(lambda q: f"p{q}"),
)


@settings(max_examples=80, deadline=None)
@given(_metric, _stat, st.floats(0, 1e6, allow_nan=False))
def test_text_round_trips(metric: str, stat: str, bound: float) -> None:
    op = ">=" if metric.endswith("tps") else "<="
    slo = Slo(metric, stat, op, bound)
    assert parse_slo(slo.text) == slo


def _row(outcome: str = "ok", **metrics: object) -> dict[str, object]:
    return {"outcome": outcome, **metrics}


def test_request_meets() -> None:
    ttft, itl = parse_slo("ttft_s.p90<=0.3"), parse_slo("itl_s.p99<=0.05")
    assert request_meets([], _row(ttft_s=9.0)) is None
    assert request_meets([ttft], _row(ttft_s=0.3)) is True
    assert request_meets([ttft], _row(ttft_s=0.31)) is False
    assert request_meets([ttft], _row("timeout", ttft_s=None)) is False
    # itl: the request's own p99 over its gaps
    assert request_meets([itl], _row(itl_s=[0.01] * 98 + [0.2] * 2)) is False
    assert request_meets([itl], _row(itl_s=[0.01] * 200)) is True
    # not measured: not held against the request
    assert request_meets([ttft, itl], _row(ttft_s=0.1, itl_s=[])) is True
    assert request_meets([ttft, itl], _row(ttft_s=0.4, itl_s=[0.01])) is False


def test_run_level_holds_and_failures_count_worst() -> None:
    slo = parse_slo("ttft_s.p90<=0.3")
    ok = [_row(ttft_s=0.1)] * 9
    assert slo_holds(slo, slo_values(slo, [*ok, _row(ttft_s=0.2)]))
    # one failure in ten sits at the top: p90 interpolates toward +inf
    assert not slo_holds(slo, slo_values(slo, [*ok, _row("error")]))
    rate = parse_slo("decode_tps.p10>=20")
    assert slo_values(rate, [_row("error")]) == [-math.inf]
    assert not slo_holds(slo, [])
    itl = parse_slo("itl_s.max<=0.05")
    assert slo_values(itl, [_row(itl_s=[0.01, 0.02]), _row(itl_s=[0.03])]) == [0.01, 0.02, 0.03]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0, 100), min_size=1, max_size=50), st.integers(1, 99))
def test_statistic_matches_numpy_on_finite(values: list[float], q: int) -> None:
    got = statistic(f"p{q}", values)
    assert got == pytest.approx(float(np.percentile(values, q)), rel=1e-9, abs=1e-12)
    assert statistic("mean", values) == pytest.approx(float(np.mean(values)))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0, 10), min_size=1, max_size=30), st.integers(1, 5), _stat)
def test_failures_never_help(values: list[float], n_fail: int, stat: str) -> None:
    clean = statistic(stat, values)
    worse = statistic(stat, [*values, *([math.inf] * n_fail)])
    assert clean is not None and worse is not None and not math.isnan(worse)
    assert worse >= clean


def test_open_loop_latency_counts_from_the_scheduled_arrival() -> None:
    ttft, itl = parse_slo("ttft_s.p90<=0.3"), parse_slo("itl_s.max<=0.05")
    late = _row(ttft_s=0.1, lag_s=0.5, itl_s=[0.01])
    assert request_meets([ttft], late) is False  # 0.1 s from send, 0.6 s from arrival
    assert request_meets([itl], late) is True  # gaps do not move with the send time
    assert slo_values(ttft, [late, _row(ttft_s=0.1, lag_s=-1e-4)]) == [0.6, 0.1]
