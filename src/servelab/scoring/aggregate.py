"""Per-arm quality rates and between-arm verdicts, from rows already scored one by one.

Owns the quality metric declarations (``QUALITY_METRICS``: name, direction, population) and
``quality_summary``: for every arm each rate as k of n with its Wilson interval, the outcome,
script-class and flag counts behind it, and for every other arm the comparison with the
baseline through ``stats.proportions.compare_rates`` (Fisher's exact test), in the verdict
vocabulary of the speed metrics. Only successful trial rows (phase ``trial``, outcome ``ok``)
count; warm-ups and failed requests have no quality.

Pure: no I/O. Must not score rows itself (``score`` does that) nor render anything.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from servelab.scoring.coherence import FLAG_KINDS
from servelab.scoring.records import (
    ArmRates,
    MetricJson,
    QualitySummary,
    RateDifference,
    RateJson,
    RowScore,
)
from servelab.scoring.script import ScriptScore
from servelab.scoring.toolcalls import ToolScore
from servelab.stats.proportions import DEFAULT_MARGIN, Rate, compare_rates, wilson

Score = RowScore
Scored = tuple[Mapping[str, Any], RowScore]  # a stored row and its score
_READS_TRADITIONAL = ("traditional", "neutral")  # no Simplified character after the allowance


@dataclass(frozen=True, slots=True)
class QualityMetric:
    """One quality rate: which scored rows it counts (``population``) and which are hits."""

    name: str
    higher_is_better: bool
    population: str
    summary: str


def _tool(score: Score) -> ToolScore:
    return score["tool"]


def _script(score: Score) -> ScriptScore | None:
    return score.get("script")


def _flags(score: Score) -> list[str]:
    return [f["kind"] for f in score["coherence"]["flags"]]


def _targets_traditional(score: Score) -> bool:
    script = _script(score)
    return script is not None and script["target"] == _TRAD_TARGET


def _script_class(score: Score) -> str | None:
    script = _script(score)
    return script["class"] if script is not None else None


def _class_after_s2t(score: Score) -> str | None:
    script = _script(score)
    return script["after_s2t"]["class"] if script is not None else None


_TOOL_EXPECTED = ("correct", "wrong_args", "wrong_tool", "missed", "malformed")
_NO_TOOL = ("false_fire", "correct_no_call")
_TRAD_TARGET = "traditional"

# name -> (in population, is a hit)
_Rule = tuple[Callable[[Score], bool], Callable[[Score], bool]]
_RULES: dict[str, _Rule] = {
    "tool_accuracy": (
        lambda s: _tool(s)["outcome"] in _TOOL_EXPECTED,
        lambda s: _tool(s)["outcome"] == "correct",
    ),
    "false_fire_rate": (
        lambda s: _tool(s)["outcome"] in _NO_TOOL,
        lambda s: _tool(s)["outcome"] == "false_fire",
    ),
    "args_valid_rate": (
        lambda s: _tool(s)["args_valid"] is not None,
        lambda s: _tool(s)["args_valid"] is True,
    ),
    "malformed_rate": (
        lambda s: _tool(s)["outcome"] != "not_applicable",
        lambda s: bool(_tool(s)["malformed"]),
    ),
    "traditional_rate": (
        _targets_traditional,
        lambda s: _script_class(s) in _READS_TRADITIONAL,
    ),
    "mixed_rate": (_targets_traditional, lambda s: _script_class(s) == "mixed"),
    "simplified_rate": (_targets_traditional, lambda s: _script_class(s) == "simplified"),
    "traditional_rate_after_s2t": (
        _targets_traditional,
        lambda s: _class_after_s2t(s) in _READS_TRADITIONAL,
    ),
    "coherence_flag_rate": (lambda s: "coherence" in s, lambda s: bool(_flags(s))),
}


def _has_flag(kind: str) -> Callable[[Score], bool]:
    return lambda s: kind in _flags(s)


_RULES |= {
    f"flag_{kind}_rate": (lambda s: "coherence" in s, _has_flag(kind)) for kind in FLAG_KINDS
}

QUALITY_METRICS: tuple[QualityMetric, ...] = (
    QualityMetric(
        "tool_accuracy",
        True,
        "prompts expecting a tool",
        "expected tool, schema-valid arguments, every argument expectation holds",
    ),
    QualityMetric(
        "false_fire_rate",
        False,
        "prompts offered tools but expecting none",
        "a tool was called (or tool-call text leaked)",
    ),
    QualityMetric(
        "args_valid_rate",
        True,
        "rows with a well-formed call to a known tool",
        "arguments validate against the tool's JSON Schema",
    ),
    QualityMetric(
        "malformed_rate",
        False,
        "rows with a tool expectation",
        "arguments not JSON, unknown tool, or tool-call text in content",
    ),
    QualityMetric(
        "traditional_rate",
        True,
        "prompts asking for Traditional Chinese",
        "reply has Han characters and none Simplified (class traditional or neutral)",
    ),
    QualityMetric(
        "mixed_rate",
        False,
        "prompts asking for Traditional Chinese",
        "Traditional and Simplified characters in one reply",
    ),
    QualityMetric(
        "simplified_rate",
        False,
        "prompts asking for Traditional Chinese",
        "Simplified characters only",
    ),
    QualityMetric(
        "traditional_rate_after_s2t",
        True,
        "prompts asking for Traditional Chinese",
        "traditional_rate after an OpenCC s2tw conversion of the reply",
    ),
    QualityMetric("coherence_flag_rate", False, "all scored rows", "at least one coherence flag"),
    *(
        QualityMetric(f"flag_{kind}_rate", False, "all scored rows", f"flagged {kind}")
        for kind in FLAG_KINDS
    ),
)


def counts_ok(row: Mapping[str, Any]) -> bool:
    """True for the rows quality rates count: successful trial requests."""
    return row.get("phase") == "trial" and row.get("outcome") == "ok"


class ArmTally:
    """One arm's quality counts, kept as scores arrive (a million scores need no list)."""

    def __init__(self) -> None:
        self.n_rows = 0
        self.members: Counter[str] = Counter()
        self.hits: Counter[str] = Counter()
        self.tool_outcomes: Counter[str] = Counter()
        self.script_classes: Counter[str] = Counter()
        self.flags: Counter[str] = Counter()

    def add(self, score: Score) -> None:
        """Count one successful trial row's score."""
        self.n_rows += 1
        for metric in QUALITY_METRICS:
            population, hit = _RULES[metric.name]
            if population(score):
                self.members[metric.name] += 1
                self.hits[metric.name] += hit(score)
        self.flags.update(_flags(score))
        self.tool_outcomes[str(_tool(score)["outcome"])] += 1
        script_class = _script_class(score)
        if script_class is not None:
            self.script_classes[script_class] += 1

    def rates(self, confidence: float = 0.95) -> ArmRates:
        """The arm's rates (k, n, p and Wilson interval per metric) and the counts behind them."""
        rates = {
            m.name: _rate_json(wilson(self.hits[m.name], self.members[m.name], confidence))
            for m in QUALITY_METRICS
        }
        return {
            "n_rows": self.n_rows,
            "rates": rates,
            "tool_outcomes": dict(self.tool_outcomes),
            "script_classes": dict(self.script_classes),
            "flag_counts": {kind: self.flags[kind] for kind in FLAG_KINDS},
        }


def _rate_json(rate: Rate) -> RateJson:
    return {"k": rate.k, "n": rate.n, "p": rate.p, "ci_low": rate.ci_low, "ci_high": rate.ci_high}


def _metric_json(m: QualityMetric) -> MetricJson:
    return {
        "name": m.name,
        "higher_is_better": m.higher_is_better,
        "population": m.population,
        "summary": m.summary,
    }


def arm_rates(scored: Iterable[Scored], confidence: float = 0.95) -> ArmRates:
    """One arm's rates (k, n, p and Wilson interval per metric) and the counts behind them."""
    tally = ArmTally()
    for row, score in scored:
        if counts_ok(row):
            tally.add(score)
    return tally.rates(confidence)


def quality_summary(
    rows_with_scores_by_arm: Mapping[str, Iterable[Scored]],
    baseline: str,
    confidence: float = 0.95,
    *,
    margin: float = DEFAULT_MARGIN,
) -> QualitySummary:
    """Per-arm quality rates and each other arm's comparison with ``baseline``.

    ``rows_with_scores_by_arm`` maps an arm to its ``(row, score)`` pairs (``score`` as from
    ``score_row``); rows that are not successful trials are skipped here. Comparisons use
    Fisher's exact test at 1 - ``confidence``; ``no_difference`` needs the difference's
    interval inside +-``margin``.
    """
    arms = {arm: arm_rates(s, confidence) for arm, s in rows_with_scores_by_arm.items()}
    return summary_of_rates(arms, baseline, confidence, margin=margin)


def summary_of_rates(
    arms: Mapping[str, ArmRates],
    baseline: str,
    confidence: float = 0.95,
    *,
    margin: float = DEFAULT_MARGIN,
) -> QualitySummary:
    """``quality_summary`` from each arm's ``arm_rates`` (or ``ArmTally.rates``) result."""
    if baseline not in arms:
        known = ", ".join(arms) or "none"
        raise ValueError(f"baseline arm '{baseline}' has no rows (arms: {known})")
    comparisons = {
        arm: _compare(arms[baseline]["rates"], summary["rates"], confidence, margin)
        for arm, summary in arms.items()
        if arm != baseline
    }
    return {
        "confidence": confidence,
        "baseline": baseline,
        "metrics": [_metric_json(m) for m in QUALITY_METRICS],
        "arms": dict(arms),
        "comparisons": comparisons,
    }


def _compare(
    base: Mapping[str, RateJson], cand: Mapping[str, RateJson], confidence: float, margin: float
) -> dict[str, RateDifference]:
    out: dict[str, RateDifference] = {}
    for metric in QUALITY_METRICS:
        b, c = base[metric.name], cand[metric.name]
        result = compare_rates(
            b["k"],
            b["n"],
            c["k"],
            c["n"],
            lower_is_better=not metric.higher_is_better,
            confidence=confidence,
            margin=margin,
        )
        out[metric.name] = {
            "difference": result.difference,
            "diff_ci_low": result.diff_ci_low,
            "diff_ci_high": result.diff_ci_high,
            "p_value": result.p_value,
            "verdict": result.verdict,
        }
    return out
