"""Service-level objectives: ``METRIC.STAT OP BOUND``, per request and over a run.

Owns the SLO grammar, its parsing and the two checks every other part uses: whether one request
met its SLOs (``request_meets``; a row's ``slo_met``) and whether a set of requests held one
(``slo_holds``). Pure: no I/O, numpy only.

Grammar (``parse_slo``): ``ttft_s.p90<=0.3``, ``itl_s.p99<=50ms``, ``decode_tps.p10>=20``.

- ``METRIC``: a request metric of ``servelab.metrics.METRICS`` that has a better direction
  (``ttft_s``, ``e2e_s``, ``itl_s``, ``tpot_s``, ``decode_tps``, ...); the operator must point
  the metric's good way (``<=`` for latencies, ``>=`` for rates).
- ``STAT``: ``pN`` (a percentile, 0 < N < 100, e.g. ``p50``, ``p90``, ``p99``, ``p99.9``; a
  rate's tail is a low percentile such as ``p10``), ``median`` (= ``p50``), ``mean``, ``min`` or
  ``max``. Percentiles use numpy's default linear interpolation, as ``stats.summarize`` does.
- ``BOUND``: a number, with ``s`` or ``ms`` allowed on a metric in seconds.

Meaning. Per request (``request_meets``): the request's own value of a scalar metric (the
statistic says nothing there), or the statistic over its own list for a list metric (``itl_s``:
the request's own p99 gap). A failed request (outcome not ``ok``) meets no SLO. An ok request
with no value for a metric (one output token has no ITL or TPOT; unverified per-chunk token
counts leave ITL out) is not held against that SLO: nothing was measured to violate it.
Latencies count from the request's arrival: in an open loop a request can be sent after its
scheduled time (``lag_s``: held back by ``max_concurrency``, or a late client), and a user
waits through that too, so the SLO value of a metric that starts at the request's wait
(``ttft_s``, ``ttft_content_s``, ``ttft_tool_s``, ``e2e_s``, ``wait_s``) adds the row's
``lag_s`` (``slo_value_of``). Without it a capped sweep would pass its SLOs by quietly sending
fewer requests than the rate it names.
Over a run (``slo_holds``): the statistic over the requests' values (``slo_values``: one value
per request, or every gap pooled for a list metric); a failed request counts as the worst value
(+inf for ``<=``, -inf for ``>=``), so failures can never make a run look better.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
from pydantic import AfterValidator

from servelab.metrics import METRIC_BY_NAME

SloOp = Literal["<=", ">="]

_SLO = re.compile(
    r"^\s*(?P<metric>[A-Za-z_][A-Za-z0-9_]*)\.(?P<stat>[A-Za-z0-9.]+?)\s*"
    r"(?P<op><=|>=)\s*(?P<num>[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)\s*(?P<unit>ms|s)?\s*$"
)
_PCT = re.compile(r"^p(?P<q>\d+(?:\.\d+)?)$")
_NAMED = ("mean", "median", "min", "max")
_UNITS = {"s": 1.0, "ms": 1e-3}
LIST_METRICS = frozenset({"itl_s"})  # a row holds a list of values per request
FROM_ARRIVAL = frozenset({"ttft_s", "ttft_content_s", "ttft_tool_s", "e2e_s", "wait_s"})
EXAMPLE = "ttft_s.p90<=0.3"


@dataclass(frozen=True, slots=True)
class Slo:
    """One objective: ``statistic`` of ``metric`` ``op`` ``bound`` (in the metric's unit)."""

    metric: str  # a row metric: ttft_s, itl_s, tpot_s, e2e_s, decode_tps, ...
    statistic: str  # pN (0 < N < 100), median, mean, min or max
    op: SloOp
    bound: float

    @property
    def text(self) -> str:
        """The canonical text; ``parse_slo(slo.text) == slo``."""
        return f"{self.metric}.{self.statistic}{self.op}{_number(self.bound)}"

    @property
    def lower_is_better(self) -> bool:
        return self.op == "<="

    def met_by(self, value: float) -> bool:
        return value <= self.bound if self.op == "<=" else value >= self.bound


def _number(x: float) -> str:
    text = repr(float(x))
    return text[:-2] if text.endswith(".0") else text


def quantile_of(statistic: str) -> float | None:
    """The quantile (0-1) a statistic names, or None for ``mean``; raises ValueError if unknown."""
    if statistic in ("median", "min", "max"):
        return {"median": 0.5, "min": 0.0, "max": 1.0}[statistic]
    if statistic == "mean":
        return None
    m = _PCT.match(statistic)
    q = float(m.group("q")) if m else -1.0
    if not 0 < q < 100:
        raise ValueError(
            f"unknown SLO statistic {statistic!r}; use pN (0<N<100, e.g. p90), "
            f"{', '.join(_NAMED)} (e.g. {EXAMPLE})"
        )
    return q / 100


def parse_slo(text: str) -> Slo:
    """Parse ``METRIC.STAT OP BOUND``; raises ValueError with a one-line message naming the fix."""
    m = _SLO.match(text)
    if not m:
        raise ValueError(f"SLO {text!r} is not METRIC.STAT<=BOUND or >=BOUND; e.g. {EXAMPLE}")
    metric, stat, op = m.group("metric"), m.group("stat"), m.group("op")
    known = METRIC_BY_NAME.get(metric)
    if known is None or known.lower_is_better is None:
        usable = sorted(k for k, d in METRIC_BY_NAME.items() if d.lower_is_better is not None)
        raise ValueError(f"SLO {text!r}: unknown metric {metric!r}; use one of {', '.join(usable)}")
    quantile_of(stat)
    want = "<=" if known.lower_is_better else ">="
    if op != want:
        better = "lower" if want == "<=" else "higher"
        raise ValueError(f"SLO {text!r}: {metric} is better {better}; write {want}")
    unit = m.group("unit")
    if unit is not None and known.unit != "s":
        raise ValueError(f"SLO {text!r}: {metric} is in {known.unit}; drop the unit {unit!r}")
    bound = float(m.group("num")) * _UNITS[unit or "s"]
    if not math.isfinite(bound):
        raise ValueError(f"SLO {text!r}: the bound must be a finite number")
    return Slo(metric, stat, "<=" if op == "<=" else ">=", bound)


def parse_slos(texts: Iterable[str]) -> tuple[Slo, ...]:
    """Parse several SLOs; the same text twice is an error (it would be counted twice)."""
    slos = tuple(parse_slo(t) for t in texts)
    seen = [s.text for s in slos]
    dupes = sorted({t for t in seen if seen.count(t) > 1})
    if dupes:
        raise ValueError(f"SLO {dupes[0]!r} is given twice; give each SLO once")
    return slos


def _checked(texts: tuple[str, ...]) -> tuple[str, ...]:
    parse_slos(texts)
    return texts


SloTexts = Annotated[tuple[str, ...], AfterValidator(_checked)]
"""A spec's or bench's SLO texts, as written, each checked by ``parse_slos`` on input."""


def statistic(stat: str, values: Sequence[float]) -> float | None:
    """``stat`` over ``values`` (None when empty). Infinite values (failed requests) sort to
    their end and never produce NaN: a quantile between two infinities is that infinity."""
    if len(values) == 0:
        return None
    arr = np.sort(np.asarray(values, dtype=float))
    q = quantile_of(stat)
    if q is None:
        return float(arr.mean()) if np.isfinite(arr).all() else float(_inf_mean(arr))
    h = (arr.size - 1) * q
    lo = math.floor(h)
    hi = min(lo + 1, arr.size - 1)
    a, b = float(arr[lo]), float(arr[hi])
    frac = h - lo
    return a if frac == 0 or a == b else a + frac * (b - a)


def _inf_mean(arr: np.ndarray[tuple[int], np.dtype[np.float64]]) -> float:
    has_pos, has_neg = bool((arr == math.inf).any()), bool((arr == -math.inf).any())
    return math.nan if has_pos and has_neg else (math.inf if has_pos else -math.inf)


def _ok(row: Mapping[str, object]) -> bool:
    return row.get("outcome") == "ok"


def _number_or_none(v: object) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return float(v) if math.isfinite(v) else None


def _floats(v: object) -> list[float]:
    if not isinstance(v, list | tuple):
        return []
    return [x for x in (_number_or_none(item) for item in v) if x is not None]


def slo_value_of(metric: str, row: Mapping[str, object]) -> float | None:
    """A scalar metric of a row as an SLO sees it: latencies from the scheduled arrival
    (``+ lag_s`` in an open loop, see the module docstring)."""
    value = _number_or_none(row.get(metric))
    if value is None or metric not in FROM_ARRIVAL:
        return value
    return value + max(_number_or_none(row.get("lag_s")) or 0.0, 0.0)


def request_value(slo: Slo, row: Mapping[str, object]) -> float | None:
    """The request's own value for ``slo`` (None: not measured; failed requests included)."""
    if slo.metric in LIST_METRICS:
        return statistic(slo.statistic, _floats(row.get(slo.metric)))
    return slo_value_of(slo.metric, row)


def request_meets(slos: Sequence[Slo], row: Mapping[str, object]) -> bool | None:
    """Whether one request row met every SLO: None without SLOs, False when it failed."""
    if not slos:
        return None
    if not _ok(row):
        return False
    return all(slo_met_by(slo, row) for slo in slos)


def slo_met_by(slo: Slo, row: Mapping[str, object]) -> bool:
    """One SLO on one request row: failed -> False; ok but not measured -> True (see module)."""
    if not _ok(row):
        return False
    value = request_value(slo, row)
    return value is None or slo.met_by(value)


def slo_values(slo: Slo, rows: Iterable[Mapping[str, object]]) -> list[float]:
    """The values ``slo_holds`` takes over a run: one per ok request that measured it (every gap
    for a list metric), and the worst value (+-inf) for each failed request."""
    worst = math.inf if slo.op == "<=" else -math.inf
    out: list[float] = []
    for row in rows:
        if not _ok(row):
            out.append(worst)
        elif slo.metric in LIST_METRICS:
            out.extend(_floats(row.get(slo.metric)))
        elif (v := slo_value_of(slo.metric, row)) is not None:
            out.append(v)
    return out


def slo_holds(slo: Slo, values: Sequence[float]) -> bool:
    """Whether the run-level statistic over ``values`` meets the bound; False with no values
    (nothing shows it holds). ``values`` may hold +-inf for failed requests (``slo_values``)."""
    stat = statistic(slo.statistic, values)
    return stat is not None and not math.isnan(stat) and slo.met_by(stat)
