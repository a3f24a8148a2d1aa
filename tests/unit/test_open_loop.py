"""Tests for the open-loop scheduler and the arrival schedules (``client.load``, ``spec.load``).

``run_one`` is a plain coroutine standing in for the HTTP request (the edge); ``open_loop``
runs unchanged, on a fake clock (exact, deterministic) or on the real one with sleeps of a few
milliseconds (the scheduler's own accuracy on this machine).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from servelab.analysis.arrivals import open_loop_figures
from servelab.client.clock import FakeClock, MonotonicClock
from servelab.client.load import closed_loop, open_loop
from servelab.engines.replay import ReplayLab
from servelab.runner.bench import run_bench
from servelab.spec.bench import BenchConfig
from servelab.spec.engine import EngineConfig
from servelab.spec.load import LoadSpec, arrival_offsets_s
from servelab.store.jsonl import read_jsonl
from tests.unit.replay_harness import STREAMS, make_seam


def test_constant_arrivals_land_on_their_schedule_on_a_fake_clock() -> None:
    clock = FakeClock(t_ns=5_000_000_000)
    sent: list[tuple[int, int, int]] = []

    async def run_one(job: int, sched_ns: int) -> int:
        sent.append((job, sched_ns, clock.now_ns()))
        await asyncio.sleep(0)
        return job

    offsets = arrival_offsets_s(10, 10.0, "constant", 1.0, np.random.default_rng(0))
    asyncio.run(open_loop(list(range(10)), offsets, None, run_one, lambda j, r: None, clock))
    assert [j for j, _, _ in sent] == list(range(10))
    assert [s - 5_000_000_000 for _, s, _ in sent] == [i * 100_000_000 for i in range(10)]
    assert all(now == sched for _, sched, now in sent)  # every send exactly on time


def test_poisson_and_gamma_schedules_are_seeded_with_the_exact_mean_gap() -> None:
    a = arrival_offsets_s(5, 2.0, "poisson", 1.0, np.random.default_rng(7))
    b = arrival_offsets_s(5, 2.0, "poisson", 1.0, np.random.default_rng(7))
    assert a[0] == 0.0 and np.array_equal(a, b)
    assert a[1:].round(4).tolist() == [0.4427, 1.0842, 1.4399, 2.0]  # known answer (numpy PCG64)
    gaps = np.diff(arrival_offsets_s(20_001, 4.0, "poisson", 1.0, np.random.default_rng(1)))
    assert gaps.mean() == pytest.approx(0.25, rel=1e-9)  # the block offers exactly the rate
    forty = arrival_offsets_s(40, 2.0, "poisson", 1.0, np.random.default_rng(0))
    assert 39 / forty[-1] == pytest.approx(2.0, rel=1e-9)  # unscaled, seed 0 drew 1.73/s
    assert gaps.std() == pytest.approx(0.25, rel=0.03)  # exponential: sd = mean
    bursty = np.diff(arrival_offsets_s(20_001, 4.0, "gamma", 0.25, np.random.default_rng(1)))
    assert bursty.mean() == pytest.approx(0.25, rel=1e-9)
    assert bursty.std() == pytest.approx(0.5, rel=0.08)  # gamma shape k: cv = 1/sqrt(k)
    with pytest.raises(ValueError, match="rate"):
        arrival_offsets_s(3, 0.0, "poisson", 1.0, np.random.default_rng(0))


def run_real(n: int, rate: float, cap: int | None, duration_s: float) -> tuple[list[float], int]:
    """Lags (s) of ``n`` constant arrivals on the real clock, and the most in flight."""
    clock = MonotonicClock()
    lags: list[float] = []
    in_flight = peak = 0

    async def run_one(job: int, sched_ns: int) -> int:
        nonlocal in_flight, peak
        lags.append((clock.now_ns() - sched_ns) / 1e9)
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(duration_s)
        in_flight -= 1
        return job

    offsets = [i / rate for i in range(n)]
    asyncio.run(open_loop(list(range(n)), offsets, cap, run_one, lambda j, r: None, clock))
    return lags, peak


def test_real_clock_sends_on_schedule_while_replies_overlap() -> None:
    lags, peak = run_real(20, 100.0, None, 0.035)
    assert peak >= 3  # slow replies never delay the next send
    assert max(lags) < 0.02 and float(np.median(lags)) < 0.005


def test_max_concurrency_caps_in_flight_and_the_wait_shows_as_lag() -> None:
    lags, peak = run_real(10, 100.0, 2, 0.035)
    assert peak == 2
    assert lags[0] < 0.01
    # two slots serve 57/s against 100/s asked: the 10th request waits ~4 replies
    assert lags[-1] > 0.04 and min(lags[-4:]) > max(lags[:2]) + 0.02  # the wait accumulates


def test_follow_ups_wait_their_think_time_in_the_open_loop() -> None:
    clock = MonotonicClock()
    t0 = time.perf_counter_ns()
    log: list[tuple[tuple[int, int], float, float]] = []

    async def run_one(job: tuple[int, int], sched_ns: int) -> float:
        start = (clock.now_ns() - t0) / 1e9
        await asyncio.sleep(0.01)
        log.append((job, start, (clock.now_ns() - t0) / 1e9))
        return log[-1][2]

    def follow(job: tuple[int, int], end: float) -> tuple[tuple[int, int], float] | None:
        return ((job[0], job[1] + 1), 0.05) if job[1] < 2 else None

    jobs = [(0, 0), (1, 0)]
    asyncio.run(
        open_loop(jobs, [0.0, 0.02], None, run_one, lambda j, r: None, clock, follow=follow)
    )
    by_job = {job: (start, end) for job, start, end in log}
    assert sorted(by_job) == [(s, t) for s in (0, 1) for t in range(3)]
    for s in (0, 1):
        for t in (1, 2):
            assert by_job[(s, t)][0] - by_job[(s, t - 1)][1] >= 0.049


def test_follow_ups_run_in_the_same_closed_loop_worker() -> None:
    clock = FakeClock()
    order: list[tuple[int, int]] = []

    async def run_one(job: tuple[int, int], wait_s: float) -> int:
        order.append(job)
        await asyncio.sleep(0)
        return 0

    def follow(job: tuple[int, int], r: int) -> tuple[tuple[int, int], float] | None:
        return ((job[0], job[1] + 1), 1.5) if job[1] < 1 else None

    asyncio.run(closed_loop([(0, 0), (1, 0)], 1, run_one, lambda j, r: None, clock, follow=follow))
    assert order == [(0, 0), (0, 1), (1, 0), (1, 1)]  # one worker: a whole session, then the next
    assert clock.now_ns() == 3_000_000_000  # two think times on the fake clock


def test_open_loop_refuses_mismatched_schedules() -> None:
    async def run_one(job: int, sched_ns: int) -> int:
        return job

    with pytest.raises(ValueError, match="2 jobs but 1 send times"):
        asyncio.run(open_loop([1, 2], [0.0], None, run_one, lambda j, r: None, FakeClock()))


def test_load_spec_takes_one_kind_of_load() -> None:
    assert LoadSpec(rate=[1, 2, 4]).rates == (1.0, 2.0, 4.0)
    assert LoadSpec(concurrency=[1, 4]).concurrency_levels == (1, 4)
    assert LoadSpec(rate=2, arrival="gamma", burstiness=0.5).open_loop(2.0).burstiness == 0.5
    for bad, message in [
        ({"rate": 1, "concurrency": 2}, "exactly one of"),
        ({"concurrency": 2, "arrival": "gamma"}, "go with load.rate"),
        ({"rate": [1, 1]}, "distinct"),
        ({"rate": 0}, "positive"),
        ({"rate": 1, "burstiness": 0.5}, "arrival: gamma"),
        ({"trace": "t.jsonl", "rate": 1}, "exactly one of"),
    ]:
        with pytest.raises(ValidationError, match=message):
            LoadSpec.model_validate(bad)


def test_bench_rate_sends_on_schedule_through_the_replay_engine(tmp_path: Path) -> None:
    engine = EngineConfig(kind="replay", model=str(STREAMS))
    cfg = BenchConfig.model_validate({
        "engine": engine, "requests": 6, "warmup": 1, "rate": 0.1, "arrival": "constant",
        "slos": ["e2e_s.p90<=100", "decode_tps.p10>=1e6"],
    })  # fmt: skip
    result = run_bench(cfg, tmp_path / "b", seam=make_seam(ReplayLab()))
    rows = read_jsonl(tmp_path / "b" / "requests.jsonl").rows
    warm, trial = rows[0], rows[1:]
    assert warm["phase"] == "warmup" and warm["rate_rps"] is None and warm["lag_s"] is None
    t0 = trial[0]["t_sched_unix_s"]
    assert [round(r["t_sched_unix_s"] - t0, 6) for r in trial] == [0, 10, 20, 30, 40, 50]
    assert all(
        abs(r["lag_s"]) < 1e-6 and r["rate_rps"] == 0.1 and r["concurrency"] == 0 for r in trial
    )
    f = result.summary.open_loop
    assert f is not None and (f.requested_rps, f.n_sent, f.behind) == (0.1, 6, None)
    assert f.achieved_rps == pytest.approx(0.1)
    assert "open_loop" in json.loads((tmp_path / "b" / "summary.json").read_text())
    assert all(r["slo_met"] is False for r in trial)  # no request decodes at 1e6 tok/s
    g = result.summary.goodput
    assert g is not None and (g.n_requests, g.n_good) == (6, 0)
    assert g.holds == {"e2e_s.p90<=100": True, "decode_tps.p10>=1000000": False}


def test_closed_loop_bench_summary_has_no_open_loop_key(tmp_path: Path) -> None:
    cfg = BenchConfig(engine=EngineConfig(kind="replay", model=str(STREAMS)), requests=2)
    run_bench(cfg, tmp_path / "b", seam=make_seam(ReplayLab()))
    assert "open_loop" not in json.loads((tmp_path / "b" / "summary.json").read_text())


def rows_sent(
    lags: list[float], gap_s: float, cap: int = 0, rate: float = 10.0
) -> list[dict[str, object]]:
    return [
        {"phase": "trial", "rate_rps": rate, "concurrency": cap, "t_sched_unix_s": i / rate,
         "t_send_unix_s": i * gap_s + lag, "lag_s": lag}
        for i, lag in enumerate(lags)
    ]  # fmt: skip


def test_open_loop_figures_flag_a_client_behind_or_a_cap() -> None:
    on_time = open_loop_figures(rows_sent([0.001] * 20, 0.1))
    assert on_time is not None and on_time.behind is None
    assert on_time.achieved_rps == pytest.approx(10.0) and on_time.lag_p99_s == pytest.approx(0.001)
    late = open_loop_figures(rows_sent([0.0] * 19 + [0.05], 0.1))
    assert late is not None and late.behind == "client_behind"  # p99 lag over 10 ms
    # at 2 req/s (500 ms gaps) a 20 ms lag is within a tenth of a gap: on schedule
    calm = open_loop_figures(rows_sent([0.0] * 19 + [0.02], 0.5, rate=2.0))
    assert calm is not None and calm.behind is None and calm.lag_max_s == 0.02
    slow = open_loop_figures(rows_sent([0.0] * 20, 0.11))
    assert slow is not None and slow.behind == "client_behind" and "9.09 req/s" in str(slow.detail)
    capped = open_loop_figures(rows_sent([0.0] * 20, 0.11, cap=2))
    assert capped is not None and capped.behind == "cap_limited" and capped.max_concurrency == 2
    assert open_loop_figures([{"phase": "trial", "concurrency": 1}]) is None  # closed loop


def test_bench_config_refuses_mixed_load_options() -> None:
    engine = EngineConfig(kind="replay", model=str(STREAMS))
    for kw, message in [
        ({"rate": 2, "concurrency": 2}, "--max-concurrency"),
        ({"max_concurrency": 2}, "give --rate"),
        ({"arrival": "gamma"}, "give --rate"),
        ({"rate": 2, "burstiness": 0.5}, "--arrival gamma"),
        ({"rate": 0}, "greater than 0"),
    ]:
        with pytest.raises(ValidationError, match=message):
            BenchConfig.model_validate({"engine": engine, **kw})


def test_bench_replays_a_trace_at_its_scaled_times(tmp_path: Path) -> None:
    lines = [{"t_s": t, "prompt": f"Say {t}.", "output_tokens": 4} for t in (0, 3, 4)]
    trace = tmp_path / "t.jsonl"
    trace.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    engine = EngineConfig(kind="replay", model=str(STREAMS))
    cfg = BenchConfig(engine=engine, trace=str(trace), time_scale=2.0, warmup=0)
    run_bench(cfg, tmp_path / "b", seam=make_seam(ReplayLab()))
    rows = read_jsonl(tmp_path / "b" / "requests.jsonl").rows
    t0 = rows[0]["t_sched_unix_s"]
    assert [round(r["t_sched_unix_s"] - t0, 6) for r in rows] == [0, 1.5, 2]
    assert [r["prompt_id"] for r in rows] == ["line-1", "line-2", "line-3"]
    with pytest.raises(ValidationError, match="drop --rate"):
        BenchConfig(engine=engine, trace=str(trace), rate=2.0)
