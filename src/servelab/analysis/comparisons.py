"""Between-arm comparisons: ratio intervals of the decision statistics, and rate differences.

Owns ``comparisons`` (one ``Comparison`` per candidate arm, load level shared with its
reference arm (a concurrency, or an open-loop rate: ``rate_rps``), decision metric and
statistic: paired by (round, prompt) when the arms were interleaved or each ran one pass
through the prompts, else each arm's blocks on their own; each from its own generator keyed
by content), the pairs and cells the statistics take
(``pairs_of``, ``cells_of``), the sentence that words each verdict, and ``proportions`` (error
and truncation rates of each candidate against its reference, exact test). The statistics
live in ``servelab.stats`` (docs/statistics.md). Pure.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence

import numpy as np

from servelab.analysis.row_selection import Row, block_of, cells, ok_trials, positive, trials
from servelab.analysis.settings import Settings
from servelab.metrics import METRIC_BY_NAME, Statistic, pooled_weight
from servelab.spec.load import LoadLevel
from servelab.stats.paired import (
    Cell,
    Pair,
    PairedComparison,
    PromptMode,
    compare_pairs,
    compare_unpaired,
    decide_paired,
    heterogeneity_words,
)
from servelab.stats.proportions import compare_rates, wilson
from servelab.store.summary import Comparison, Proportion, RateCI

LABELS = {"decode_tps": "decode", "ttft_s": "TTFT", "e2e_s": "e2e", "tpot_s": "TPOT"}


def _rng(seed: int, *key: object) -> np.random.Generator:
    """One generator per comparison, keyed by content so that order does not matter."""
    digest = zlib.crc32("|".join(map(str, key)).encode())
    return np.random.default_rng(np.random.SeedSequence([seed, digest]))


def _cell(rows: Sequence[Row], metric: str) -> Cell | None:
    kept = [(v, pooled_weight(metric, r)) for r in rows for v in positive([r], metric)]
    if not kept:
        return None
    return Cell(tuple(v for v, _ in kept), tuple(w for _, w in kept))


def _by_key(rows: Sequence[Row]) -> dict[tuple[int, str], list[Row]]:
    out: dict[tuple[int, str], list[Row]] = {}
    for row in rows:
        out.setdefault((block_of(row), str(row.get("prompt_id") or "")), []).append(row)
    return out


def pairs_of(baseline: Sequence[Row], candidate: Sequence[Row], metric: str) -> list[Pair]:
    """(round, prompt) pairs of two arms' rows with a value of ``metric`` in both arms.

    A pair missing in either arm (a failed request) is left out of both, so that the two arms
    are compared on the same prompts. Rows without a prompt id pair by round alone.
    """
    b, c = _by_key(baseline), _by_key(candidate)
    out = []
    for key in sorted(set(b) & set(c)):
        cb, cc = _cell(b[key], metric), _cell(c[key], metric)
        if cb is not None and cc is not None:
            out.append(Pair(key[0], key[1], cb, cc))
    return out


def cells_of(rows: Sequence[Row], metric: str) -> list[Cell]:
    """One arm's values of ``metric`` per block, in block order; blocks without one left out."""
    blocks: dict[int, list[Row]] = {}
    for row in rows:
        blocks.setdefault(block_of(row), []).append(row)
    found = (_cell(blocks[b], metric) for b in sorted(blocks))
    return [cell for cell in found if cell is not None]


def _pairable(interleaved: bool, base: Sequence[Row], cand: Sequence[Row]) -> bool:
    """Interleaved arms pair by round; separate runs only when each made one pass through
    prompts both asked (a single-pass table), which pairs them by prompt."""
    if interleaved:
        return True
    if not {block_of(r) for r in base} == {block_of(r) for r in cand} == {0}:
        return False
    asked = {r.get("prompt_id") for r in base} & {r.get("prompt_id") for r in cand}
    return bool(asked - {None, ""})


def compare_arms(
    base: Sequence[Row], cand: Sequence[Row], metric: str, statistic: Statistic, *,
    interleaved: bool, prompts: PromptMode, min_effect: float, rng: np.random.Generator,
    confidence: float, n_resamples: int,
) -> PairedComparison | None:  # fmt: skip
    """The comparison of one metric and statistic between two arms' ok trial rows (the
    verdicts' and the relative gates')."""
    if _pairable(interleaved, base, cand):
        pairs = pairs_of(base, cand, metric)
        if not pairs:
            return None
        return compare_pairs(
            pairs, statistic, rng=rng, confidence=confidence, n_resamples=n_resamples,
            prompts=prompts, min_effect=min_effect,
        )  # fmt: skip
    b, c = cells_of(base, metric), cells_of(cand, metric)
    if not b or not c:
        return None
    return compare_unpaired(
        b, c, statistic, rng=rng, confidence=confidence, n_resamples=n_resamples
    )


def comparisons(
    cfg: Settings, rows: Sequence[Row], *, confidence: float, n_resamples: int
) -> list[Comparison]:
    """One comparison per candidate arm, concurrency level (shared with its reference),
    metric and statistic."""
    grouped = cells(rows)
    out = []
    for cand in cfg.candidates():
        ref = cfg.reference_of(cand)
        ref_cells, cand_cells = grouped.get(ref, {}), grouped.get(cand, {})
        for level in sorted(set(ref_cells) & set(cand_cells)):
            base_rows = [r for rows_ in ref_cells[level].values() for r in rows_]
            cand_rows = [r for rows_ in cand_cells[level].values() for r in rows_]
            for metric, statistic in cfg.decision:
                rng = _rng(cfg.seed, metric, ref, cand, level, *_stat_key(statistic))
                result = compare_arms(
                    base_rows, cand_rows, metric, statistic,  # type: ignore[arg-type]
                    interleaved=cfg.interleaved, prompts=cfg.prompts,
                    min_effect=cfg.min_effect, rng=rng, confidence=confidence,
                    n_resamples=n_resamples,
                )  # fmt: skip
                out.append(
                    _comparison(cfg, metric, statistic, ref, cand, level, result, confidence)
                )
    return out


def _stat_key(statistic: str) -> tuple[str, ...]:
    """The generator key's statistic part: none for the median, so that a median comparison
    draws the resamples it drew before statistics were chosen."""
    return () if statistic == "median" else (statistic,)


def lower_is_better(metric: str) -> bool:
    known = METRIC_BY_NAME.get(metric)
    return bool(known.lower_is_better) if known and known.lower_is_better is not None else False


def _comparison(
    cfg: Settings, metric: str, statistic: str, ref: str, cand: str, level: LoadLevel,
    r: PairedComparison | None, confidence: float,
) -> Comparison:  # fmt: skip
    lower = lower_is_better(metric)
    if r is None:
        return Comparison(
            metric=metric, baseline=ref, candidate=cand, concurrency=level.concurrency,
            rate_rps=level.rate_rps, statistic=statistic, lower_is_better=lower, ratio=None,
            ci_low=None, ci_high=None, ratio_mean=None, ci_low_mean=None, ci_high_mean=None,
            verdict="inconclusive",
            min_effect=cfg.min_effect, n_blocks=0, blocks_needed=None, paired=cfg.interleaved,
            confidence_level=confidence, ci_width=None, n_blocks_baseline=0,
            n_blocks_candidate=0,
            summary=f"{_label(metric)} inconclusive: no successful requests to compare",
        )  # fmt: skip
    d = decide_paired(r, lower_is_better=lower, min_effect=cfg.min_effect)
    lo, hi = r.ci_low, r.ci_high
    width = hi - lo if lo is not None and hi is not None else None
    words = heterogeneity_words(r)
    return Comparison(
        metric=metric, baseline=ref, candidate=cand, concurrency=level.concurrency,
        rate_rps=level.rate_rps, statistic=statistic,
        lower_is_better=lower, ratio=r.ratio, ci_low=lo, ci_high=hi, ratio_mean=r.ratio_mean,
        ci_low_mean=r.ci_low_mean, ci_high_mean=r.ci_high_mean, verdict=d.verdict,
        min_effect=cfg.min_effect, n_blocks=r.n_rounds, blocks_needed=d.blocks_needed,
        paired=r.paired, confidence_level=confidence, ci_width=width,
        n_blocks_baseline=r.n_blocks_baseline, n_blocks_candidate=r.n_blocks_candidate,
        summary=sentence(metric, r.ratio, lo, hi, d.verdict, cfg.min_effect, d.blocks_needed,
                         cfg.confidence, statistic=statistic, heterogeneity=words),
        ratio_median=r.ratio_median, method=r.method, n_pairs=r.n_pairs, prompts=r.prompts,
        heterogeneity=words,
    )  # fmt: skip


def _label(metric: str) -> str:
    return LABELS.get(metric, metric)


def sentence(
    metric: str, ratio: float, ci_low: float | None, ci_high: float | None, verdict: str,
    min_effect: float, blocks_needed: int | None, confidence: float, *,
    statistic: str | None = None, heterogeneity: str | None = None,
) -> str:  # fmt: skip
    """One human sentence for a comparison, e.g. "decode pooled 1.18x faster (95 % CI
    1.09-1.27)"; with a split across prompts, the split first: "decode: 2 of 10 prompts at
    0.44-0.49x (a, b), the others unchanged (1.00x); pooled 0.81x: worse (95 % CI ...)"."""
    label = _label(metric) + (f" {statistic}" if statistic else "")
    if ci_low is None or ci_high is None:
        return f"{label} inconclusive: need at least 2 blocks per arm (ratio {ratio:.2f})"
    ci = f"{confidence * 100:g} % CI {ci_low:.2f}-{ci_high:.2f}"
    if heterogeneity:
        outcome = "inconclusive" if verdict == "inconclusive" else verdict.replace("_", " ")
        need = f", need ~{blocks_needed} blocks" if verdict == "inconclusive" else ""
        return (
            f"{_label(metric)}: {heterogeneity}; {statistic or 'ratio'} {ratio:.2f}x: "
            f"{outcome} ({ci}{need})"
        )
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
    for cand in cfg.candidates():
        ref = cfg.reference_of(cand)
        for metric, (kb, nb) in counts[ref].items():
            kc, nc = counts[cand][metric]
            r = compare_rates(kb, nb, kc, nc, lower_is_better=True, confidence=confidence)
            out.append(Proportion(
                metric=metric, baseline=ref, candidate=cand,
                baseline_p=r.baseline.p, candidate_p=r.candidate.p,
                baseline_k=kb, baseline_n=nb, candidate_k=kc, candidate_n=nc,
                difference=r.difference, diff_ci_low=r.diff_ci_low,
                diff_ci_high=r.diff_ci_high, p_value=r.p_value, verdict=r.verdict,
            ))  # fmt: skip
    return out
