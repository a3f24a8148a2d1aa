"""Statistics over arrays of metric values: pure numpy/scipy, frozen results, seeded generators.

Owns nothing itself: it re-exports the public API of its modules (block comparisons and
verdicts, levels, rates, sequential stopping, summaries, concurrency sweeps). Must not read
files, keep state or draw random numbers without an explicit generator.
"""

from __future__ import annotations

from servelab.stats.compare import Decision, RatioInterval, Verdict, blocks_needed, decide
from servelab.stats.level import Level, level_interval
from servelab.stats.paired import (
    Cell,
    Pair,
    PairedComparison,
    compare_blocks,
    compare_pairs,
    compare_unpaired,
    decide_paired,
)
from servelab.stats.prompt_effects import PromptEffect
from servelab.stats.proportions import DEFAULT_MARGIN, Rate, RateComparison, compare_rates, wilson
from servelab.stats.sequential import LookPlan, Spending, StopRule, plan_looks, spent, stop_rule
from servelab.stats.summary import Summary, summarize
from servelab.stats.sweep import Request, Sweep, SweepPoint, block_aggregate_tps, sweep

__all__ = [
    "DEFAULT_MARGIN",
    "Cell",
    "Decision",
    "Level",
    "LookPlan",
    "Pair",
    "PairedComparison",
    "PromptEffect",
    "Rate",
    "RateComparison",
    "RatioInterval",
    "Request",
    "Spending",
    "StopRule",
    "Summary",
    "Sweep",
    "SweepPoint",
    "Verdict",
    "block_aggregate_tps",
    "blocks_needed",
    "compare_blocks",
    "compare_pairs",
    "compare_rates",
    "compare_unpaired",
    "decide",
    "decide_paired",
    "level_interval",
    "plan_looks",
    "spent",
    "stop_rule",
    "summarize",
    "sweep",
    "wilson",
]
