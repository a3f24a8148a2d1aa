"""Rates (error rate, truncated rate, quality pass rates): intervals per arm, a test between arms.

Owns ``wilson`` (the Wilson score interval for one rate) and ``compare_rates`` (Fisher's exact
test between two arms, Newcombe's hybrid score interval for the difference, and a verdict in the
vocabulary of compare.py). Pure scipy, no I/O, no random steps.

Assumptions: requests are independent Bernoulli trials within an arm (block drift is ignored
here: a rate is a count, not a latency, and counts per block are small). Fisher's test
conditions on both margins, so it is exact and conservative for small counts, the common case
(0 or 1 failures).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from servelab.lazy import lazy_module
from servelab.stats.compare import Verdict

sps = lazy_module("scipy.stats")  # imported on first use: scipy.stats takes ~1 s

DEFAULT_MARGIN = 0.10  # absolute difference in rate that still counts as "no difference"


@dataclass(frozen=True, slots=True)
class Rate:
    """k of n, with its Wilson interval; all None when n is 0."""

    k: int
    n: int
    p: float | None
    ci_low: float | None
    ci_high: float | None


@dataclass(frozen=True, slots=True)
class RateComparison:
    baseline: Rate
    candidate: Rate
    difference: float | None  # candidate p - baseline p
    diff_ci_low: float | None  # Newcombe hybrid score interval of the difference
    diff_ci_high: float | None
    p_value: float | None  # Fisher's exact, two-sided
    verdict: Verdict


def _z(confidence: float) -> float:
    if not 0 < confidence < 1:
        raise ValueError("confidence must be in (0, 1)")
    return float(sps.norm.isf((1 - confidence) / 2))


def wilson(k: int, n: int, confidence: float = 0.95) -> Rate:
    """Wilson score interval for k successes in n trials (exact 0 and 1 at the edges)."""
    if n < 0 or not 0 <= k <= max(n, 0):
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return Rate(k, n, None, None, None)
    z = _z(confidence)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low = 0.0 if k == 0 else max(0.0, centre - half)
    high = 1.0 if k == n else min(1.0, centre + half)
    return Rate(k, n, p, low, high)


def compare_rates(
    k_baseline: int,
    n_baseline: int,
    k_candidate: int,
    n_candidate: int,
    *,
    lower_is_better: bool = True,
    confidence: float = 0.95,
    margin: float = DEFAULT_MARGIN,
) -> RateComparison:
    """Compare two rates: ``better``/``worse`` when Fisher's exact test rejects at
    1 - ``confidence``, by direction; ``no_difference`` when the difference's interval lies
    within +-``margin`` (absolute); otherwise ``inconclusive``. Empty arms are inconclusive.
    """
    base = wilson(k_baseline, n_baseline, confidence)
    cand = wilson(k_candidate, n_candidate, confidence)
    if base.p is None or cand.p is None:
        return RateComparison(base, cand, None, None, None, None, "inconclusive")
    table = [[k_candidate, n_candidate - k_candidate], [k_baseline, n_baseline - k_baseline]]
    p_value = float(sps.fisher_exact(table, alternative="two-sided").pvalue)
    diff = cand.p - base.p
    assert base.ci_low is not None and base.ci_high is not None  # set whenever p is
    assert cand.ci_low is not None and cand.ci_high is not None
    low = diff - math.hypot(cand.p - cand.ci_low, base.ci_high - base.p)
    high = diff + math.hypot(cand.ci_high - cand.p, base.p - base.ci_low)
    verdict: Verdict
    if p_value < 1 - confidence and diff != 0:
        verdict = "better" if (diff < 0) == lower_is_better else "worse"
    elif -margin <= low and high <= margin:
        verdict = "no_difference"
    else:
        verdict = "inconclusive"
    return RateComparison(base, cand, diff, low, high, p_value, verdict)
