"""Closed-loop load: keep exactly C requests in flight until the job list is done.

Owns concurrency. Each of C workers takes the next job as soon as its previous request ends; the
time from the slot becoming free to the send is the request's ``wait_s`` and counts in its
latency, so a slow client cannot hide its own delay. Results are handed to ``on_result`` the
moment they complete (the caller writes and flushes them).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from servelab.client.clock import Clock

J = TypeVar("J")
R = TypeVar("R")


async def closed_loop(
    jobs: Sequence[J],
    concurrency: int,
    run_one: Callable[[J, float], Awaitable[R]],
    on_result: Callable[[J, R], None],
    clock: Clock,
    should_stop: Callable[[], bool] = lambda: False,
) -> None:
    """Run ``run_one(job, wait_s)`` for every job with ``concurrency`` in flight.

    Jobs start in order. Once ``should_stop()`` is true no new job starts, but requests in
    flight finish and are handed over, so nothing already sent is lost. If ``on_result``
    raises (for example the store cannot write), every worker is cancelled and the error
    propagates.
    """
    if concurrency < 1:
        raise ValueError("concurrency must be >= 1")
    queue: asyncio.Queue[J] = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)

    async def worker() -> None:
        free_ns = clock.now_ns()
        while not should_stop():
            try:
                job = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            wait_s = (clock.now_ns() - free_ns) / 1e9
            result = await run_one(job, wait_s)
            free_ns = clock.now_ns()  # the slot is free now; recording it counts as waiting
            on_result(job, result)

    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(min(concurrency, len(jobs))):
                group.create_task(worker())
    except* Exception as group_error:
        # Callers catch servelab's own errors by type: hand them the first one, not a group.
        raise group_error.exceptions[0] from None
