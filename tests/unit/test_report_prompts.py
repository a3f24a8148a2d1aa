"""Comparisons in the report: the decision statistic, medians beside it, the method, the split
across prompts in words, and the per-prompt plot of paired ratios.

Synthetic ``Comparison`` records with per-prompt effects (the records of docs/summary-json.md);
no analysis runs here, the report only renders what it is given.
"""

from __future__ import annotations

import base64
import dataclasses
import re

import numpy as np
import pytest
from matplotlib.lines import Line2D

from servelab.report.comparison_view import (
    MAX_PROMPT_PLOTS,
    comparison_phrase,
    comparison_table,
    prompt_plot_comparisons,
)
from servelab.report.html import render_html
from servelab.report.markdown import render_markdown
from servelab.report.plots import MAX_PROMPT_ROWS, prompt_figure, report_plots, to_png
from servelab.stats.prompt_effects import PromptEffect
from servelab.store import Manifest
from servelab.store.summary import ArmSummary, Comparison, Stopping, Summary

EVIL_ID = "<img src=x onerror=alert(1)>$x$"
SPLIT = f"2 of 10 prompts at 0.44-0.49x (long_explain, {EVIL_ID}), the others unchanged"
PNG = b"\x89PNG\r\n\x1a\n"


def _effects(n_within: int = 8, evil: bool = True) -> tuple[PromptEffect, ...]:
    within = [PromptEffect(f"p{i}", 1.0 + 0.001 * i, 0.99, 1.01 + 0.001 * i, 5, "within")
              for i in range(n_within)]  # fmt: skip
    second = EVIL_ID if evil else "code_small"
    slow = [PromptEffect("long_explain", 0.44, 0.40, 0.48, 5, "below"),
            PromptEffect(second, 0.49, 0.45, 0.53, 5, "below")]  # fmt: skip
    return (*slow, *within)


def _comparison(**kw: object) -> Comparison:
    base = dict(
        metric="decode_tps", baseline="baseline", candidate="draft", concurrency=1,
        statistic="pooled", lower_is_better=False, ratio=0.81, ci_low=0.75, ci_high=0.86,
        ratio_mean=0.892, ci_low_mean=0.85, ci_high_mean=0.93, verdict="worse",
        min_effect=0.03, n_blocks=5, blocks_needed=None, paired=True, confidence_level=0.95,
        ci_width=0.11, n_blocks_baseline=5, n_blocks_candidate=5, summary="",
        ratio_median=1.0, method="rounds", n_pairs=50, prompts=_effects(), heterogeneity=SPLIT,
    )  # fmt: skip
    base.update(kw)
    return Comparison(**base)  # type: ignore[arg-type]


def _arm() -> ArmSummary:
    return ArmSummary(n_ok=50, n_failed=0, n_warmup=0, failures={}, finish_reasons={},
                      n_out_fallback=0, itl_unverified=0, invalid_utf8_requests=0,
                      metrics={})  # fmt: skip


def _summary(*comparisons: Comparison) -> Summary:
    stopping = Stopping("fixed size: one analysis at the end", False, None, 0.05, None, None,
                        None, 0, 5, 0.95, False, None)  # fmt: skip
    arms = {"baseline": _arm(), "draft": _arm(), "ngram": _arm()}
    return Summary(schema_version=1, kind="import", run_id="matrix", baseline="baseline",
                   decision_metrics=("decode_tps", "ttft_s"), interleaved=True, confidence=0.95,
                   seed=0, n_resamples=200, arms=arms, comparisons=comparisons, proportions=(),
                   sweep={}, stopping=stopping)  # fmt: skip


@pytest.fixture(scope="module")
def split_run() -> Summary:
    return _summary(
        _comparison(),
        _comparison(
            statistic="median",
            ratio=1.0,
            ci_low=0.995,
            ci_high=1.002,
            verdict="inconclusive",
            prompts=_effects()[:1] + _effects(n_within=9)[3:],
        ),
        _comparison(
            metric="ttft_s",
            statistic="mean",
            lower_is_better=True,
            ratio=1.01,
            ci_low=0.99,
            ci_high=1.02,
            ratio_median=1.0,
            verdict="no_difference",
            prompts=_effects(evil=False)[2:],
            heterogeneity=None,
        ),
        _comparison(
            candidate="ngram",
            ratio=0.82,
            prompts=_effects(evil=False)[2:],
            heterogeneity=None,
            method="prompt_noise",
        ),
    )


@pytest.fixture(scope="module")
def split_html(split_run: Summary) -> str:
    return render_html(split_run, Manifest(kind="import"), [])


# --- the table -------------------------------------------------------------------------------


def test_the_table_names_the_statistic_and_keeps_the_medians(split_run: Summary) -> None:
    md = render_markdown(split_run, Manifest(kind="import"))
    header = next(line for line in md.splitlines() if line.startswith("| metric (statistic)"))
    assert "| ratio | 95 % CI | ratio (medians) | ratio (means) | verdict |" in header
    row = next(line for line in md.splitlines() if line.startswith("| decode_tps (pooled) |"))
    assert "| 0.810 | 0.750-0.860 | 1.000 | 0.892 | worse (2 of 10 prompts at 0.44-0.49x" in row
    assert "| paired: rounds | 5 (50 pairs) |" in row
    assert any(line.startswith("| decode_tps (median) |") for line in md.splitlines())
    assert any(line.startswith("| ttft_s (mean) |") for line in md.splitlines())


def test_the_method_is_said_under_the_table(split_run: Summary) -> None:
    md = render_markdown(split_run, Manifest(kind="import"))
    assert 'Method "paired: rounds": paired by round and prompt, rounds resampled' in md
    assert 'Method "paired: prompt noise": one round only' in md
    assert md.count('Method "paired: rounds":') == 1  # one line per method, not per comparison
    assert "pooled rates (total tokens / total time" in md  # the lead says what is compared


def test_a_summary_from_before_the_paired_analysis_keeps_its_medians() -> None:
    old = _comparison(statistic="median", ratio=1.18, ci_low=1.09, ci_high=1.27, verdict="better",
                      ratio_median=None, method=None, n_pairs=None, prompts=None,
                      heterogeneity=None)  # fmt: skip
    row = comparison_table(_summary(old)).rows[0]
    assert row[0] == "decode_tps (median)" and row[4] == row[6] == "1.180"
    assert row[10] == "blocks (rounds)" and row[11] == "5"
    assert prompt_plot_comparisons([old]) == []
    unpaired = dataclasses.replace(old, paired=False, statistic="pooled")
    assert comparison_table(_summary(unpaired)).rows[0][6] == "-"  # no median ratio recorded


def test_the_words_follow_the_numbers_when_the_analysis_gave_none() -> None:
    assert comparison_phrase(_comparison()) == (
        f"decode pooled 1.23x slower (ratio 0.81) (95 % CI 0.75-0.86): {SPLIT}"
    )
    assert comparison_phrase(_comparison(summary="their words")) == "their words"


def test_a_reference_other_than_the_baseline_is_named(split_run: Summary) -> None:
    own = _comparison(baseline="baseline-1000tok", candidate="ngram")
    md = render_markdown(_summary(own), Manifest(kind="import"))
    assert "- **ngram against baseline-1000tok**: decode pooled" in md
    assert "its reference arm (the baseline baseline unless named)" in md


# --- HTML ------------------------------------------------------------------------------------


def test_heterogeneity_words_sit_under_the_verdict_escaped(split_html: str) -> None:
    escaped = SPLIT.replace("<", "&lt;").replace(">", "&gt;")
    assert f"<td>worse<br>({escaped})</td>" in split_html
    assert EVIL_ID not in split_html
    assert "<img src=x" not in split_html


def test_per_prompt_plots_are_embedded_with_escaped_ids(split_html: str) -> None:
    verdicts = split_html.split('<section id="verdicts">', 1)[1].split("</section>", 1)[0]
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)" alt="([^"]*)"',
                        verdicts)  # fmt: skip
    alts = [alt for _, alt in images]
    assert len(images) == 1 + 3  # the forest; decode pooled and median split; ngram's first
    assert all(base64.b64decode(b).startswith(PNG) for b, _ in images)
    assert "2 of 10 prompts confidently outside the no-difference band" in alts[1]
    assert "&lt;img src=x onerror=alert(1)&gt;$x$" in alts[1]
    assert "Per-prompt paired ratios (plots in report.html)" in verdicts


# --- the per-prompt plot ---------------------------------------------------------------------


def test_the_plot_has_a_row_per_prompt_sorted_by_ratio() -> None:
    c = _comparison()
    fig = prompt_figure(c, "95 % CI")
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert sorted(labels) == sorted(p.prompt for p in c.prompts or ())
    assert labels[-1] == "long_explain" and labels[-2] == EVIL_ID  # slowest at the top
    assert ax.get_xscale() == "log"
    assert "1" in [t.get_text() for t in ax.get_xticklabels()]
    assert to_png(fig).startswith(PNG)  # ids with $ and < are drawn literally


def _xy(line: Line2D) -> tuple[list[float], list[float]]:
    return list(np.asarray(line.get_xdata(), float)), list(np.asarray(line.get_ydata(), float))


def test_the_plot_shades_the_band_and_marks_one_and_the_ratio() -> None:
    ax = prompt_figure(_comparison(), "95 % CI").axes[0]
    lines = [_xy(line) for line in ax.get_lines() if line.get_linestyle() in ("-", "--")]
    vlines = [xs[0] for xs, _ in lines if len(set(xs)) == 1]
    assert 0.81 in vlines and 1.0 in vlines
    (band,) = ax.patches
    x0, x1 = band.get_x(), band.get_x() + band.get_width()  # type: ignore[attr-defined]
    assert x0 == pytest.approx(1 / 1.03) and x1 == pytest.approx(1.03)


def test_a_prompt_without_an_interval_has_no_whisker() -> None:
    one_round = tuple(dataclasses.replace(p, ci_low=None, ci_high=None, n_rounds=1,
                                          position="unclear") for p in _effects())  # fmt: skip
    ax = prompt_figure(_comparison(prompts=one_round), "95 % CI").axes[0]
    lines = [_xy(line) for line in ax.get_lines()]
    whiskers = [xs for xs, ys in lines if len(xs) == 2 and ys[0] == ys[1] and xs[0] != xs[1]]
    assert whiskers == []
    assert len(ax.get_yticklabels()) == len(one_round)


def test_many_prompts_keep_the_plot_bounded() -> None:
    many = _effects(n_within=100)
    ax = prompt_figure(_comparison(prompts=many), "95 % CI").axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert len(labels) == MAX_PROMPT_ROWS
    assert {"long_explain", EVIL_ID} <= set(labels)  # those outside the band are always kept
    assert f"{MAX_PROMPT_ROWS} of {len(many)} prompts" in ax.get_title()


def test_which_comparisons_get_a_plot(split_run: Summary) -> None:
    chosen = prompt_plot_comparisons(split_run.comparisons)
    assert [(c.candidate, c.metric, c.statistic) for c in chosen] == [
        ("draft", "decode_tps", "pooled"), ("draft", "decode_tps", "median"),
        ("ngram", "decode_tps", "pooled"),
    ]  # fmt: skip


def test_every_split_arm_is_plotted_before_a_second_metric_of_one_arm() -> None:
    e2e = _effects(n_within=7)
    arms = [
        c for i in range(10) for c in (
            _comparison(candidate=f"arm{i}"),
            _comparison(candidate=f"arm{i}", metric="e2e_s", statistic="mean", prompts=e2e),
            _comparison(candidate=f"arm{i}", metric="e2e_s", statistic="p90", prompts=e2e),
        )
    ]  # fmt: skip
    calm = _comparison(candidate="calm", prompts=_effects()[2:], heterogeneity=None)
    chosen = prompt_plot_comparisons([*arms, calm])
    assert len(chosen) == MAX_PROMPT_PLOTS
    assert [c.candidate for c in chosen if c.metric == "decode_tps"] == [
        f"arm{i}" for i in range(10)
    ]
    assert [(c.candidate, c.statistic) for c in chosen if c.metric == "e2e_s"] == [
        ("arm0", "mean"),
        ("arm1", "mean"),
    ]  # the p90 shares the mean's per-prompt effects: drawn once
    summary = _summary(*arms, calm)
    assert [p.kind for p in report_plots(summary, [])].count("prompts") == MAX_PROMPT_PLOTS
    md = render_markdown(summary, Manifest(kind="import"))
    assert f"at most {MAX_PROMPT_PLOTS}" in md and "; 9 more are not plotted." in md


def test_a_calm_candidate_still_gets_its_first_plot() -> None:
    calm = _comparison(prompts=_effects()[2:], heterogeneity=None, verdict="no_difference")
    later = _comparison(metric="ttft_s", statistic="mean", prompts=_effects()[2:])
    assert prompt_plot_comparisons([calm, later]) == [calm]
