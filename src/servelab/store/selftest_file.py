"""The last result of ``servelab selftest``, kept in the cache directory.

Owns ``cache_dir()/selftest/last.json``: its path, its atomic write and a tolerant read, plus
``SavedCeiling``, the part of it a report compares a run with (the client's ceiling on the
machine it was measured on). The file's content is the selftest's JSON (docs/selftest.md,
``schema_version`` 1), written from the typed records below (``SelftestResult.to_json``);
what the selftest measures is ``runner.selftest``'s business.
Must not: run anything, or fail a report because the file is missing or damaged.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import JsonValue, TypeAdapter, ValidationError

from servelab.paths import cache_dir, write_json_atomic

SELFTEST_SCHEMA_VERSION = 1


def selftest_path() -> Path:
    return cache_dir() / "selftest" / "last.json"


def write_selftest(result: SelftestResult | Mapping[str, object]) -> Path:
    """Save ``result`` (without its comparison); a mapping is written as it is (JSON already)."""
    path = selftest_path()
    write_json_atomic(
        path, result.to_json(with_previous=False) if isinstance(result, SelftestResult) else result
    )
    return path


def read_selftest() -> dict[str, JsonValue] | None:
    """The saved result, or None when there is none or it cannot be read."""
    try:
        data = json.loads(selftest_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None  # JSON boundary: the file as parsed


@dataclass(frozen=True, slots=True)
class SavedCeiling:
    """The client's ceiling from a saved selftest: aggregate tokens/s at ``streams``."""

    tokens_per_s: float
    streams: int
    created_unix_s: float
    cpu_count: int | None

    @classmethod
    def from_result(cls, result: Mapping[str, object] | None) -> SavedCeiling | None:
        """None for a missing result, another schema, or one that found no ceiling."""
        # JSON boundary: the saved file as parsed, any content
        if not result or result.get("schema_version") != SELFTEST_SCHEMA_VERSION:
            return None
        ceiling, host = _obj(result.get("ceiling")), _obj(result.get("host"))
        rate, streams = ceiling.get("tokens_per_s"), ceiling.get("streams")
        if not isinstance(rate, int | float) or not isinstance(streams, int) or rate <= 0:
            return None
        cpus = host.get("cpu_count")
        return cls(
            float(rate),
            streams,
            _num(result.get("created_unix_s")) or 0.0,
            cpus if isinstance(cpus, int) else None,
        )

    def fits_this_host(self) -> bool:
        """Measured on a machine with as many CPUs as this one (a cache dir can be shared)."""
        return self.cpu_count is None or self.cpu_count == os.cpu_count()


def saved_ceiling() -> SavedCeiling | None:
    return SavedCeiling.from_result(read_selftest())


# ------------------------------------------------------------------------------ the records

JsonObject = dict[str, JsonValue]


def _num(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _obj(value: object) -> Mapping[str, object]:
    return value if isinstance(value, Mapping) else {}


def _json(value: object) -> JsonValue:
    """A value parsed from JSON, as pydantic's ``JsonValue`` (None for anything else)."""
    try:
        return _JSON.validate_python(value)
    except ValidationError:
        return None


_JSON: TypeAdapter[JsonValue] = TypeAdapter(JsonValue)


@dataclass(frozen=True, slots=True)
class ErrorStats:
    """Median, p99 and maximum of a set of errors, in milliseconds (None without values)."""

    p50: float | None = None
    p99: float | None = None
    max: float | None = None

    def to_json(self) -> dict[str, float | None]:
        return {"p50": self.p50, "p99": self.p99, "max": self.max}

    @classmethod
    def from_json(cls, data: object) -> ErrorStats:
        d = _obj(data)
        return cls(_num(d.get("p50")), _num(d.get("p99")), _num(d.get("max")))


@dataclass(frozen=True, slots=True)
class TimingError:
    """The client's errors over a set of probes: first chunk, gaps, every chunk."""

    ttft_ms: ErrorStats
    itl_ms: ErrorStats
    arrival_ms: ErrorStats

    def to_json(self) -> JsonObject:
        return {
            "ttft_ms": dict(self.ttft_ms.to_json()),
            "itl_ms": dict(self.itl_ms.to_json()),
            "arrival_ms": dict(self.arrival_ms.to_json()),
        }


@dataclass(frozen=True, slots=True)
class ProfileErrors:
    """One accuracy probe (an engine profile): what it sent and the client's errors."""

    streams: int
    requests: int
    matched: int
    exact_send_stamps: int
    errors: TimingError
    server_lag_ms: ErrorStats

    def to_json(self) -> JsonObject:
        return {
            "streams": self.streams,
            "requests": self.requests,
            "matched": self.matched,
            "exact_send_stamps": self.exact_send_stamps,
            **self.errors.to_json(),
            "server_lag_ms": dict(self.server_lag_ms.to_json()),
        }


@dataclass(frozen=True, slots=True)
class Step:
    """One ramp step's figures and whether the client kept up."""

    streams: int
    requests: int
    tokens: int
    wall_s: float
    tokens_per_s: float
    cpu_cores: float
    cpu_ms_per_token: float | None
    loop_lag_p99_ms: float | None
    arrival_ms: ErrorStats
    itl_ms: ErrorStats
    server_lag_ms: ErrorStats
    kept_up: bool
    why_not: str | None
    server_behind: bool

    def to_json(self) -> JsonObject:
        return {
            "streams": self.streams,
            "requests": self.requests,
            "tokens": self.tokens,
            "wall_s": self.wall_s,
            "tokens_per_s": self.tokens_per_s,
            "cpu_cores": self.cpu_cores,
            "cpu_ms_per_token": self.cpu_ms_per_token,
            "loop_lag_p99_ms": self.loop_lag_p99_ms,
            "arrival_ms": dict(self.arrival_ms.to_json()),
            "itl_ms": dict(self.itl_ms.to_json()),
            "server_lag_ms": dict(self.server_lag_ms.to_json()),
            "kept_up": self.kept_up,
            "why_not": self.why_not,
            "server_behind": self.server_behind,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> Step:
        """Tolerant: a missing or mistyped figure reads as zero, None or False."""
        streams, requests, tokens = data.get("streams"), data.get("requests"), data.get("tokens")
        why = data.get("why_not")
        return cls(
            streams if isinstance(streams, int) else 0,
            requests if isinstance(requests, int) else 0,
            tokens if isinstance(tokens, int) else 0,
            _num(data.get("wall_s")) or 0.0,
            _num(data.get("tokens_per_s")) or 0.0,
            _num(data.get("cpu_cores")) or 0.0,
            _num(data.get("cpu_ms_per_token")),
            _num(data.get("loop_lag_p99_ms")),
            ErrorStats.from_json(data.get("arrival_ms")),
            ErrorStats.from_json(data.get("itl_ms")),
            ErrorStats.from_json(data.get("server_lag_ms")),
            data.get("kept_up") is True,
            why if isinstance(why, str) else None,
            data.get("server_behind") is True,
        )


@dataclass(frozen=True, slots=True)
class Ceiling:
    """The last step that kept up (None throughout when none did), and what stopped the ramp."""

    tokens_per_s: float | None
    streams: int | None
    cpu_ms_per_token: float | None
    limited_by: str

    def to_json(self) -> JsonObject:
        return {
            "tokens_per_s": self.tokens_per_s,
            "streams": self.streams,
            "cpu_ms_per_token": self.cpu_ms_per_token,
            "limited_by": self.limited_by,
        }

    @classmethod
    def of(cls, steps: Sequence[Step]) -> Ceiling:
        held = [s for s in steps if s.kept_up]
        broke = next((s for s in steps if not s.kept_up), None)
        best = held[-1] if held else None
        if broke:
            n = broke.streams
            limit = f"{n} stream{'' if n == 1 else 's'}: {broke.why_not}"
        else:
            limit = "not reached: the largest step kept up"
        behind = next((s for s in steps if s.server_behind), None)
        if behind:
            limit += (
                f"; the mock server fell behind its schedule from {behind.streams} streams "
                "(it shares this machine's CPUs), so the client may go further"
            )
        if best is None:
            return cls(None, None, None, limit)
        return cls(best.tokens_per_s, best.streams, best.cpu_ms_per_token, limit)

    @classmethod
    def from_json(cls, data: object) -> Ceiling | None:
        """Tolerant: None for anything but an object."""
        if not isinstance(data, Mapping):
            return None
        streams, limit = data.get("streams"), data.get("limited_by")
        return cls(
            _num(data.get("tokens_per_s")),
            streams if isinstance(streams, int) else None,
            _num(data.get("cpu_ms_per_token")),
            limit if isinstance(limit, str) else "",
        )


@dataclass(frozen=True, slots=True)
class SelftestHost:
    cpu_count: int | None
    machine: str
    python: str
    system: str
    load_avg_1m: float

    def to_json(self) -> JsonObject:
        return {
            "cpu_count": self.cpu_count,
            "machine": self.machine,
            "python": self.python,
            "system": self.system,
            "load_avg_1m": self.load_avg_1m,
        }


@dataclass(frozen=True, slots=True)
class Bounds:
    """The bounds a ramp step is held to (``error_p99_ms_used``: after ``error_bound``)."""

    error_p99_ms: float
    cpu_cores: float
    error_p99_ms_used: float

    def to_json(self) -> JsonObject:
        return {
            "error_p99_ms": self.error_p99_ms,
            "cpu_cores": self.cpu_cores,
            "error_p99_ms_used": self.error_p99_ms_used,
        }


@dataclass(frozen=True, slots=True)
class PreviousSelftest:
    """The saved run this one can be compared with (its ceiling and p99 errors)."""

    created_unix_s: float | None
    quick: bool | None
    saved_ceiling: JsonValue  # JSON boundary: the saved file's ceiling, passed on as it was
    ttft_p99_ms: float | None
    itl_p99_ms: float | None

    @property
    def ceiling(self) -> Ceiling | None:
        return Ceiling.from_json(self.saved_ceiling)

    def to_json(self) -> JsonObject:
        return {
            "created_unix_s": self.created_unix_s,
            "quick": self.quick,
            "ceiling": self.saved_ceiling,
            "ttft_p99_ms": self.ttft_p99_ms,
            "itl_p99_ms": self.itl_p99_ms,
        }

    @classmethod
    def from_json(cls, saved: Mapping[str, object] | None) -> PreviousSelftest | None:
        """Tolerant: None for no saved result or another schema."""
        if not saved or saved.get("schema_version") != SELFTEST_SCHEMA_VERSION:
            return None
        err, quick = _obj(saved.get("timing_error")), saved.get("quick")
        return cls(
            _num(saved.get("created_unix_s")),
            quick if isinstance(quick, bool) else None,
            _json(saved.get("ceiling")),
            ErrorStats.from_json(err.get("ttft_ms")).p99,
            ErrorStats.from_json(err.get("itl_ms")).p99,
        )


@dataclass(frozen=True, slots=True)
class SelftestResult:
    """What ``servelab selftest`` measured: the JSON of docs/selftest.md via ``to_json``."""

    servelab_version: str
    created_unix_s: float
    quick: bool
    host: SelftestHost
    bounds: Bounds
    timing_error: TimingError
    server_lag_ms: ErrorStats
    profiles: dict[str, ProfileErrors]
    ceiling: Ceiling
    steps: tuple[Step, ...]
    previous: PreviousSelftest | None = None

    def to_json(self, *, with_previous: bool = True) -> JsonObject:
        """``with_previous=False``: the form saved in the cache (no comparison in it)."""
        data: JsonObject = {
            "schema_version": SELFTEST_SCHEMA_VERSION,
            "servelab_version": self.servelab_version,
            "created_unix_s": self.created_unix_s,
            "quick": self.quick,
            "host": self.host.to_json(),
            "bounds": self.bounds.to_json(),
            "timing_error": self.timing_error.to_json(),
            "server_lag_ms": dict(self.server_lag_ms.to_json()),
            "profiles": {name: p.to_json() for name, p in self.profiles.items()},
            "ceiling": self.ceiling.to_json(),
            "steps": [s.to_json() for s in self.steps],
        }
        if with_previous:
            data["previous"] = None if self.previous is None else self.previous.to_json()
        return data
