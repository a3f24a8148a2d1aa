"""Simulation evidence for the paired, pooled verdicts (docs/statistics.md quotes these numbers).

Interleaved experiments at the level of ``servelab.stats.paired``: every round asks both arms
the same ``PROMPTS`` prompts, one request per arm and prompt, so each round carries one ``Pair``
per prompt. The decode rate of a request is

    speed[prompt] x effect[prompt] (candidate only) x drift[round] x start[arm, round]
        x slow[arm, round] x noise[request]

- ``speed``: the prompts' own decode speeds (lognormal around 100 tok/s, sd 0.25; a long prompt
  decodes slower), fixed with the workload;
- ``drift``: the machine's state during a round, shared by both arms (lognormal, sd 0.15);
- ``start``: each block is a fresh engine start, which settles at its own speed (lognormal per
  (arm, round), sd ``start_sd``: 0.03 in most scenarios, 0.12 in the per-start scenario, the
  spread of starts measured on this 2-core machine, docs/experiments.md);
- ``slow``: one block in twenty 2x slow (independently per arm and round: it does not cancel);
- ``noise``: per request (lognormal, sd 0.08).

Each prompt generates a fixed number of tokens (64-300, same in both arms), the pooling weight.
Runs are sequential as the runner does them: a look after every round from ``MIN_ROUNDS`` to
``MAX_ROUNDS`` at ``plan_looks(...).confidence_at(n)``, stop at the first look whose verdict is
decided (better, worse or no_difference), else the last look's verdict. Verdicts are
``compare_pairs(..., statistic="pooled")`` (prompts fixed: the verdict is about the workload as
written) and ``decide_paired``; the truth is the pooled ratio of the noise-free model,
Σ tokens / Σ (tokens / rate), candidate over baseline.

Each scenario names its false verdicts (the issue: ``better`` or ``worse`` when the arms are
identical, the wrong direction, or ``no_difference`` when the true pooled effect lies outside
the band [1/1.03, 1.03]). ``inconclusive`` is never false: it claims nothing.

- ``a_a``: identical arms (truth 1). False: better, worse.
- ``a_a_starts``: identical arms, engine starts spread 4x wider (sd 0.12). False: better, worse.
- ``faster_10``: every prompt 1.10x (truth 1.10, outside the band). False: worse, no_difference.
- ``two_slow``: 2 of 10 prompts at 0.45x, the others unchanged (truth ~0.8; the issue's
  draft-model case). False: better, no_difference.
- ``bimodal``: half the prompts 0.9x, half 1.0x (truth ~0.95, outside the band). False:
  better, no_difference.
- ``small_1``: every prompt 1.01x, inside the band. ``no_difference`` is right and ``better``
  names the right direction of a real effect; false: worse only.
- ``edge_4``: every prompt 0.96x, just outside the band: the hardest case for a false
  ``no_difference``. False: better, no_difference.

1000 seeds per scenario (the issue's minimum). The share of false verdicts is asserted <= 5 %
as a point estimate, no binomial allowance. The bootstrap uses 400 resamples (2000 by default);
the interval reads the bootstrap's 10th and 90th percentiles, which 400 resamples estimate well.
``python tests/unit/test_paired_simulation.py`` prints the table docs/statistics.md quotes.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np
import pytest
from numpy.typing import NDArray

from servelab.stats.compare import Verdict
from servelab.stats.paired import Cell, Pair, compare_pairs, decide_paired
from servelab.stats.sequential import plan_looks

SEEDS = 1000
RESAMPLES = 400
PROMPTS = 10
MIN_ROUNDS, MAX_ROUNDS = 3, 8
MIN_EFFECT = 0.03
BAND = (1 / (1 + MIN_EFFECT), 1 + MIN_EFFECT)


@dataclass(frozen=True, slots=True)
class Machine:
    """Log-scale spreads of the model in the module docstring."""

    drift_sd: float = 0.15
    start_sd: float = 0.03
    noise_sd: float = 0.08
    slow_p: float = 0.05


@dataclass(frozen=True, slots=True)
class Workload:
    """The prompts as written: each one's decode speed (tok/s) and tokens generated."""

    speed: NDArray[np.float64]
    tokens: NDArray[np.float64]

    @classmethod
    def make(cls, n_prompts: int = PROMPTS, seed: int = 12) -> Workload:
        rng = np.random.default_rng(seed)
        speed = 100.0 * np.exp(rng.normal(0.0, 0.25, n_prompts))
        return cls(speed, rng.integers(64, 301, n_prompts).astype(float))

    def pooled(self, effect: NDArray[np.float64]) -> float:
        """True candidate / baseline pooled rate (Σ tokens / Σ time) of per-prompt effects."""
        base = self.tokens.sum() / (self.tokens / self.speed).sum()
        return float(self.tokens.sum() / (self.tokens / (self.speed * effect)).sum() / base)


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    effect: tuple[float, ...]  # per prompt, candidate / baseline
    false: frozenset[Verdict]
    machine: Machine = Machine()


def _effect(slow: int, factor: float, n: int = PROMPTS) -> tuple[float, ...]:
    """``slow`` prompts (the first ones) at ``factor``, the others unchanged."""
    return tuple([factor] * slow + [1.0] * (n - slow))


SCENARIOS = (
    Scenario("a_a", _effect(0, 1.0), frozenset({"better", "worse"})),
    Scenario("a_a_starts", _effect(0, 1.0), frozenset({"better", "worse"}), Machine(start_sd=0.12)),
    Scenario("faster_10", _effect(PROMPTS, 1.10), frozenset({"worse", "no_difference"})),
    Scenario("two_slow", _effect(2, 0.45), frozenset({"better", "no_difference"})),
    Scenario("bimodal", _effect(PROMPTS // 2, 0.9), frozenset({"better", "no_difference"})),
    Scenario("small_1", _effect(PROMPTS, 1.01), frozenset({"worse"})),
    Scenario("edge_4", _effect(PROMPTS, 0.96), frozenset({"better", "no_difference"})),
)
BY_NAME = {s.name: s for s in SCENARIOS}
WORKLOAD = Workload.make()


def rates(
    rng: np.random.Generator,
    workload: Workload,
    effect: Sequence[float],
    machine: Machine,
    n_rounds: int,
) -> NDArray[np.float64]:
    """Decode tok/s of every request, shape (rounds, prompts, arm) with arm 0 the baseline."""
    n_prompts = workload.speed.size
    drift = rng.normal(0.0, machine.drift_sd, (n_rounds, 1, 1))
    start = rng.normal(0.0, machine.start_sd, (n_rounds, 1, 2))
    slow = np.log(2) * (rng.random((n_rounds, 1, 2)) < machine.slow_p)
    noise = rng.normal(0.0, machine.noise_sd, (n_rounds, n_prompts, 2))
    level = np.stack([workload.speed, workload.speed * np.asarray(effect)], axis=-1)
    return np.asarray(level[None] * np.exp(drift + start - slow + noise))


def pairs_of(r: NDArray[np.float64], tokens: NDArray[np.float64]) -> list[Pair]:
    """One Pair per (round, prompt), one request per arm, weighted by its tokens."""
    return [
        Pair(
            i,
            f"p{p}",
            Cell((float(r[i, p, 0]),), (float(tokens[p]),)),
            Cell((float(r[i, p, 1]),), (float(tokens[p]),)),
        )
        for i in range(r.shape[0])
        for p in range(r.shape[1])
    ]


@dataclass(frozen=True, slots=True)
class Outcome:
    verdict: Verdict
    rounds: int  # rounds done when the run stopped
    below: frozenset[str]  # prompts whose paired effect lies confidently below the band


def sequential(
    seed: int,
    effect: Sequence[float],
    machine: Machine = Machine(),
    workload: Workload = WORKLOAD,
    min_rounds: int = MIN_ROUNDS,
    max_rounds: int = MAX_ROUNDS,
) -> Outcome:
    """One run: look after every round, stop at the first decided verdict."""
    rng = np.random.default_rng(seed)
    pairs = pairs_of(rates(rng, workload, effect, machine, max_rounds), workload.tokens)
    plan = plan_looks(min_rounds, max_rounds)
    n_prompts = workload.speed.size
    for n in plan.looks:
        c = compare_pairs(
            pairs[: n * n_prompts],
            "pooled",
            rng=rng,
            confidence=plan.confidence_at(n),
            n_resamples=RESAMPLES,
            min_effect=MIN_EFFECT,
        )
        verdict = decide_paired(c, lower_is_better=False, min_effect=MIN_EFFECT).verdict
        if verdict != "inconclusive" or n == plan.looks[-1]:
            below = frozenset(p.prompt for p in c.prompts if p.position == "below")
            return Outcome(verdict, n, below)
    raise AssertionError("unreachable: a plan has at least one look")


@cache
def outcomes(name: str) -> tuple[Outcome, ...]:
    s = BY_NAME[name]
    offset = 100_000 * SCENARIOS.index(s)
    return tuple(sequential(offset + seed, s.effect, s.machine) for seed in range(SEEDS))


def false_share(name: str) -> float:
    false = BY_NAME[name].false
    return sum(o.verdict in false for o in outcomes(name)) / SEEDS


def test_the_scenarios_truths_lie_where_their_false_sets_assume() -> None:
    truth = {s.name: WORKLOAD.pooled(np.asarray(s.effect)) for s in SCENARIOS}
    assert truth["a_a"] == pytest.approx(1.0)
    assert truth["faster_10"] == pytest.approx(1.10)
    assert 0.75 < truth["two_slow"] < 0.85  # the draft-model arm: pooled 0.81x
    assert truth["bimodal"] < BAND[0] and truth["edge_4"] < BAND[0]
    assert BAND[0] < truth["small_1"] < BAND[1]


@pytest.mark.parametrize("name", [s.name for s in SCENARIOS])
def test_false_verdicts_at_most_5_percent(name: str) -> None:
    counts = Counter(o.verdict for o in outcomes(name))
    assert false_share(name) <= 0.05, (name, dict(counts))


def test_a_true_10_percent_speedup_is_decided_better_in_most_runs() -> None:
    results = outcomes("faster_10")
    better = [o for o in results if o.verdict == "better"]
    # 58 %: 398 of the 417 runs left undecided held a 2x slow block (P = 1 - 0.95^16 = 56 %
    # over 8 rounds and two arms); on the same machine without them the effect is decided in
    # nearly every run (benchmarks/time_to_verdict.py)
    assert len(better) / SEEDS >= 0.50
    # and decided runs stop early on average
    assert np.mean([o.rounds for o in better]) < MAX_ROUNDS


def test_the_two_slow_prompts_are_named_when_the_verdict_is_worse() -> None:
    """``worse`` with the two slowed prompts (p0, p1) found below the band, and never another
    one (564 of 804 name both, 209 one of the two, 31 neither: the per-prompt intervals are
    simultaneous over the ten prompts, which at the early looks that decide costs a name, not
    a false one)."""
    worse = [o for o in outcomes("two_slow") if o.verdict == "worse"]
    assert len(worse) / SEEDS >= 0.70  # 80 %
    exact = sum(o.below == frozenset({"p0", "p1"}) for o in worse)
    assert exact / len(worse) >= 0.65  # 70 %
    assert sum(bool(o.below) for o in worse) / len(worse) >= 0.95  # 96 %
    assert all(o.below <= {"p0", "p1"} for o in worse)


def table() -> str:
    """The table docs/statistics.md quotes (one row per scenario)."""
    lines = [
        "| scenario | true pooled | better | worse | no_difference | inconclusive | false "
        "| mean rounds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in SCENARIOS:
        res = outcomes(s.name)
        c = Counter(o.verdict for o in res)
        share = [
            f"{100 * c[v] / SEEDS:.1f} %"
            for v in ("better", "worse", "no_difference", "inconclusive")
        ]
        truth = WORKLOAD.pooled(np.asarray(s.effect))
        rounds = np.mean([o.rounds for o in res])
        lines.append(
            f"| {s.name} | {truth:.3f} | {' | '.join(share)} | "
            f"{100 * false_share(s.name):.1f} % | {rounds:.1f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    t0 = time.perf_counter()
    print(table())
    print(f"{SEEDS} seeds per scenario, {time.perf_counter() - t0:.0f} s")
