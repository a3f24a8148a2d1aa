"""Tests for stats.paired: pooled rates, paired (round, prompt) comparisons, per-prompt effects,
the veto on no_difference and the words for a split; and the spec's choice of statistics."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from servelab.metrics import decision_statistics, default_statistics, pooled_weight
from servelab.stats import compare as c
from servelab.stats.paired import (
    Cell,
    Pair,
    arm_statistic,
    compare_pairs,
    compare_unpaired,
    decide_paired,
    heterogeneity_words,
    prompt_effects,
)

MATRIX = (
    Path(__file__).parents[1] / "fixtures" / "reference"
    / "qwen3.6-speculative-decoding-rtx3090" / "analysis" / "summary.csv"
)  # fmt: skip


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def matrix_pairs(candidate: str) -> list[Pair]:
    """One pass through ten prompts per configuration (round 0), paired by prompt."""
    with MATRIX.open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))

    def cells(config: str) -> dict[str, Cell]:
        return {
            r["prompt"]: Cell.of([float(r["tok_s"])], [float(r["predicted_n"])])
            for r in rows
            if r["config"] == config
        }

    base, cand = cells("baseline"), cells(candidate)
    return [Pair(0, p, base[p], cand[p]) for p in base]


# ---------------------------------------------------------------------------- statistics


def test_pooled_is_tokens_over_time_not_the_mean_of_rates() -> None:
    # 100 tokens in 1 s and 100 tokens in 3 s: 200 tokens in 4 s
    assert arm_statistic([100.0, 100 / 3], [100.0, 100.0], "pooled") == pytest.approx(50.0)
    assert arm_statistic([100.0, 100 / 3], [100.0, 100.0], "mean") == pytest.approx(200 / 3)
    # without token weights pooling weighs requests alike: the harmonic mean
    assert arm_statistic([100.0, 25.0], None, "pooled") == pytest.approx(40.0)


def test_pooled_weight_counts_the_tokens_the_rate_counts() -> None:
    assert pooled_weight("decode_tps", {"n_out": 65}) == 64.0
    assert pooled_weight("e2e_tps", {"n_out": 65}) == 65.0
    assert pooled_weight("decode_tps", {"n_out": None}) == 1.0
    assert pooled_weight("decode_tps", {"n_out": 1}) == 1.0  # no decode tokens: no weight
    assert pooled_weight("ttft_s", {"n_out": 65}) == 1.0


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.lists(st.floats(0.01, 1e3, allow_nan=False), min_size=1, max_size=5),
        min_size=1,
        max_size=6,
    ),
    st.sampled_from([0.5, 0.9, 0.99]),
    st.integers(0, 2**32 - 1),
)
def test_weighted_quantile_equals_numpys_quantile_of_the_pooled_resample(
    blocks: list[list[float]], q: float, seed: int
) -> None:
    values = np.concatenate([np.asarray(b) for b in blocks])
    unit_of = np.repeat(np.arange(len(blocks)), [len(b) for b in blocks])
    order = np.argsort(values, kind="stable")
    counts = c.counts_matrix(rng(seed), len(blocks), 15)
    got = c.weighted_quantiles(values[order], unit_of[order], counts, q)
    for row, value in zip(counts, got, strict=True):
        pooled = np.concatenate([np.repeat(blocks[i], k) for i, k in enumerate(row) if k])
        assert value == pytest.approx(np.quantile(pooled, q))


# ---------------------------------------------------------------------------- the matrix


def test_the_draft_model_arm_is_worse_pooled_and_the_two_slow_prompts_are_named() -> None:
    r = compare_pairs(matrix_pairs("draft-q35-08b-max8"), "pooled", rng=rng())
    d = decide_paired(r, lower_is_better=False, min_effect=0.03)
    assert d.verdict == "worse" and r.method == "prompt_noise"
    assert r.ratio == pytest.approx(0.8096, abs=5e-4)  # Σ tokens / Σ decode time, -19 %
    assert r.ci_high is not None and r.ci_high < 1
    assert r.ratio_median == pytest.approx(0.9997, abs=5e-4)  # what the median said
    slow = [p.prompt for p in r.prompts if p.position == "below"]
    assert slow == ["long_explain", "code_small"]
    words = heterogeneity_words(r)
    assert words is not None and words.startswith(
        "2 of 10 prompts at 0.44-0.49x (long_explain, code_small), the others unchanged"
    )


def test_a_rerun_of_the_baseline_is_no_difference() -> None:
    r = compare_pairs(matrix_pairs("baseline-rerun"), "pooled", rng=rng())
    assert decide_paired(r, lower_is_better=False, min_effect=0.03).verdict == "no_difference"
    assert heterogeneity_words(r) is None


def test_sampled_prompts_widen_the_interval_of_a_split_effect() -> None:
    """Resampling the prompts asks whether prompts like these would slow down: with 2 of 10
    slow, a resample may hold none of them, so the question stays open."""
    pairs = matrix_pairs("draft-q35-08b-max8")
    fixed = compare_pairs(pairs, "pooled", rng=rng())
    sampled = compare_pairs(pairs, "pooled", rng=rng(), prompts="sampled")
    assert sampled.method == "rounds_prompts"
    assert sampled.ci_low is not None and sampled.ci_high is not None
    assert fixed.ci_low is not None and fixed.ci_high is not None
    assert sampled.ci_high - sampled.ci_low > 10 * (fixed.ci_high - fixed.ci_low)
    assert decide_paired(sampled, lower_is_better=False, min_effect=0.03).verdict == "inconclusive"


# ---------------------------------------------------------------------------- rounds


def rounds_pairs(
    n_rounds: int, effects: list[float], noise: float = 0.01, seed: int = 1
) -> list[Pair]:
    """Each round asks every prompt once; prompt p of the candidate runs effects[p] as fast."""
    gen = rng(seed)
    out = []
    for r in range(n_rounds):
        for p, effect in enumerate(effects):
            speed = 100.0 * (1 + p / 10)
            b = speed * math.exp(gen.normal(0, noise))
            cand = speed * effect * math.exp(gen.normal(0, noise))
            out.append(Pair(r, f"p{p}", Cell.of([b], [128.0]), Cell.of([cand], [128.0])))
    return out


def test_rounds_are_resampled_and_a_uniform_effect_has_no_split() -> None:
    r = compare_pairs(rounds_pairs(6, [1.2] * 5), "pooled", rng=rng())
    assert r.method == "rounds" and r.n_rounds == 6 and r.n_pairs == 30 and r.df == 5
    assert decide_paired(r, lower_is_better=False, min_effect=0.03).verdict == "better"
    assert all(p.position == "above" for p in r.prompts)
    assert heterogeneity_words(r) is None  # every prompt moved together: the ratio says it


def test_no_difference_is_impossible_while_a_prompt_lies_outside_the_band() -> None:
    """Nine prompts unchanged and one 10 % slower: the pooled ratio (about 0.99) sits well
    inside the ±3 % band, but that prompt's own effect does not."""
    effects = [1.0] * 9 + [0.9]
    r = compare_pairs(rounds_pairs(8, effects, noise=0.004), "pooled", rng=rng())
    assert r.ci_low is not None and r.ci_high is not None
    plain = c.decide(r.interval, lower_is_better=False, min_effect=0.03, n_blocks=r.n_rounds)
    assert plain.verdict == "no_difference"  # what the interval alone would say
    d = decide_paired(r, lower_is_better=False, min_effect=0.03)
    assert d.verdict in ("worse", "inconclusive") and d.verdict != "no_difference"
    assert [p.prompt for p in r.prompts if p.position == "below"] == ["p9"]
    assert heterogeneity_words(r) == "1 of 10 prompts at 0.90x (p9), the others unchanged (1.00x)"


def test_a_stall_in_one_round_does_not_make_its_prompt_look_different() -> None:
    pairs = rounds_pairs(6, [1.0] * 6, noise=0.01)
    stalled = pairs[0]
    pairs[0] = Pair(stalled.round, stalled.prompt, Cell.of([1.0], [128.0]), stalled.candidate)
    r = compare_pairs(pairs, "pooled", rng=rng())
    assert all(p.position != "above" for p in r.prompts)
    assert heterogeneity_words(r) is None


def test_quantile_statistics_and_the_mean_are_reported() -> None:
    r = compare_pairs(rounds_pairs(5, [1.1] * 4), "p90", rng=rng())
    assert r.statistic == "p90" and r.ratio == pytest.approx(1.1, rel=0.05)
    assert r.ratio_mean == pytest.approx(1.1, rel=0.05)
    assert r.ci_low_mean is not None and r.ci_low_mean < r.ratio_mean < (r.ci_high_mean or 0)


def test_unpaired_blocks_are_resampled_per_arm() -> None:
    gen = rng(3)
    base = [Cell.of(list(100 * np.exp(gen.normal(0, 0.05, 6)))) for _ in range(5)]
    cand = [Cell.of(list(80 * np.exp(gen.normal(0, 0.05, 6)))) for _ in range(4)]
    r = compare_unpaired(base, cand, "mean", rng=rng())
    assert (r.method, r.paired, r.n_blocks_baseline, r.n_blocks_candidate) == (
        "blocks_unpaired", False, 5, 4,
    )  # fmt: skip
    assert r.ci_high is not None and r.ci_high < 1 and r.prompts == ()


def test_bad_input_names_the_problem() -> None:
    pairs = rounds_pairs(3, [1.0, 1.0])
    with pytest.raises(ValueError, match="unknown statistic 'p50'"):
        compare_pairs(pairs, "p50", rng=rng())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown prompts mode"):
        compare_pairs(pairs, "mean", rng=rng(), prompts="all")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no pairs"):
        compare_pairs([], "mean", rng=rng())


# ---------------------------------------------------------------------------- the spec's choice


def test_decision_statistics_from_a_list_or_a_mapping() -> None:
    assert default_statistics("decode_tps") == ("pooled",)
    assert default_statistics("ttft_s") == ("mean", "p90")
    assert decision_statistics(["decode_tps", "ttft_s"]) == (
        ("decode_tps", "pooled"), ("ttft_s", "mean"), ("ttft_s", "p90"),
    )  # fmt: skip
    assert decision_statistics({"decode_tps": "pooled", "ttft_s": ["median", "p90"]}) == (
        ("decode_tps", "pooled"), ("ttft_s", "median"), ("ttft_s", "p90"),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("metrics", "message"),
    [
        ({"ttft_s": "pooled"}, "ttft_s: pooled is for rates"),
        ({"decode_tps": "p50"}, "decode_tps: unknown statistic 'p50'"),
        (["speed"], "unknown metric 'speed'"),
        ({}, "name at least one metric"),
    ],
)
def test_a_bad_choice_of_statistics_is_one_line(metrics: object, message: str) -> None:
    with pytest.raises(ValueError, match=message) as err:
        decision_statistics(metrics)  # type: ignore[arg-type]
    assert "\n" not in str(err.value)


def test_a_very_early_look_with_a_stalled_prompt_stays_finite() -> None:
    """The first look of plan_looks(3, 12) is at 99.99x %: with a prompt asked in two rounds,
    one of them 2x slow, its own t quantile (df 1) asks for exp of more than 709."""
    pairs = [
        Pair(0, "p0", Cell.of([100.0], [100.0]), Cell.of([100.0], [100.0])),
        Pair(1, "p1", Cell.of([100.0], [100.0]), Cell.of([101.0], [100.0])),
        Pair(2, "p0", Cell.of([100.0], [100.0]), Cell.of([50.0], [100.0])),
    ]
    r = compare_pairs(pairs, "pooled", rng=rng(), confidence=0.99997)
    assert all(math.isfinite(p.ci_high or 0) and (p.ci_low or 0) >= 0 for p in r.prompts)
    assert r.ci_high is not None and math.isfinite(r.ci_high)


def test_prompt_intervals_are_simultaneous_over_the_prompts() -> None:
    """Ten prompts, no effect, noisy requests: each prompt at a plain 95 % puts some prompt
    outside the band in about one run in ten; simultaneous 95 % (each at 99.5 %) almost never.
    (``confidence=0.5`` over ten prompts is the plain 95 % per prompt.)"""
    flagged = {0.95: 0, 0.5: 0}
    for seed in range(100):
        pairs = rounds_pairs(4, [1.0] * 10, noise=0.3, seed=seed)
        for level in flagged:
            effects = prompt_effects(pairs, "pooled", confidence=level, min_effect=0.03)
            flagged[level] += any(p.position in ("below", "above") for p in effects)
    assert flagged[0.95] <= 2 < 5 <= flagged[0.5]
