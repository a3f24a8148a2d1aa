"""Gates: thresholds an arm must meet, written as one-line rules in the experiment spec.

Owns the rule grammar and its parsing. Pure. A rule is ``METRIC[.STAT] OP THRESHOLD``:

- ``METRIC``: a request metric (``decode_tps``, ``ttft_s``, ...), a quality rate
  (``tool_accuracy``, ``false_fire_rate``, ...), ``error_rate``, ``ppl``, ``kld`` or ``kv_bytes``;
- ``STAT`` (request metrics): ``pooled`` (rates in tok/s only: Σ tokens / Σ time), ``mean``,
  ``median``, ``p90`` or ``p99``. Without it the rule uses the metric's default decision
  statistic, the one the comparisons decide on unless the spec's ``metrics`` says otherwise:
  ``pooled`` for rates (what a workload costs), ``mean`` for latencies (total time per request).
  A gate and a verdict on the same metric then speak about the same number, and a rule means
  the same thing in every run (roles apply one rule to runs of different specs);
- ``OP``: ``>=`` or ``<=``;
- ``THRESHOLD``: a number with an optional unit (``ms``, ``s``, ``%``, ``KiB``, ``MiB``,
  ``GiB``), or relative to the baseline arm: ``baseline``, ``baseline * 1.02``,
  ``baseline - 2pp``, ``baseline + 5pp``.

Examples: ``decode_tps >= 70``, ``ttft_s.p90 <= 300ms``, ``decode_tps.median >= 70``,
``e2e_tps >= baseline * 0.95``, ``kv_bytes <= 512MiB``, ``ppl <= baseline * 1.02``,
``tool_accuracy >= baseline - 0pp``, ``false_fire_rate <= baseline``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from servelab.metrics import METRIC_BY_NAME

_RULE = re.compile(
    r"^\s*(?P<metric>[a-z][a-z0-9_]*)(?:\.(?P<stat>pooled|median|mean|p90|p99))?\s*"
    r"(?P<op><=|>=)\s*(?P<rhs>.+?)\s*$"
)
_ABS = re.compile(r"^(?P<num>[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)\s*(?P<unit>ms|s|%|KiB|MiB|GiB)?$")
_REL = re.compile(r"^baseline(?:\s*(?P<op>[*x+-])\s*(?P<num>\d+(?:\.\d+)?)\s*(?P<unit>pp|%)?)?$")
_UNITS = {None: 1.0, "s": 1.0, "ms": 1e-3, "%": 0.01, "KiB": 2.0**10, "MiB": 2.0**20,
          "GiB": 2.0**30}  # fmt: skip


Stat = Literal["pooled", "mean", "median", "p90", "p99"]


@dataclass(frozen=True, slots=True)
class Rule:
    text: str
    metric: str
    stat: Stat | None  # None: the metric's default decision statistic (analysis/gate_outcomes.py)
    op: Literal["<=", ">="]
    relative: bool
    value: float  # the absolute threshold, or the factor / offset applied to the baseline
    combine: Literal["abs", "times", "plus"]


def parse_rule(text: str) -> Rule:
    m = _RULE.match(text)
    if not m:
        raise ValueError(
            f"gate {text!r}: write METRIC[.STAT] >= or <= THRESHOLD, e.g. 'decode_tps >= 70' "
            "or 'ppl <= baseline * 1.02'"
        )
    stat = m.group("stat")
    if stat == "pooled":
        _check_pooled(text, m.group("metric"))
    op = m.group("op")
    rhs = m.group("rhs")
    if a := _ABS.match(rhs):
        value = float(a.group("num")) * _UNITS[a.group("unit")]
        return Rule(text, m.group("metric"), stat, op, False, value, "abs")  # type: ignore[arg-type]
    if r := _REL.match(rhs):
        if r.group("op") is None:
            return Rule(text, m.group("metric"), stat, op, True, 0.0, "plus")  # type: ignore[arg-type]
        num = float(r.group("num"))
        if r.group("op") in "*x":
            if r.group("unit"):
                raise ValueError(f"gate {text!r}: a factor takes no unit ('baseline * 1.02')")
            return Rule(text, m.group("metric"), stat, op, True, num, "times")  # type: ignore[arg-type]
        scale = 0.01 if r.group("unit") in ("pp", "%") else 1.0
        sign = -1.0 if r.group("op") == "-" else 1.0
        return Rule(text, m.group("metric"), stat, op, True, sign * num * scale, "plus")  # type: ignore[arg-type]
    raise ValueError(
        f"gate {text!r}: cannot read the threshold {rhs!r}; use a number with an optional unit "
        "(ms, s, %, KiB, MiB, GiB) or 'baseline', 'baseline * F', 'baseline - Npp'"
    )


def _check_pooled(text: str, metric: str) -> None:
    """``pooled`` (Σ tokens / Σ time) exists for rates only: a latency has no tokens to pool."""
    unit = METRIC_BY_NAME[metric].unit if metric in METRIC_BY_NAME else None
    if unit == "tok/s":
        return
    kind = "a latency" if unit == "s" else "not a rate in tok/s"
    raise ValueError(
        f"gate {text!r}: .pooled (Σ tokens / Σ time) is for rates in tok/s and {metric} is "
        f"{kind}; use .mean, .median, .p90 or .p99"
    )


def gate_metrics() -> set[str]:
    """Every name a gate may hold to a threshold."""
    from servelab.scoring import QUALITY_METRICS

    numeric = {m for m, d in METRIC_BY_NAME.items() if d.lower_is_better is not None}
    return numeric | {q.name for q in QUALITY_METRICS} | {"error_rate", "ppl", "kld", "kv_bytes"}


class GatesSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rules: tuple[str, ...] = Field(default=(), description="one rule per line (spec/gates.py)")
    require: tuple[str, ...] = Field(
        default=(), description="arms that must pass besides the baseline (run exits 7 if not)"
    )

    @field_validator("rules")
    @classmethod
    def _rules(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        known = gate_metrics()
        for text in v:
            rule = parse_rule(text)
            if rule.metric not in known:
                raise ValueError(
                    f"gate {text!r}: unknown metric {rule.metric!r}; known: "
                    + ", ".join(sorted(known))
                )
        return v

    def parsed(self) -> list[Rule]:
        return [parse_rule(t) for t in self.rules]
