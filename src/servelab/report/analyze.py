"""From a run directory's contents to ``summary.json``: the analysis of an experiment or import.

Owns ``analyze`` (manifest dict + request rows -> the summary dict of docs/summary-json.md) and
``look`` (the sequential look the runner takes after each round). Pure: no files, no clock, no
network; the same manifest, rows and seed give the same summary. The statistics themselves live
in ``servelab.stats`` (docs/statistics.md); this module pairs blocks, words verdicts and puts
the summary together. Row selection is ``servelab.report.rows``, the manifest's settings and
defaults ``servelab.report.settings``, and the warnings ``servelab.report.warnings``.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from servelab.metrics import METRIC_BY_NAME
from servelab.report.rows import (
    Row,
    block_of,
    blocks_of,
    by_arm,
    cells,
    in_order,
    level_of,
    n_rounds,
    ok_trials,
    trials,
)
from servelab.report.settings import DEFAULT_RESAMPLES, Settings, settings
from servelab.report.warnings import warnings
from servelab.runner.summary import summarize_arm
from servelab.stats.compare import RatioComparison, compare_blocks, decide
from servelab.stats.proportions import compare_rates, wilson
from servelab.stats.sequential import StopRule, stop_rule
from servelab.stats.summary import summarize
from servelab.stats.sweep import Request, SweepPoint, sweep
from servelab.store import SCHEMA_VERSION

LABELS = {"decode_tps": "decode", "ttft_s": "TTFT", "e2e_s": "e2e", "tpot_s": "TPOT"}


@dataclass(frozen=True, slots=True)
class StopDecision:
    """The outcome of one sequential look (see ``look``)."""

    stop: bool  # the run may stop now
    decided: bool  # every comparison is better, worse or no_difference
    reason: str
    after_block: int
    n_rounds: int
    confidence_level: float  # the per-look level the intervals used
    comparisons: tuple[dict[str, Any], ...]

    def as_look(self) -> dict[str, Any]:
        """The entry for ``manifest["looks"]``."""
        return {"after_block": self.after_block, "decided": self.decided, "reason": self.reason}


# ---------------------------------------------------------------------------- comparisons


def _rng(seed: int, *key: object) -> np.random.Generator:
    """One generator per comparison, keyed by content so that order does not matter."""
    digest = zlib.crc32("|".join(map(str, key)).encode())
    return np.random.default_rng(np.random.SeedSequence([seed, digest]))


def _compare_cell(
    base: dict[int, list[float]], cand: dict[int, list[float]], paired: bool,
    rng: np.random.Generator, confidence: float, n_resamples: int,
) -> RatioComparison | None:  # fmt: skip
    if paired:
        rounds = sorted(set(base) & set(cand))
        b, c = [base[r] for r in rounds], [cand[r] for r in rounds]
    else:
        b, c = list(base.values()), list(cand.values())
    if not b or not c:
        return None
    return compare_blocks(
        b, c, paired=paired, rng=rng, confidence=confidence, n_resamples=n_resamples
    )


def comparisons(
    cfg: Settings, rows: Sequence[Row], *, confidence: float, n_resamples: int
) -> list[dict[str, Any]]:
    """One comparison per candidate arm, concurrency level (shared by both arms) and metric."""
    grouped = cells(rows)
    base_cells = grouped.get(cfg.baseline, {})
    out = []
    for cand in cfg.arms[1:]:
        cand_cells = grouped.get(cand, {})
        for level in sorted(set(base_cells) & set(cand_cells)):
            for metric in cfg.decision_metrics:
                rng = _rng(cfg.seed, metric, cfg.baseline, cand, level)
                result = _compare_cell(
                    blocks_of(base_cells[level], metric), blocks_of(cand_cells[level], metric),
                    cfg.interleaved, rng, confidence, n_resamples,
                )  # fmt: skip
                out.append(_comparison_dict(cfg, metric, cand, level, result, confidence))
    return out


def _lower_is_better(metric: str) -> bool:
    known = METRIC_BY_NAME.get(metric)
    return bool(known.lower_is_better) if known and known.lower_is_better is not None else False


def _comparison_dict(
    cfg: Settings, metric: str, cand: str, level: int, r: RatioComparison | None,
    confidence: float,
) -> dict[str, Any]:  # fmt: skip
    lower = _lower_is_better(metric)
    out: dict[str, Any] = {
        "metric": metric, "baseline": cfg.baseline, "candidate": cand, "concurrency": level,
        "statistic": "median", "lower_is_better": lower, "ratio": None, "ci_low": None,
        "ci_high": None, "ratio_mean": None, "ci_low_mean": None, "ci_high_mean": None,
        "verdict": "inconclusive", "min_effect": cfg.min_effect, "n_blocks": 0,
        "blocks_needed": None, "paired": cfg.interleaved, "confidence_level": confidence,
        "ci_width": None, "n_blocks_baseline": 0, "n_blocks_candidate": 0,
    }  # fmt: skip
    if r is None:
        out["summary"] = f"{_label(metric)} inconclusive: no successful requests to compare"
        return out
    d = decide(r.median, lower_is_better=lower, min_effect=cfg.min_effect, n_blocks=r.n_blocks)
    lo, hi = r.median.ci_low, r.median.ci_high
    width = hi - lo if lo is not None and hi is not None else None
    out.update(
        ratio=r.median.ratio, ci_low=r.median.ci_low, ci_high=r.median.ci_high,
        ratio_mean=r.mean.ratio, ci_low_mean=r.mean.ci_low, ci_high_mean=r.mean.ci_high,
        verdict=d.verdict, n_blocks=r.n_blocks, blocks_needed=d.blocks_needed, ci_width=width,
        n_blocks_baseline=r.n_blocks_baseline, n_blocks_candidate=r.n_blocks_candidate,
    )  # fmt: skip
    out["summary"] = sentence(out, cfg.confidence)
    return out


def _label(metric: str) -> str:
    return LABELS.get(metric, metric)


def _ci_text(c: Mapping[str, Any], confidence: float) -> str:
    return f"{confidence * 100:g} % CI {c['ci_low']:.2f}-{c['ci_high']:.2f}"


def sentence(c: Mapping[str, Any], confidence: float) -> str:
    """One human sentence for a comparison dict, e.g. "decode 1.18x faster (95 % CI 1.09-1.27)"."""
    label, ratio, verdict = _label(c["metric"]), c["ratio"], c["verdict"]
    if c["ci_low"] is None:
        return f"{label} inconclusive: need at least 2 blocks per arm (ratio {ratio:.2f})"
    ci = _ci_text(c, confidence)
    if verdict == "no_difference":
        return f"{label} no difference (within ±{c['min_effect'] * 100:g} %; {ci})"
    if verdict == "inconclusive":
        need = c["blocks_needed"]
        return f"{label} inconclusive: need ~{need} blocks (ratio {ratio:.2f}, {ci})"
    unit = METRIC_BY_NAME[c["metric"]].unit if c["metric"] in METRIC_BY_NAME else ""
    good, bad = ("faster", "slower") if unit in ("s", "tok/s") else ("better", "worse")
    factor = max(ratio, 1 / ratio)
    word = good if verdict == "better" else bad
    if factor == ratio:
        return f"{label} {factor:.2f}x {word} ({ci})"
    return f"{label} {factor:.2f}x {word} (ratio {ratio:.2f}, {ci})"


# ---------------------------------------------------------------------------- proportions


def _rate_counts(rows: Sequence[Row]) -> dict[str, tuple[int, int]]:
    tried, ok = trials(rows), ok_trials(rows)
    failed = sum(1 for r in tried if r.get("outcome") != "ok")
    truncated = sum(1 for r in ok if r.get("finish_reason") == "length")
    return {"error_rate": (failed, len(tried)), "truncated_rate": (truncated, len(ok))}


def _rate_dict(k: int, n: int, confidence: float) -> dict[str, Any]:
    r = wilson(k, n, confidence)
    return {"k": k, "n": n, "p": r.p, "ci_low": r.ci_low, "ci_high": r.ci_high}


def proportions(
    cfg: Settings, grouped: Mapping[str, Sequence[Row]], confidence: float
) -> list[dict[str, Any]]:
    counts = {arm: _rate_counts(grouped.get(arm, ())) for arm in cfg.arms}
    out = []
    for cand in cfg.arms[1:]:
        for metric, (kb, nb) in counts[cfg.baseline].items():
            kc, nc = counts[cand][metric]
            r = compare_rates(kb, nb, kc, nc, lower_is_better=True, confidence=confidence)
            entry = {
                "metric": metric, "baseline": cfg.baseline, "candidate": cand,
                "baseline_p": r.baseline.p, "candidate_p": r.candidate.p,
                "baseline_k": kb, "baseline_n": nb, "candidate_k": kc, "candidate_n": nc,
                "difference": r.difference, "diff_ci_low": r.diff_ci_low,
                "diff_ci_high": r.diff_ci_high, "p_value": r.p_value, "verdict": r.verdict,
            }  # fmt: skip
            out.append(entry)
    return out


# ---------------------------------------------------------------------------- arms, sweep


def _arm_summary(rows: Sequence[Row], metrics: Sequence[str], confidence: float) -> dict[str, Any]:
    out = summarize_arm(rows)
    ok = ok_trials(rows)
    for metric in metrics:
        out["metrics"].setdefault(metric, summarize(r.get(metric) for r in ok).as_dict())
    out["n_blocks"] = len({(block_of(r), r.get("concurrency")) for r in trials(rows)})
    for name, (k, n) in _rate_counts(rows).items():
        out[name] = _rate_dict(k, n, confidence)
    levels = sorted({level_of(r) for r in ok})
    if len(levels) > 1:
        out["by_concurrency"] = {
            str(c): {
                m: summarize(r.get(m) for r in ok if level_of(r) == c).as_dict() for m in metrics
            }
            for c in levels
        }
    return out


def _request(row: Row) -> Request | None:
    t, e2e, n = row.get("t_send_unix_s"), row.get("e2e_s"), row.get("n_out")
    if not all(isinstance(v, int | float) for v in (t, e2e, n)):
        return None
    return Request(float(t), float(e2e), int(n), row.get("decode_tps"), row.get("ttft_s"))  # type: ignore[arg-type]


def _sweep_point(p: SweepPoint, reference: int | None) -> dict[str, Any]:
    return {
        "concurrency": p.concurrency, "aggregate_tps": p.aggregate_tps,
        "per_stream_tps": p.per_stream_tps, "ttft_s": p.ttft_s, "efficiency": p.efficiency,
        "efficiency_reference": reference, "n_blocks": p.n_blocks,
    }  # fmt: skip


def sweep_table(cfg: Settings, rows: Sequence[Row]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for arm, levels in cells(rows).items():
        data = {
            c: [[q for q in map(_request, block) if q] for block in blocks.values()]
            for c, blocks in levels.items()
        }
        result = sweep(data)
        out[arm] = [_sweep_point(p, result.reference_concurrency) for p in result.points]
    return {arm: out[arm] for arm in (*cfg.arms, *out) if arm in out}


# ---------------------------------------------------------------------------- entry points


def _rule(cfg: Settings, comps: Sequence[Mapping[str, Any]], n_rounds: int) -> StopRule:
    return stop_rule(
        [c["verdict"] for c in comps],
        [c["ci_width"] for c in comps],
        n_rounds=n_rounds,
        plan=cfg.plan(),
        target_ci_width=cfg.target_ci_width,
    )


def look(
    manifest: Mapping[str, Any],
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
    rule = _rule(cfg, comps, rounds)
    return StopDecision(rule.stop, rule.decided, rule.reason, after_block, rounds, level,
                        tuple(comps))  # fmt: skip


def _stopping(
    cfg: Settings, manifest: Mapping[str, Any], comps: Sequence[Mapping[str, Any]],
    n_rounds: int, level: float,
) -> dict[str, Any]:  # fmt: skip
    plan = cfg.plan()
    looks = manifest.get("looks") or []
    sequential = len(plan.looks) > 1
    rule = (
        f"sequential: a look after every round from {plan.looks[0]} to {plan.looks[-1]} "
        f"blocks, {plan.spending} alpha spending (alpha {plan.alpha:g}); stop when every "
        "comparison is decided"
        + (f" or every CI is narrower than {cfg.target_ci_width:g}" if cfg.target_ci_width else "")
        if sequential
        else "fixed size: one analysis at the end"
    )
    reason = looks[-1].get("reason") if looks else _rule(cfg, comps, n_rounds).reason
    return {
        "rule": rule, "sequential": sequential, "spending": plan.spending if sequential else None,
        "alpha": plan.alpha, "min_blocks": plan.looks[0] if sequential else None,
        "max_blocks": plan.looks[-1] if sequential else None,
        "target_ci_width": cfg.target_ci_width, "looks": len(looks), "n_rounds": n_rounds,
        "confidence_level": level, "stopped_early": manifest.get("status") == "stopped_early",
        "reason": reason,
    }  # fmt: skip


def analyze(
    manifest: Mapping[str, Any],
    rows: Sequence[Row],
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
) -> dict[str, Any]:
    """The summary dict of docs/summary-json.md for a manifest and its request rows."""
    rows = in_order(rows)
    cfg = settings(manifest, rows)
    grouped = by_arm(rows)
    rounds = n_rounds(rows)
    level = cfg.plan().confidence_at(rounds)
    comps = comparisons(cfg, rows, confidence=level, n_resamples=n_resamples)
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": cfg.kind,
        "run_id": cfg.run_id,
        "baseline": cfg.baseline,
        "decision_metrics": list(cfg.decision_metrics),
        "interleaved": cfg.interleaved,
        "confidence": cfg.confidence,
        "seed": cfg.seed,
        "n_resamples": n_resamples,
        "arms": {
            arm: _arm_summary(grouped.get(arm, ()), cfg.decision_metrics, cfg.confidence)
            for arm in cfg.arms
        },
        "comparisons": comps,
        "proportions": proportions(cfg, grouped, cfg.confidence),
        "sweep": sweep_table(cfg, rows),
        "stopping": _stopping(cfg, manifest, comps, rounds, level),
        "config_diff": dict(manifest.get("config_diff") or {}),
        "allowed_confounds": list(manifest.get("allowed_confounds") or []),
        "warnings": warnings(cfg, manifest, rows),
    }
