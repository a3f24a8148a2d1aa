"""The load a run puts on an engine: closed-loop concurrency or open-loop arrivals. Pure.

Owns the experiment spec's ``load:`` section (``LoadSpec``: concurrency levels, request rates with
their arrival process, or a trace to replay) and the seeded arrival schedule of an open-loop
block (``arrival_offsets_s``). Arrivals follow vLLM's ``bench serve``: gaps drawn from a gamma
distribution of shape ``burstiness`` and mean ``1 / rate`` (burstiness 1 is a Poisson process;
below 1 burstier, above 1 more regular); ``constant`` sends exactly every ``1 / rate`` seconds.
The first request goes at 0. Unlike vLLM, the drawn gaps are then scaled by one common factor
so their mean is exactly ``1 / rate``: a block offers the rate it names (40 Poisson arrivals at
2/s would otherwise offer anywhere from about 1.5 to 2.5/s, seed 0: 1.73), and keeps the
irregularity (the gaps' spread relative to their mean) of its arrival process.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Arrival = Literal["poisson", "constant", "gamma"]
ARRIVALS: tuple[Arrival, ...] = ("poisson", "constant", "gamma")


def arrival_offsets_s(
    n: int, rate_rps: float, arrival: Arrival, burstiness: float, rng: np.random.Generator
) -> np.ndarray:
    """``n`` send times in seconds from the start (the first at 0) with mean gap ``1/rate``."""
    if n < 0 or not (math.isfinite(rate_rps) and rate_rps > 0):
        raise ValueError(f"arrivals need n >= 0 and a positive finite rate, got {n}, {rate_rps}")
    if n == 0:
        return np.zeros(0)
    if arrival == "constant":
        gaps = np.full(n - 1, 1.0 / rate_rps)
    else:
        shape = 1.0 if arrival == "poisson" else burstiness
        if not (math.isfinite(shape) and shape > 0):
            raise ValueError(f"burstiness must be positive, got {burstiness}")
        gaps = rng.gamma(shape, 1.0 / (rate_rps * shape), size=n - 1)
        gaps *= 1.0 / (rate_rps * gaps.mean())  # the block offers exactly the requested rate
    return np.concatenate(([0.0], np.cumsum(gaps)))


@functools.total_ordering
@dataclass(frozen=True, slots=True)
class LoadLevel:
    """A block's load level: a closed-loop concurrency, or an open-loop rate (with the
    concurrency its rows record: the cap, 0 for none). Closed levels sort first, by concurrency;
    open levels by rate. ``str``: ``4`` (closed, as summaries always wrote it) or ``2 req/s``."""

    concurrency: int
    rate_rps: float | None = None

    def _order(self) -> tuple[bool, float, int]:
        return self.rate_rps is not None, self.rate_rps or 0.0, self.concurrency

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, LoadLevel):
            return NotImplemented
        return self._order() < other._order()

    def __str__(self) -> str:
        return str(self.concurrency) if self.rate_rps is None else f"{self.rate_rps:g} req/s"

    @property
    def key(self) -> str:
        """Its key in ``summary.json`` (``by_concurrency``): ``4`` or ``r2``."""
        return str(self.concurrency) if self.rate_rps is None else f"r{self.rate_rps:g}"

    @property
    def label(self) -> str:
        """For people: ``c=4`` or ``2 req/s``."""
        return f"c={self.concurrency}" if self.rate_rps is None else f"{self.rate_rps:g} req/s"


@dataclass(frozen=True, slots=True)
class OpenLoop:
    """One open-loop level as a block runs it."""

    rate_rps: float
    arrival: Arrival = "poisson"
    burstiness: float = 1.0
    max_concurrency: int | None = None  # None: no cap on requests in flight

    def offsets(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return arrival_offsets_s(n, self.rate_rps, self.arrival, self.burstiness, rng)


def _positive_list(v: object, name: str, kind: type[float]) -> object:
    values: list[Any] = v if isinstance(v, list) else [v]
    ok = all(
        isinstance(x, kind) and not isinstance(x, bool) and x > 0 and math.isfinite(x)
        for x in values
    )
    if not values or not ok or len(set(values)) != len(values):
        raise ValueError(f"{name} must be a positive number or a list of distinct ones")
    return v


def _as_float(x: object) -> object:
    return float(x) if isinstance(x, int) and not isinstance(x, bool) else x


class LoadSpec(BaseModel):
    """The spec's ``load:`` section: exactly one of ``concurrency``, ``rate`` or ``trace``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    concurrency: int | list[int] | None = None
    rate: float | list[float] | None = None
    arrival: Arrival = "poisson"
    burstiness: float = Field(default=1.0, gt=0)
    max_concurrency: int | None = Field(default=None, ge=1)
    trace: str | None = None
    time_scale: float = Field(default=1.0, gt=0)

    @field_validator("concurrency")
    @classmethod
    def _concurrency(cls, v: int | list[int] | None) -> int | list[int] | None:
        if v is not None:
            _positive_list(v, "load.concurrency", int)
        return v

    @field_validator("rate", mode="before")
    @classmethod
    def _rate(cls, v: object) -> object:
        if v is None:
            return v
        values = [_as_float(x) for x in v] if isinstance(v, list) else _as_float(v)
        return _positive_list(values, "load.rate", float)

    @model_validator(mode="after")
    def _one_kind(self) -> LoadSpec:
        given = [k for k in ("concurrency", "rate", "trace") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "load needs exactly one of concurrency, rate or trace"
                + (f" (got {', '.join(given)})" if given else "")
            )
        open_only = ("arrival", "burstiness", "max_concurrency")
        if self.rate is None and any(k in self.model_fields_set for k in open_only):
            raise ValueError("load.arrival, burstiness and max_concurrency go with load.rate")
        if self.trace is None and "time_scale" in self.model_fields_set:
            raise ValueError("load.time_scale goes with load.trace")
        if self.burstiness != 1.0 and self.arrival != "gamma":
            raise ValueError("load.burstiness needs arrival: gamma")
        return self

    @property
    def concurrency_levels(self) -> tuple[int, ...]:
        c = self.concurrency
        return () if c is None else (c,) if isinstance(c, int) else tuple(c)

    @property
    def rates(self) -> tuple[float, ...]:
        r = self.rate
        return () if r is None else (r,) if isinstance(r, float) else tuple(r)

    def open_loop(self, rate_rps: float) -> OpenLoop:
        return OpenLoop(rate_rps, self.arrival, self.burstiness, self.max_concurrency)
