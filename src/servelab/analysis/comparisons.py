"""Between-arm comparisons: ratio intervals of the decision metrics, and rate differences.

Owns ``comparisons`` (one ``Comparison`` per candidate arm, concurrency level shared with the
baseline and decision metric: a bootstrap over blocks, paired when the arms were interleaved,
each from its own generator keyed by content), the sentence that words each verdict, and
``proportions`` (error and truncation rates of each candidate against the baseline, exact test).
The statistics live in ``servelab.stats`` (docs/statistics.md). Pure.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence

import numpy as np

from servelab.analysis.row_selection import Row, blocks_of, cells, ok_trials, trials
from servelab.analysis.settings import Settings
from servelab.metrics import METRIC_BY_NAME
from servelab.stats.compare import RatioComparison, compare_blocks, decide
from servelab.stats.proportions import compare_rates, wilson
from servelab.store.summary import Comparison, Proportion, RateCI

LABELS = {"decode_tps": "decode", "ttft_s": "TTFT", "e2e_s": "e2e", "tpot_s": "TPOT"}


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
) -> list[Comparison]:
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
                out.append(_comparison(cfg, metric, cand, level, result, confidence))
    return out


def lower_is_better(metric: str) -> bool:
    known = METRIC_BY_NAME.get(metric)
    return bool(known.lower_is_better) if known and known.lower_is_better is not None else False


def _comparison(
    cfg: Settings, metric: str, cand: str, level: int, r: RatioComparison | None,
    confidence: float,
) -> Comparison:  # fmt: skip
    lower = lower_is_better(metric)
    if r is None:
        return Comparison(
            metric=metric, baseline=cfg.baseline, candidate=cand, concurrency=level,
            statistic="median", lower_is_better=lower, ratio=None, ci_low=None, ci_high=None,
            ratio_mean=None, ci_low_mean=None, ci_high_mean=None, verdict="inconclusive",
            min_effect=cfg.min_effect, n_blocks=0, blocks_needed=None, paired=cfg.interleaved,
            confidence_level=confidence, ci_width=None, n_blocks_baseline=0,
            n_blocks_candidate=0,
            summary=f"{_label(metric)} inconclusive: no successful requests to compare",
        )  # fmt: skip
    d = decide(r.median, lower_is_better=lower, min_effect=cfg.min_effect, n_blocks=r.n_blocks)
    lo, hi = r.median.ci_low, r.median.ci_high
    width = hi - lo if lo is not None and hi is not None else None
    return Comparison(
        metric=metric, baseline=cfg.baseline, candidate=cand, concurrency=level,
        statistic="median", lower_is_better=lower, ratio=r.median.ratio, ci_low=lo, ci_high=hi,
        ratio_mean=r.mean.ratio, ci_low_mean=r.mean.ci_low, ci_high_mean=r.mean.ci_high,
        verdict=d.verdict, min_effect=cfg.min_effect, n_blocks=r.n_blocks,
        blocks_needed=d.blocks_needed, paired=cfg.interleaved, confidence_level=confidence,
        ci_width=width, n_blocks_baseline=r.n_blocks_baseline,
        n_blocks_candidate=r.n_blocks_candidate,
        summary=sentence(metric, r.median.ratio, lo, hi, d.verdict, cfg.min_effect,
                         d.blocks_needed, cfg.confidence),
    )  # fmt: skip


def _label(metric: str) -> str:
    return LABELS.get(metric, metric)


def sentence(
    metric: str, ratio: float, ci_low: float | None, ci_high: float | None, verdict: str,
    min_effect: float, blocks_needed: int | None, confidence: float,
) -> str:  # fmt: skip
    """One human sentence for a comparison, e.g. "decode 1.18x faster (95 % CI 1.09-1.27)"."""
    label = _label(metric)
    if ci_low is None or ci_high is None:
        return f"{label} inconclusive: need at least 2 blocks per arm (ratio {ratio:.2f})"
    ci = f"{confidence * 100:g} % CI {ci_low:.2f}-{ci_high:.2f}"
    if verdict == "no_difference":
        return f"{label} no difference (within ±{min_effect * 100:g} %; {ci})"
    if verdict == "inconclusive":
        return f"{label} inconclusive: need ~{blocks_needed} blocks (ratio {ratio:.2f}, {ci})"
    unit = METRIC_BY_NAME[metric].unit if metric in METRIC_BY_NAME else ""
    good, bad = ("faster", "slower") if unit in ("s", "tok/s") else ("better", "worse")
    factor = max(ratio, 1 / ratio)
    word = good if verdict == "better" else bad
    if factor == ratio:
        return f"{label} {factor:.2f}x {word} ({ci})"
    return f"{label} {factor:.2f}x {word} (ratio {ratio:.2f}, {ci})"


# ---------------------------------------------------------------------------- proportions


def rate_counts(rows: Sequence[Row]) -> dict[str, tuple[int, int]]:
    """``{rate: (k, n)}`` of failed trial requests and truncated successful ones."""
    tried, ok = trials(rows), ok_trials(rows)
    failed = sum(1 for r in tried if r.get("outcome") != "ok")
    truncated = sum(1 for r in ok if r.get("finish_reason") == "length")
    return {"error_rate": (failed, len(tried)), "truncated_rate": (truncated, len(ok))}


def rate_ci(k: int, n: int, confidence: float) -> RateCI:
    return wilson(k, n, confidence)


def proportions(
    cfg: Settings, grouped: Mapping[str, Sequence[Row]], confidence: float
) -> list[Proportion]:
    counts = {arm: rate_counts(grouped.get(arm, ())) for arm in cfg.arms}
    out = []
    for cand in cfg.arms[1:]:
        for metric, (kb, nb) in counts[cfg.baseline].items():
            kc, nc = counts[cand][metric]
            r = compare_rates(kb, nb, kc, nc, lower_is_better=True, confidence=confidence)
            out.append(Proportion(
                metric=metric, baseline=cfg.baseline, candidate=cand,
                baseline_p=r.baseline.p, candidate_p=r.candidate.p,
                baseline_k=kb, baseline_n=nb, candidate_k=kc, candidate_n=nc,
                difference=r.difference, diff_ci_low=r.diff_ci_low,
                diff_ci_high=r.diff_ci_high, p_value=r.p_value, verdict=r.verdict,
            ))  # fmt: skip
    return out
