"""Quality beside speed: per-arm quality rates and each candidate's exact test, as a record.

Owns the summary's ``quality`` section: from the per-arm tallies of scored replies
(``scoring.aggregate.ArmTally``, filled by the caller as it scores and stores each reply), the
rates with their Wilson intervals and the between-arm comparisons (``summary_of_rates``), the
notes on how the replies were scored, and the perplexity results ``servelab quality ppl`` wrote
(read by the caller). Pure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from servelab.scoring.aggregate import ArmTally, summary_of_rates
from servelab.store.perplexity import PerplexityDoc
from servelab.store.summary import QualitySection

QUALITY_CONFIDENCE = 0.95


def quality_section(
    tallies: Mapping[str, ArmTally],
    baseline: str | None,
    notes: Sequence[str] = (),
    ppl: PerplexityDoc | None = None,
) -> QualitySection:
    """Rates per arm and comparisons with ``baseline`` (first arm scored when None); only the
    notes (and ``ppl``) when nothing was scored or the baseline has no scored reply."""
    base = baseline or next(iter(tallies), "")
    content: dict[str, object] = {"notes": list(notes)}
    if tallies and base in tallies:
        rates = {arm: t.rates(QUALITY_CONFIDENCE) for arm, t in tallies.items()}
        content.update(summary_of_rates(rates, base, QUALITY_CONFIDENCE))
    return replace(QualitySection.from_json(content), ppl=ppl)
