"""Sequential looks and the stopping record: may the run stop, and why did it end where it did.

Owns ``look`` (the look the runner takes after each round: comparisons over the rounds so far
at the per-look confidence level of the look plan, and the stopping rule applied to them),
its ``StopDecision``, and the ``Stopping`` record of the summary. Pure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from servelab.analysis.comparisons import comparisons
from servelab.analysis.row_selection import Row, block_of, in_order
from servelab.analysis.settings import (
    DEFAULT_RESAMPLES,
    ManifestLike,
    RunFacts,
    Settings,
    settings,
)
from servelab.stats.sequential import StopRule, stop_rule
from servelab.store.summary import Comparison, Stopping


@dataclass(frozen=True, slots=True)
class StopDecision:
    """The outcome of one sequential look (see ``look``)."""

    stop: bool  # the run may stop now
    decided: bool  # every comparison is better, worse or no_difference
    reason: str
    after_block: int
    n_rounds: int
    confidence_level: float  # the per-look level the intervals used
    comparisons: tuple[Comparison, ...]

    def as_look(self) -> dict[str, int | bool | str]:
        """The entry for the manifest's ``looks``."""
        return {"after_block": self.after_block, "decided": self.decided, "reason": self.reason}


def stop_rule_for(cfg: Settings, comps: Sequence[Comparison], n_rounds: int) -> StopRule:
    return stop_rule(
        [c.verdict for c in comps],
        [c.ci_width for c in comps],
        n_rounds=n_rounds,
        plan=cfg.plan(),
        target_ci_width=cfg.target_ci_width,
    )


def look(
    manifest: ManifestLike,
    rows: Sequence[Row],
    after_block: int,
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
) -> StopDecision:
    """The sequential look after round ``after_block`` (0-based) completed.

    Uses only rows of blocks up to ``after_block`` and the confidence level the look plan
    assigns to ``after_block + 1`` rounds, so that the final summary of a run that stopped here
    gives the same verdicts.
    """
    cfg = settings(manifest, rows)
    seen = [r for r in in_order(rows) if block_of(r) <= after_block]
    rounds = after_block + 1
    level = cfg.plan().confidence_at(rounds)
    comps = comparisons(cfg, seen, confidence=level, n_resamples=n_resamples)
    rule = stop_rule_for(cfg, comps, rounds)
    return StopDecision(rule.stop, rule.decided, rule.reason, after_block, rounds, level,
                        tuple(comps))  # fmt: skip


def stopping(
    cfg: Settings, facts: RunFacts, comps: Sequence[Comparison], n_rounds: int, level: float
) -> Stopping:
    """The summary's stopping record: the rule in words and why the run ended."""
    plan = cfg.plan()
    sequential = len(plan.looks) > 1
    rule = (
        f"sequential: a look after every round from {plan.looks[0]} to {plan.looks[-1]} "
        f"blocks, {plan.spending} alpha spending (alpha {plan.alpha:g}); stop when every "
        "comparison is decided"
        + (f" or every CI is narrower than {cfg.target_ci_width:g}" if cfg.target_ci_width else "")
        if sequential
        else "fixed size: one analysis at the end"
    )
    reason = facts.last_look_reason if facts.n_looks else stop_rule_for(cfg, comps, n_rounds).reason
    return Stopping(
        rule=rule, sequential=sequential, spending=plan.spending if sequential else None,
        alpha=plan.alpha, min_blocks=plan.looks[0] if sequential else None,
        max_blocks=plan.looks[-1] if sequential else None,
        target_ci_width=cfg.target_ci_width, looks=facts.n_looks, n_rounds=n_rounds,
        confidence_level=level, stopped_early=facts.status == "stopped_early", reason=reason,
    )  # fmt: skip
