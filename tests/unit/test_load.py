"""Tests for the closed-loop load driver, with real asyncio sleeps of a few milliseconds.

``run_one`` here is a plain coroutine standing in for the HTTP request (the edge of the
system); ``closed_loop`` itself runs unchanged.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field

import pytest

from servelab.client.clock import FakeClock, MonotonicClock
from servelab.client.load import closed_loop
from servelab.errors import StoreError


@dataclass
class Recorder:
    """Records starts, in-flight counts and deliveries of a closed-loop run."""

    delay_s: dict[int, float] = field(default_factory=dict)
    default_delay_s: float = 0.002
    in_flight: int = 0
    max_in_flight: int = 0
    started: list[int] = field(default_factory=list)
    delivered: list[tuple[int, int]] = field(default_factory=list)
    waits: dict[int, float] = field(default_factory=dict)
    cancelled: list[int] = field(default_factory=list)

    async def run_one(self, job: int, wait_s: float) -> int:
        self.started.append(job)
        self.waits[job] = wait_s
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay_s.get(job, self.default_delay_s))
        except asyncio.CancelledError:
            self.cancelled.append(job)
            raise
        finally:
            self.in_flight -= 1
        return job * 10

    def on_result(self, job: int, result: int) -> None:
        self.delivered.append((job, result))


@pytest.mark.parametrize(("n_jobs", "concurrency"), [(20, 3), (5, 1), (3, 8), (16, 4)])
def test_every_job_runs_once_with_at_most_c_in_flight(n_jobs: int, concurrency: int) -> None:
    rec = Recorder(delay_s={j: 0.001 * (1 + j % 3) for j in range(n_jobs)})
    jobs = list(range(n_jobs))
    asyncio.run(closed_loop(jobs, concurrency, rec.run_one, rec.on_result, MonotonicClock()))
    assert rec.started == jobs  # in order
    assert Counter(rec.started) == Counter(jobs)
    assert sorted(rec.delivered) == [(j, j * 10) for j in jobs]  # each result exactly once
    assert rec.max_in_flight == min(concurrency, n_jobs)  # C in flight, never more
    assert rec.in_flight == 0
    assert all(0 <= w < 1.0 for w in rec.waits.values())


def test_no_jobs_and_bad_concurrency() -> None:
    rec = Recorder()
    asyncio.run(closed_loop([], 4, rec.run_one, rec.on_result, MonotonicClock()))
    assert rec.started == []
    with pytest.raises(ValueError, match="concurrency"):
        asyncio.run(closed_loop([1], 0, rec.run_one, rec.on_result, MonotonicClock()))
    assert rec.started == []


def test_wait_counts_the_time_from_slot_free_to_send() -> None:
    clock = FakeClock()
    waits: list[tuple[int, float]] = []

    async def run_one(job: int, wait_s: float) -> int:
        waits.append((job, wait_s))
        await asyncio.sleep(0.001)
        clock.advance(2.0)  # the request itself: not waiting
        return job

    def on_result(job: int, result: int) -> None:
        clock.advance(0.25)  # writing the row happens after the slot is free: waiting

    asyncio.run(closed_loop([0, 1, 2], 1, run_one, on_result, clock))
    assert waits == [(0, 0.0), (1, 0.25), (2, 0.25)]


def test_should_stop_starts_nothing_new_but_delivers_in_flight() -> None:
    # job 0 ends first; job 1 is still in flight when the stop is requested
    rec = Recorder(delay_s={0: 0.002, 1: 0.030})
    stop = False

    def on_result(job: int, result: int) -> None:
        nonlocal stop
        rec.on_result(job, result)
        stop = True

    asyncio.run(
        closed_loop(
            list(range(10)), 2, rec.run_one, on_result, MonotonicClock(), should_stop=lambda: stop
        )
    )
    assert rec.started == [0, 1]
    assert rec.delivered == [(0, 0), (1, 10)]
    assert rec.cancelled == []


def test_should_stop_before_start_runs_nothing() -> None:
    rec = Recorder()
    asyncio.run(
        closed_loop([1, 2, 3], 2, rec.run_one, rec.on_result, FakeClock(), should_stop=lambda: True)
    )
    assert rec.started == []
    assert rec.delivered == []


def run_with_failing_on_result(rec: Recorder) -> BaseException:
    def on_result(job: int, result: int) -> None:
        rec.on_result(job, result)
        if len(rec.delivered) == 3:
            raise StoreError("cannot write to requests.jsonl: No space left on device")

    try:
        asyncio.run(closed_loop(list(range(20)), 3, rec.run_one, on_result, MonotonicClock()))
    except BaseException as exc:
        return exc
    raise AssertionError("closed_loop did not raise")


def leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in leaves(sub)]
    return [exc]


def test_on_result_exception_propagates_and_stops_the_run() -> None:
    rec = Recorder(default_delay_s=0.003)
    exc = run_with_failing_on_result(rec)
    assert [type(e) for e in leaves(exc)] == [StoreError]
    assert "No space left" in str(leaves(exc)[0])
    assert len(rec.delivered) == 3
    assert len(rec.started) < 20  # the run stopped: no worker went on taking jobs
    assert rec.in_flight == 0  # the other workers' requests were cancelled, not left running
    assert len(rec.cancelled) == len(rec.started) - len(rec.delivered)


def test_on_result_exception_propagates_as_itself() -> None:
    exc = run_with_failing_on_result(Recorder(default_delay_s=0.003))
    assert type(exc) is StoreError
