"""What the analysis reads from a manifest, with defaults for imports and older runs.

``settings(manifest, rows)`` gives the arms (baseline first), decision metrics, confidence,
smallest effect, stopping rule and seed that ``servelab.report.analyze`` and
``servelab.report.warnings`` work from; the defaults are the ones docs/statistics.md names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from servelab.report.rows import Row
from servelab.stats.sequential import LookPlan, plan_looks

DEFAULT_DECISION_METRICS = ("decode_tps", "ttft_s", "e2e_s")
DEFAULT_MIN_EFFECT = 0.03
DEFAULT_CONFIDENCE = 0.95
DEFAULT_RESAMPLES = 2000


@dataclass(frozen=True, slots=True)
class Settings:
    """What the analysis needs from a manifest, with defaults for imports and older runs."""

    kind: str
    run_id: str
    arms: tuple[str, ...]  # baseline first
    decision_metrics: tuple[str, ...]
    interleaved: bool
    confidence: float
    min_effect: float
    min_blocks: int
    max_blocks: int | None
    target_ci_width: float | None
    seed: int
    length_matched: bool

    @property
    def baseline(self) -> str:
        return self.arms[0]

    def plan(self) -> LookPlan:
        """The look plan; a fixed-size run (or an import) has one look at the full level."""
        alpha = round(1 - self.confidence, 12)
        if not self.interleaved or self.max_blocks is None or self.max_blocks <= self.min_blocks:
            return plan_looks(1, 1, alpha=alpha)
        return plan_looks(self.min_blocks, self.max_blocks, alpha=alpha)


def _get(mapping: Mapping[str, Any] | None, *keys: str) -> Any:
    for key in keys:
        if mapping and mapping.get(key) is not None:
            return mapping[key]
    return None


def settings(manifest: Mapping[str, Any], rows: Sequence[Row] = ()) -> Settings:
    spec = manifest.get("spec") or {}
    stop = manifest.get("stop") or spec.get("stop") or {}
    kind = str(manifest.get("kind") or "experiment")
    seen = list(dict.fromkeys(str(r.get("arm")) for r in rows if r.get("arm") is not None))
    arms = [*(manifest.get("arms") or {}), *seen]
    baseline = _get(manifest, "baseline") or spec.get("baseline") or (arms[0] if arms else "")
    metrics = _get(manifest, "decision_metrics") or _get(spec, "decision_metrics", "metrics") or ()
    interleaved = manifest.get("interleaved")
    max_blocks = stop.get("max_blocks")
    return Settings(
        kind=kind,
        run_id=str(manifest.get("run_id") or ""),
        arms=tuple(dict.fromkeys([str(baseline), *arms])),
        decision_metrics=tuple(metrics) or DEFAULT_DECISION_METRICS,
        interleaved=bool(interleaved) if interleaved is not None else kind != "import",
        confidence=float(manifest.get("confidence") or DEFAULT_CONFIDENCE),
        min_effect=float(stop.get("min_effect") or DEFAULT_MIN_EFFECT),
        min_blocks=int(spec.get("blocks") or 1),
        max_blocks=int(max_blocks) if max_blocks else None,
        target_ci_width=stop.get("target_ci_width"),
        seed=int(_get(manifest, "seed") or spec.get("seed") or 0),
        length_matched=bool(
            _get(spec, "length_matched") or _get(spec.get("base"), "length_matched")
        ),
    )
