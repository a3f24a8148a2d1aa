"""The monotonic clock every interval in servelab is measured with, and the run's wall anchor.

Owns time: ``MonotonicClock`` (``time.perf_counter_ns``) for intervals and one wall-clock
anchor taken with it, so a monotonic reading can be placed on the calendar. Tests inject a
``FakeClock``. Nothing else in servelab reads a clock for an interval.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol


class Clock(Protocol):
    def now_ns(self) -> int: ...


class MonotonicClock:
    """``time.perf_counter_ns``: monotonic, the highest resolution the platform has."""

    def now_ns(self) -> int:
        return time.perf_counter_ns()


@dataclass
class FakeClock:
    """A clock that moves only when told to; for tests."""

    t_ns: int = 0

    def now_ns(self) -> int:
        return self.t_ns

    def advance(self, seconds: float) -> None:
        self.t_ns += round(seconds * 1e9)


@dataclass(frozen=True, slots=True)
class WallAnchor:
    """One pairing of the wall clock and the monotonic clock, taken at the start of a run."""

    wall_unix_s: float
    monotonic_ns: int

    @classmethod
    def take(cls, clock: Clock) -> WallAnchor:
        return cls(wall_unix_s=time.time(), monotonic_ns=clock.now_ns())

    def to_unix_s(self, monotonic_ns: int) -> float:
        return self.wall_unix_s + (monotonic_ns - self.monotonic_ns) / 1e9
