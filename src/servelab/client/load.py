"""Load shapes: closed loop (C requests in flight) and open loop (requests sent on a schedule).

Owns concurrency and arrival timing. Results are handed to ``on_result`` the moment they
complete (the caller writes and flushes them); if ``on_result`` raises, every request in
flight is cancelled and the error propagates.

- ``closed_loop``: each of C workers takes the next job as soon as its previous request ends;
  the time from the slot becoming free to the send is the request's ``wait_s`` and counts in
  its latency, so a slow client cannot hide its own delay.
- ``open_loop``: job *i* is due at ``offsets_s[i]`` after the start, whatever the server does.
  The loop sleeps until each due time (no busy wait) and starts a task per request, so a slow
  reply never delays the next send. ``max_concurrency`` caps requests in flight: a request
  waiting for a slot keeps its scheduled time, so the wait shows as lag, never disappears.
  ``run_one(job, sched_ns)`` learns its scheduled time (the clock's ns) and takes the actual
  send time itself, so lag = send - schedule is measured where the send happens.
- ``follow``: after a result, the next job of the same session and its think time (None: the
  session ended). In the closed loop the worker runs the whole session; in the open loop a
  follow-up is scheduled at the previous turn's end plus its think time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from servelab.client.clock import Clock, FakeClock

J = TypeVar("J")
R = TypeVar("R")

Follow = Callable[[J, R], tuple[J, float] | None]
SleepUntil = Callable[[int], Awaitable[None]]
_EARLY_NS = 200_000  # a wake-up this close to the due time counts as on time (timer jitter)


def sleeper(clock: Clock, idle: Callable[[], Awaitable[object]] | None = None) -> SleepUntil:
    """How to wait for ``clock`` to reach a time: real sleeps, or jump a ``FakeClock``.

    One fake clock cannot run two requests at once (each advances it as it is served), so
    before a jump ``idle()`` lets the requests in flight finish: on a fake clock an open loop's
    sends do not overlap, and a request whose predecessor outlasted the gap shows as lag."""
    if isinstance(clock, FakeClock):
        fake = clock

        async def jump(t_ns: int) -> None:
            await asyncio.sleep(0)  # what is due now starts now, before the clock moves on
            if idle is not None:
                await idle()
            fake.t_ns = max(fake.t_ns, t_ns)
            await asyncio.sleep(0)

        return jump

    async def sleep_until(t_ns: int) -> None:
        while (remaining := t_ns - clock.now_ns()) > _EARLY_NS:
            await asyncio.sleep(remaining / 1e9)

    return sleep_until


async def closed_loop(
    jobs: Sequence[J],
    concurrency: int,
    run_one: Callable[[J, float], Awaitable[R]],
    on_result: Callable[[J, R], None],
    clock: Clock,
    should_stop: Callable[[], bool] = lambda: False,
    follow: Follow[J, R] | None = None,
) -> None:
    """Run ``run_one(job, wait_s)`` for every job (and its session's follow-ups) with
    ``concurrency`` in flight.

    Jobs start in order. Once ``should_stop()`` is true no new job starts, but requests in
    flight finish and are handed over, so nothing already sent is lost.
    """
    if concurrency < 1:
        raise ValueError("concurrency must be >= 1")
    queue: asyncio.Queue[J] = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)
    sleep_until = sleeper(clock)

    async def session(job: J | None, free_ns: int) -> int:
        while job is not None and not should_stop():
            result = await run_one(job, (clock.now_ns() - free_ns) / 1e9)
            free_ns = clock.now_ns()  # the slot is free now; recording it counts as waiting
            on_result(job, result)
            nxt = follow(job, result) if follow is not None else None
            job = None
            if nxt is not None:
                job, think_s = nxt
                await sleep_until(clock.now_ns() + round(think_s * 1e9))
                free_ns = clock.now_ns()
        return free_ns

    async def worker() -> None:
        free_ns = clock.now_ns()
        while not should_stop():
            try:
                job = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            free_ns = await session(job, free_ns)

    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(min(concurrency, len(jobs))):
                group.create_task(worker())
    except* Exception as group_error:
        # Callers catch servelab's own errors by type: hand them the first one, not a group.
        raise group_error.exceptions[0] from None


async def open_loop(
    jobs: Sequence[J],
    offsets_s: Sequence[float],
    max_concurrency: int | None,
    run_one: Callable[[J, int], Awaitable[R]],
    on_result: Callable[[J, R], None],
    clock: Clock,
    should_stop: Callable[[], bool] = lambda: False,
    follow: Follow[J, R] | None = None,
) -> None:
    """Send job *i* at ``offsets_s[i]`` seconds after the start: ``run_one(job, sched_ns)``.

    At most ``max_concurrency`` requests are in flight (None: no cap). Once ``should_stop()``
    is true nothing new is sent; requests in flight finish and are handed over.
    """
    if len(offsets_s) != len(jobs):
        raise ValueError(f"{len(jobs)} jobs but {len(offsets_s)} send times")
    if max_concurrency is not None and max_concurrency < 1:
        raise ValueError("max_concurrency must be >= 1")
    slots = asyncio.Semaphore(max_concurrency) if max_concurrency else None
    sends: set[asyncio.Task[None]] = set()

    async def idle() -> None:
        if sends:
            await asyncio.wait(sends)

    sleep_until, sleep_within = sleeper(clock, idle), sleeper(clock)
    start_ns = clock.now_ns()

    async def send(job: J, sched_ns: int, group: asyncio.TaskGroup) -> None:
        async with slots if slots is not None else contextlib.nullcontext():
            if should_stop():
                return
            result = await run_one(job, sched_ns)
        on_result(job, result)
        nxt = follow(job, result) if follow is not None else None
        if nxt is not None:
            group.create_task(later(nxt[0], clock.now_ns() + round(nxt[1] * 1e9), group))

    async def later(job: J, sched_ns: int, group: asyncio.TaskGroup) -> None:
        await sleep_within(sched_ns)
        if not should_stop():
            await send(job, sched_ns, group)

    try:
        async with asyncio.TaskGroup() as group:
            for job, offset in zip(jobs, offsets_s, strict=True):
                sched_ns = start_ns + round(offset * 1e9)
                await sleep_until(sched_ns)
                if should_stop():
                    break
                task = group.create_task(send(job, sched_ns, group))
                sends.add(task)
                task.add_done_callback(sends.discard)
    except* Exception as group_error:
        # Callers catch servelab's own errors by type: hand them the first one, not a group.
        raise group_error.exceptions[0] from None
