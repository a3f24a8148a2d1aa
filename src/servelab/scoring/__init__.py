"""Quality scorers: tool calls, Chinese script purity, coherence; per row, then per arm.

Owns the public face of the scoring package (docs/quality.md): ``score_row`` scores one
``requests.jsonl`` row, ``score_rows`` a run grouped by arm, ``quality_summary`` turns scored
rows into per-arm rates with Wilson intervals and Fisher-test verdicts between arms, and
``QUALITY_METRICS`` declares every rate's name, direction and population.

Pure: no file I/O, no HTTP, no subprocess, no asyncio (tests/unit/test_layers.py). OpenCC loads
its own dictionaries inside its package on first use.
"""

from servelab.scoring.aggregate import QUALITY_METRICS, QualityMetric, arm_rates, quality_summary
from servelab.scoring.coherence import FLAG_KINDS, CoherenceScore, Flag, score_coherence
from servelab.scoring.records import ArmRates, QualitySummary, RateDifference, RateJson, RowScore
from servelab.scoring.score import SCORER_VERSION, score_row, score_rows
from servelab.scoring.script import TW_ALLOWANCE, ScriptScore, classify, score_script
from servelab.scoring.toolcalls import OUTCOMES, ToolScore, score_tool

__all__ = [
    "FLAG_KINDS",
    "OUTCOMES",
    "QUALITY_METRICS",
    "SCORER_VERSION",
    "TW_ALLOWANCE",
    "ArmRates",
    "CoherenceScore",
    "Flag",
    "QualityMetric",
    "QualitySummary",
    "RateDifference",
    "RateJson",
    "RowScore",
    "ScriptScore",
    "ToolScore",
    "arm_rates",
    "classify",
    "quality_summary",
    "score_coherence",
    "score_row",
    "score_rows",
    "score_script",
    "score_tool",
]
