"""How well an open loop kept its schedule: achieved against requested rate, and the lag.

Owns ``open_loop_figures``: from the trial rows of an open-loop block (rows with
``t_sched_unix_s``), the requested rate, the rate of the schedule as planned and the rate the
client actually sent at (over arrivals: a conversation's later turns follow their replies, not
the schedule), the lag quantiles (every scheduled send, follow-ups included), and whether the
run fell behind (docs/metrics.md). Pure: rows in, a record out.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Literal

import numpy as np

from servelab.analysis.row_selection import Row, trials
from servelab.store.summary import OpenLoopFigures

LAG_P99_LIMIT_S = 0.010  # p99 lag above this (and above LAG_GAP_SHARE of the mean gap): behind
LAG_GAP_SHARE = 0.1  # at 2 req/s a lag of 20 ms moves no send by a tenth of its gap
Behind = Literal["client_behind", "cap_limited"]
RATE_SHORTFALL = 0.95  # achieved below this share of the scheduled rate: behind


def _rate(times: Sequence[float]) -> float | None:
    span = max(times) - min(times) if len(times) > 1 else 0.0
    return (len(times) - 1) / span if span > 0 else None


def open_loop_figures(rows: Sequence[Row]) -> OpenLoopFigures | None:
    """The open-loop figures of ``rows`` (one block's); None when no row was scheduled."""
    scheduled = [r for r in trials(rows) if r.get("t_sched_unix_s") is not None]
    sent = [r for r in scheduled if not r.get("turn")]  # arrivals: a conversation's first turn
    rates = {float(r["rate_rps"]) for r in sent if r.get("rate_rps") is not None}
    if not sent or len(rates) != 1:
        return None
    lags = np.array([float(r.get("lag_s") or 0.0) for r in scheduled])  # follow-ups too
    caps = {int(r.get("concurrency") or 0) for r in sent}
    cap = max(caps) or None
    figures = OpenLoopFigures(
        requested_rps=rates.pop(),
        scheduled_rps=_rate([float(r["t_sched_unix_s"]) for r in sent]),
        achieved_rps=_rate([float(r["t_send_unix_s"]) for r in sent]),
        n_sent=len(sent), lag_p50_s=float(np.percentile(lags, 50)),
        lag_p99_s=float(np.percentile(lags, 99)), lag_max_s=float(lags.max()),
        max_concurrency=cap,
    )  # fmt: skip
    return _judged(figures)


def _judged(f: OpenLoopFigures) -> OpenLoopFigures:
    """``f`` with ``behind`` and its sentence set when the sends missed the schedule."""
    short = (
        f.achieved_rps is not None and f.scheduled_rps is not None
        and f.achieved_rps < RATE_SHORTFALL * f.scheduled_rps
    )  # fmt: skip
    limit = max(LAG_P99_LIMIT_S, LAG_GAP_SHARE / f.requested_rps)
    late = f.lag_p99_s is not None and f.lag_p99_s > limit
    if not (short or late):
        return f
    rate = f"sent at {f.achieved_rps or 0:.3g} req/s of {f.scheduled_rps or 0:.3g} scheduled"
    lag = f"p99 lag {(f.lag_p99_s or 0) * 1e3:.1f} ms"
    if f.max_concurrency is not None:
        detail = (f"--max-concurrency {f.max_concurrency} held requests back ({rate}, {lag}): "
                  "the engine cannot serve this rate within the cap")  # fmt: skip
        return _with(f, "cap_limited", detail)
    detail = (f"the client fell behind its schedule ({rate}, {lag}); its figures understate "
              "the load: see servelab selftest for this machine's ceiling")  # fmt: skip
    return _with(f, "client_behind", detail)


def _with(f: OpenLoopFigures, behind: Behind, detail: str) -> OpenLoopFigures:
    return dataclasses.replace(f, behind=behind, detail=detail)
