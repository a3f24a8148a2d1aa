"""The pure parts of distributed load generation (no cluster here; the integration test runs a
real one): how the concurrency and the jobs are split over workers, the NTP-style clock offset
from round trips, the conversion of a worker's send times to the driver's clock, the merged
client load, the URL a worker on another machine reaches, and what ``bench`` refuses."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from servelab.errors import UsageError
from servelab.records import ClientLoad
from servelab.runner.distributed.load import (
    ClockOffset,
    estimate_offset,
    job_owners,
    merged_load,
    reachable,
    split_concurrency,
)
from servelab.runner.drive import Sent
from servelab.spec.bench import BenchConfig
from servelab.spec.engine import EngineConfig
from servelab.store import LoadWorkerRecord, Manifest


def test_the_concurrency_is_dealt_over_the_workers_and_too_little_is_refused() -> None:
    assert split_concurrency(4, 2) == (2, 2)
    assert split_concurrency(5, 2) == (3, 2)
    assert split_concurrency(7, 3) == (3, 2, 2)
    with pytest.raises(UsageError, match="--concurrency 1 is less than --workers 2"):
        split_concurrency(1, 2)
    with pytest.raises(UsageError, match="--max-concurrency 2 is less than --workers 3"):
        split_concurrency(2, 3, "--max-concurrency")


@given(total=st.integers(1, 64), workers=st.integers(1, 8), jobs=st.integers(0, 200))
def test_each_worker_gets_jobs_in_proportion_to_its_slots(total: int, workers: int,
                                                          jobs: int) -> None:  # fmt: skip
    if total < workers:
        return
    slots = split_concurrency(total, workers)
    assert sum(slots) == total and max(slots) - min(slots) <= 1
    owners = job_owners(jobs, workers, total)
    assert len(owners) == jobs  # every job once
    for w in range(workers):  # over whole cycles of C jobs, worker w sends exactly its slots
        assert owners[: total * (jobs // total)].count(w) == slots[w] * (jobs // total)


def test_the_open_loop_deals_the_schedule_round_robin() -> None:
    assert job_owners(5, 2) == (0, 1, 0, 1, 0)
    assert job_owners(4, 3) == (0, 1, 2, 0)
    assert job_owners(6, 2, 3) == (0, 1, 0, 0, 1, 0)  # closed loop, slots (2, 1)


def test_the_offset_comes_from_the_shortest_round_trip() -> None:
    # the worker's clock runs 2.0 s ahead; the replies take different paths back
    samples = [
        (100.000, 102.010, 100.030),  # slow trip: midpoint 100.015, worker said 102.010
        (101.000, 103.0005, 101.001),  # fast trip: midpoint 101.0005
        (102.000, 104.004, 102.020),
    ]
    est = estimate_offset(samples)
    assert est.rtt_s == pytest.approx(0.001)
    assert est.offset_s == pytest.approx(2.0, abs=est.rtt_s / 2)
    with pytest.raises(ValueError, match="no round trips"):
        estimate_offset([])


@given(offset=st.floats(-5, 5), there=st.floats(0, 0.01), back=st.floats(0, 0.01))
def test_the_error_is_at_most_half_the_round_trip(offset: float, there: float,
                                                  back: float) -> None:  # fmt: skip
    t0 = 1_000.0
    worker = t0 + there + offset  # read on arrival, on the worker's clock
    est = estimate_offset([(t0, worker, t0 + there + back)])
    assert abs(est.offset_s - offset) <= est.rtt_s / 2 + 1e-9


def test_send_times_are_converted_to_the_drivers_clock_and_lag_kept() -> None:
    off = ClockOffset(offset_s=0.25, rtt_s=0.001)
    sent = off.to_driver(Sent(10.30, 10.25))
    assert sent.unix_s == pytest.approx(10.05) and sent.sched_unix_s == pytest.approx(10.0)
    assert sent.lag_s == pytest.approx(0.05)
    assert off.to_driver(Sent(5.0)).sched_unix_s is None


def test_the_clients_load_is_merged_over_workers() -> None:
    a = ClientLoad(2.0, 0.5, 0.1, 0.002, 0.01, 3)
    b = ClientLoad(2.5, 0.4, 0.2, None, None, 2)
    m = merged_load([a, b])
    assert m is not None
    assert (m.wall_s, m.cpu_s, m.loop_lag_p99_s, m.streams_max, m.processes) == (
        2.5, pytest.approx(1.2), 0.002, 5, 2,
    )  # fmt: skip
    assert merged_load([]) is None


def test_a_worker_on_another_machine_reaches_the_engine_only_when_it_listens_there() -> None:
    url = "http://127.0.0.1:8080/v1/chat/completions"
    assert reachable(url, "127.0.0.1", None) == url  # every worker on the driver's machine
    assert reachable(url, "0.0.0.0", "10.0.0.5") == "http://10.0.0.5:8080/v1/chat/completions"
    assert (
        reachable("http://10.0.0.9:8000/v1", "127.0.0.1", "10.0.0.5") == "http://10.0.0.9:8000/v1"
    )
    with pytest.raises(UsageError, match=r"--bind 0\.0\.0\.0"):
        reachable(url, "127.0.0.1", "10.0.0.5")


def test_bench_refuses_what_a_split_cannot_do() -> None:
    engine = EngineConfig(model="m.gguf")
    ok = BenchConfig(engine=engine, ray="local:2", workers=2, concurrency=2)
    assert ok.ray == "local:2" and ok.workers == 2
    for kw, fix in (
        ({"workers": 2}, "give --ray too"),
        ({"ray": "local:2", "blocks": 2}, "drop --blocks"),
        ({"ray": "local:2", "workers": 2, "concurrency": 1}, "less than --workers 2"),
        ({"ray": "local:2", "workers": 3, "rate": 1.0, "max_concurrency": 2},
         "--max-concurrency 2 is less than --workers 3"),
    ):  # fmt: skip
        with pytest.raises(ValidationError, match=fix):
            BenchConfig(engine=engine, **kw)  # type: ignore[arg-type]


def test_the_manifest_records_the_workers_and_old_manifests_stay_as_they_were() -> None:
    rec = LoadWorkerRecord(node_id="abc", ip="127.0.0.1", offset_s=1e-4, rtt_s=8e-4,
                           offset_after_s=7e-5, rtt_after_s=1e-3, requests=4)  # fmt: skip
    m = Manifest(kind="bench").model_copy(update={"load_workers": {"n0": rec}})
    data = m.to_json()
    assert data["load_workers"] == {"n0": {
        "node_id": "abc", "ip": "127.0.0.1", "offset_s": 1e-4, "rtt_s": 8e-4,
        "offset_after_s": 7e-5, "rtt_after_s": 1e-3, "requests": 4,
    }}  # fmt: skip
    assert Manifest.from_json(data).load_workers == {"n0": rec}
    assert "load_workers" not in Manifest(kind="bench").to_json()
