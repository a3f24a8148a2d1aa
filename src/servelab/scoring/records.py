"""The JSON records scoring writes: one reply's score and an arm's quality summary.

Owns the shapes of ``quality/scores.jsonl`` lines (``RowScore``) and of summary.json's
``quality`` section (``QualitySummary``), as TypedDicts: each scorer returns plain JSON-able
dicts that are written as they are, and these types say exactly which keys they hold
(docs/quality.md). Pure: types only.
"""

from __future__ import annotations

from typing import NotRequired, TypedDict

from servelab.scoring.coherence import CoherenceScore
from servelab.scoring.script import ScriptScore
from servelab.scoring.toolcalls import ToolScore
from servelab.stats.compare import Verdict


class RowScore(TypedDict):
    """One successful trial reply scored: tool always, script for Chinese, coherence always."""

    scorer_version: int
    prompt_id: object  # as the row holds it (a string; None in a row without one)
    tool: ToolScore
    script: NotRequired[ScriptScore]
    coherence: CoherenceScore


class RateJson(TypedDict):
    """k of n with its Wilson interval (``stats.proportions.Rate`` as JSON)."""

    k: int
    n: int
    p: float | None
    ci_low: float | None
    ci_high: float | None


class ArmRates(TypedDict):
    """One arm's rates per quality metric and the counts behind them."""

    n_rows: int
    rates: dict[str, RateJson]
    tool_outcomes: dict[str, int]
    script_classes: dict[str, int]
    flag_counts: dict[str, int]


class RateDifference(TypedDict):
    """A candidate arm's rate against the baseline's: Fisher's test and the verdict."""

    difference: float | None
    diff_ci_low: float | None
    diff_ci_high: float | None
    p_value: float | None
    verdict: Verdict


class MetricJson(TypedDict):
    """A ``QualityMetric`` declaration as JSON."""

    name: str
    higher_is_better: bool
    population: str
    summary: str


class QualitySummary(TypedDict):
    """Per-arm quality rates and each other arm's comparison with the baseline."""

    confidence: float
    baseline: str
    metrics: list[MetricJson]
    arms: dict[str, ArmRates]
    comparisons: dict[str, dict[str, RateDifference]]
