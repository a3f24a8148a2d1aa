"""Per-prompt paired effects: each prompt's effect with an interval, its position against the
no-difference band, and the split of effects across prompts in words.

Owns ``PromptEffect`` and ``effects`` (from the log ratios of (round, prompt) pairs that
``stats/paired.py`` computes): the robust noise estimate (1.4826 x the MAD, with the MAD's
efficiency 0.37 in the t degrees of freedom), intervals simultaneous over the prompts
(Bonferroni), the rule that a prompt asked once in a run of several rounds stays ``unclear``,
and ``split_words`` ("2 of 10 prompts at 0.44-0.49x (long_explain, code_small), the others
unchanged"). docs/statistics.md, "Per-prompt effects and the split". Pure numpy/scipy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from servelab.lazy import lazy_module
from servelab.stats.compare import bounded_exp

sps = lazy_module("scipy.stats")  # imported on first use: scipy.stats takes ~1 s

Position = Literal["below", "within", "above", "unclear"]
MAD_SCALE = 1.482602218505602  # 1 / Phi^-1(3/4): the MAD of a normal sample estimates sd / this
MAD_EFFICIENCY = 0.37  # asymptotic efficiency of the MAD against the sd for normal data


@dataclass(frozen=True, slots=True)
class PromptEffect:
    """The candidate / baseline effect on one prompt over the rounds that asked it."""

    prompt: str
    ratio: float  # geometric mean over its rounds of the pair ratio
    ci_low: float | None
    ci_high: float | None
    n_rounds: int
    position: Position  # whole interval below / within / above the band, or unclear


def mad_sd(d: NDArray[np.float64]) -> float:
    """Robust sd of pair log ratios: 1.4826 MAD around the median; the sd if the MAD is 0."""
    if d.size < 2:
        return 0.0
    mad = float(np.median(np.abs(d - np.median(d)))) * MAD_SCALE
    return mad if mad > 0 else float(np.std(d, ddof=1))


@lru_cache(maxsize=1024)
def t_quantile(p: float, df: float) -> float:
    """Student t quantile (cached: a simulation asks for the same few thousands of times)."""
    return float(sps.t.ppf(p, df))


def mad_df(n: int) -> float:
    return max(1.0, math.floor(MAD_EFFICIENCY * (n - 1)))


def _position(lo: float | None, hi: float | None, min_effect: float) -> Position:
    if lo is None or hi is None:
        return "unclear"
    band = 1 + min_effect
    if hi < 1 / band:
        return "below"
    if lo > band:
        return "above"
    if lo >= 1 / band and hi <= band:
        return "within"
    return "unclear"


def effects(
    d: NDArray[np.float64],
    prompts: Sequence[str],
    *,
    single_round: bool,
    confidence: float,
    min_effect: float,
) -> tuple[PromptEffect, ...]:
    """Each prompt's paired effect with a t interval, in first-seen order, from the log ratio
    ``d[i]`` of each pair and its prompt ``prompts[i]``. The intervals are
    simultaneous at ``confidence`` (Bonferroni over the prompts: each at 1 - alpha / P), so
    that with 30 prompts an effect-free run does not show one "confidently" outside the band.

    The noise of one pair's log ratio is estimated robustly, as 1.4826 x the MAD: of the
    within-prompt residuals (each scaled by 1 / sqrt(1 - 1/R_p) for a prompt asked R_p times)
    when prompts repeat across rounds, else of all pairs around their median (one round, or
    prompts that never repeat); degrees of freedom 0.37 x those of the sd. A prompt whose own
    rounds spread wider (a stall in one of them) uses its own sd and degrees of freedom, so one
    slow request cannot make its prompt look confidently different, nor every other prompt
    look noisy. In a run of several rounds a prompt asked only once is ``unclear`` whatever its
    interval: one request cannot tell a stall from an effect. (With a single round, the only
    evidence there is, its interval decides.)
    """
    names = list(dict.fromkeys(prompts))
    if not names:
        return ()
    alpha = (1 - confidence) / len(names)  # simultaneous over the prompts (Bonferroni)
    groups = {n: d[[i for i, p in enumerate(prompts) if p == n]] for n in names}
    within_df = sum(g.size - 1 for g in groups.values())
    if within_df > 0:
        resid = np.concatenate(
            [(g - g.mean()) / math.sqrt(1 - 1 / g.size) for g in groups.values() if g.size > 1]
        )
        pooled_sd = float(np.median(np.abs(resid))) * MAD_SCALE or float(np.std(resid))
        pooled_df = mad_df(within_df + 1)
    else:
        pooled_sd, pooled_df = mad_sd(d), mad_df(d.size)
    out = []
    for name, g in groups.items():
        mean = float(g.mean())
        sd, df = pooled_sd, pooled_df
        own = float(np.std(g, ddof=1)) if g.size >= 2 else 0.0
        if own > pooled_sd:
            sd, df = own, float(g.size - 1)
        if d.size < 2:
            lo = hi = None
        else:
            half = t_quantile(1 - alpha / 2, df) * sd / math.sqrt(g.size)
            lo, hi = bounded_exp(mean - half), bounded_exp(mean + half)
        # a prompt asked once in a run of several rounds: a stall and an effect look alike
        position = _position(lo, hi, min_effect) if g.size > 1 or single_round else "unclear"
        out.append(PromptEffect(name, math.exp(mean), lo, hi, int(g.size), position))
    return tuple(out)


def _span(effects: Sequence[PromptEffect]) -> str:
    lo, hi = min(e.ratio for e in effects), max(e.ratio for e in effects)
    return f"{lo:.2f}x" if f"{lo:.2f}" == f"{hi:.2f}" else f"{lo:.2f}-{hi:.2f}x"


def _names(effects: Sequence[PromptEffect], limit: int = 5) -> str:
    shown = [e.prompt for e in effects[:limit]]
    more = len(effects) - len(shown)
    return ", ".join(shown) + (f", +{more} more" if more else "")


def split_words(prompts: Sequence[PromptEffect]) -> str | None:
    """The split of per-prompt effects in words, when some prompt lies confidently outside
    the band and the others do not all go with it: "2 of 10 prompts at 0.44-0.49x
    (long_explain, code_small), the others unchanged". None when no prompt lies outside, or
    every prompt on the same side (a uniform effect, which the ratio alone says)."""
    below = [p for p in prompts if p.position == "below"]
    above = [p for p in prompts if p.position == "above"]
    if not below and not above:
        return None
    if len(below) == len(prompts) or len(above) == len(prompts):
        return None
    n = len(prompts)
    parts = [
        f"{len(group)} of {n} prompts at {_span(group)} ({_names(group)})"
        for group in (below, above)
        if group
    ]
    rest = [p for p in prompts if p.position not in ("below", "above")]
    if rest:
        if all(p.position == "within" for p in rest):
            parts.append(f"the others unchanged ({_span(rest)})")
        else:
            parts.append(f"the others at {_span(rest)}")
    return ", ".join(parts)
