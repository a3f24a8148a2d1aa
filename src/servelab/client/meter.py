"""What driving a block costs the client itself: CPU time, event-loop lag, streams in flight.

Owns ``ClientMeter``, which a runner wraps around a block's load (``with ClientMeter(clock) as
meter: ...; load = meter.result(session.streams_max)``). CPU is the process's user and system
time from ``resource.getrusage`` over the block (all its threads; worker processes' own
figures are added with ``add_process``). Loop lag is sampled by a timer callback (not a task)
that re-arms itself every ``interval_s`` and records how late it ran: a loop busy parsing or
starved of CPU runs it late, and that lateness is what every timestamp taken on the loop can be
off by. Every 25 ms: a wake-up of an idle loop costs about 60 us of CPU on the 2-core
development machine, so a 10 ms sampler would take 0.6 % of a core from the engine it measures
and a 25 ms one takes 0.24 %.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import resource
from types import TracebackType

from servelab.client.clock import Clock
from servelab.records import ClientLoad

LAG_INTERVAL_S = 0.025


def _cpu() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def _p99(values: list[float]) -> float | None:
    if not values:
        return None
    ranked = sorted(values)
    return ranked[min(len(ranked) - 1, math.ceil(0.99 * len(ranked)) - 1)]


class ClientMeter:
    """Measures the client over a block; enter it on the event loop that drives the requests
    (outside one it measures CPU only, and the lag figures are ``None``)."""

    def __init__(self, clock: Clock, interval_s: float = LAG_INTERVAL_S) -> None:
        self.clock = clock
        self.interval_s = interval_s
        self.lags_s: list[float] = []
        self.extra_user_s = 0.0
        self.extra_sys_s = 0.0
        self.processes = 1
        self._timer: asyncio.TimerHandle | None = None
        self._due = 0.0
        self._t0_ns = self._t1_ns = 0
        self._cpu0 = self._cpu1 = (0.0, 0.0)

    def __enter__(self) -> ClientMeter:
        self._t0_ns = self.clock.now_ns()
        self._cpu0 = _cpu()
        with contextlib.suppress(RuntimeError):  # no running loop: CPU only
            self._tick(asyncio.get_running_loop(), first=True)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        """End the block (idempotent)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._t1_ns:
            self._t1_ns = self.clock.now_ns()
            self._cpu1 = _cpu()

    def add_process(self, user_s: float, sys_s: float) -> None:
        """Count a worker process's own CPU time over the block."""
        self.extra_user_s += user_s
        self.extra_sys_s += sys_s
        self.processes += 1

    def _tick(self, loop: asyncio.AbstractEventLoop, first: bool = False) -> None:
        """A plain timer callback, not a task: the cheapest thing the loop can run late."""
        now = loop.time()
        if not first:
            self.lags_s.append(max(0.0, now - self._due))
        self._due = now + self.interval_s
        self._timer = loop.call_at(self._due, self._tick, loop)

    def result(self, streams_max: int) -> ClientLoad:
        """The block's figures; stops the meter if it still runs."""
        self.stop()
        return ClientLoad(
            wall_s=(self._t1_ns - self._t0_ns) / 1e9,
            cpu_user_s=self._cpu1[0] - self._cpu0[0] + self.extra_user_s,
            cpu_sys_s=self._cpu1[1] - self._cpu0[1] + self.extra_sys_s,
            loop_lag_p99_s=_p99(self.lags_s),
            loop_lag_max_s=max(self.lags_s) if self.lags_s else None,
            streams_max=streams_max,
            processes=self.processes,
        )
