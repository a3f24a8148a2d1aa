"""The report's comparisons: verdict sentences, the comparison table and its method notes.

Owns how a ``Comparison`` (docs/summary-json.md) reads in the report: one per (candidate,
level, metric, statistic); the table names the decision statistic ("decode_tps (pooled)"),
its ratio and interval, the ratio of medians and of means beside it (medians stay in the
table whatever the decision statistic), the verdict with the heterogeneity words under it,
and how the interval was computed (a short label, explained in a footnote line). It also
chooses which comparisons get a per-prompt plot (plots.py draws them). Pure: renders the
records it is given and computes no statistic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from servelab.metrics import METRIC_BY_NAME
from servelab.report.blocks import Block, Figures, KeyValues, Para, Table
from servelab.spec.load import LoadLevel
from servelab.stats.capacity import CAPACITY_STATISTIC
from servelab.stats.prompt_effects import PromptEffect
from servelab.store.summary import Comparison, Summary

SHORT_NAMES = {
    "decode_tps": "decode", "ttft_s": "TTFT", "e2e_s": "end-to-end time", "tpot_s": "TPOT",
    "itl_s": "ITL", "e2e_tps": "end-to-end tok/s", "prefill_tps": "prefill",
}  # fmt: skip
STATISTIC_WORDS = {
    "pooled": "pooled rates (total tokens / total time: what a workload costs)",
    "mean": "means", "median": "medians", "p90": "90th percentiles", "p99": "99th percentiles",
}  # fmt: skip
# How an interval was computed: (the table's short label, the footnote's words).
METHOD_WORDS = {
    "rounds": ("paired: rounds", "paired by round and prompt, rounds resampled (the prompts "
               "fixed: the verdict is about the workload as written)"),
    "rounds_prompts": ("paired: rounds, prompts", "paired by round and prompt, hierarchical "
                       "bootstrap: rounds resampled, then prompt pairs within each round "
                       "(spec prompts: sampled)"),
    "prompt_noise": ("paired: prompt noise", "one round only: paired by prompt, the interval "
                     "from the spread (MAD) of the per-prompt log-ratios with P - 1 degrees "
                     "of freedom (assumes at least half the prompts share one effect)"),
    "blocks_unpaired": ("unpaired blocks", "not paired: each arm's blocks resampled "
                        "independently, so drift between the arms counts as a difference"),
}  # fmt: skip
OUTSIDE = ("below", "above")  # prompt positions confidently outside the no-difference band
MAX_PROMPT_PLOTS = 12


def finite(x: object) -> float | None:
    """A finite number, else None (report cells show it as "-")."""
    if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
        return None
    return float(x)


def num(x: object, spec: str = ".2f") -> str:
    """A number formatted for a table cell, "-" when absent."""
    v = finite(x)
    return "-" if v is None else format(v, spec)


def ci_label(summary: Summary) -> str:
    return f"{(finite(summary.confidence) or 0.95) * 100:g} % CI"


# --- one comparison --------------------------------------------------------------------------


def metric_label(c: Comparison) -> str:
    """ "decode_tps (pooled)": the metric and the statistic its ratio is of."""
    return f"{c.metric} ({c.statistic})" if c.statistic else c.metric


def median_ratio(c: Comparison) -> float | None:
    """The ratio of medians; a summary from before ``ratio_median`` has it as ``ratio``."""
    given = finite(c.ratio_median)
    if given is not None:
        return given
    return finite(c.ratio) if c.statistic == "median" else None


def method_label(c: Comparison) -> str:
    """The interval method in a few words. A summary from before the paired analysis names no
    method: its blocks were resampled (rounds jointly when paired)."""
    if c.method in METHOD_WORDS:
        return METHOD_WORDS[c.method][0]
    if c.method:
        return c.method
    return "blocks (rounds)" if c.paired else METHOD_WORDS["blocks_unpaired"][0]


def _method_words(c: Comparison) -> str:
    if c.method in METHOD_WORDS:
        return METHOD_WORDS[c.method][1]
    if c.method:
        return "as recorded in summary.json"
    if c.paired:
        return "bootstrap over blocks, rounds resampled jointly"
    return METHOD_WORDS["blocks_unpaired"][1]


def method_notes(comparisons: Sequence[Comparison]) -> list[str]:
    """One footnote line per interval method the comparisons use, in order of first use."""
    notes: dict[str, str] = {}
    for c in comparisons:
        notes.setdefault(method_label(c), f'Method "{method_label(c)}": {_method_words(c)}.')
    return list(notes.values())


def comparison_phrase(c: Comparison, ci: str = "95 % CI") -> str:
    """ "decode pooled 1.18x faster (95 % CI 1.09-1.27)": the analyser's words (which carry
    the heterogeneity words), or ours from the numbers with the heterogeneity words added."""
    if c.summary.strip():
        return c.summary.strip()
    phrase = _phrase_from_numbers(c, ci)
    return f"{phrase}: {c.heterogeneity}" if c.heterogeneity else phrase


def _phrase_from_numbers(c: Comparison, ci: str) -> str:
    short = SHORT_NAMES.get(c.metric, c.metric)
    name = f"{short} {c.statistic}" if c.statistic else short
    ratio, lo, hi = finite(c.ratio), num(c.ci_low), num(c.ci_high)
    if ratio is None:
        return f"{name}: no data to compare"
    interval = f"{ci} {lo}-{hi}"
    if c.verdict == "no_difference":
        band = finite(c.min_effect)
        within = f", within +/-{band * 100:g} %" if band is not None else ""
        return f"{name} no difference (ratio {ratio:.2f}, {interval}{within})"
    if c.verdict in ("better", "worse"):
        return f"{name} {_direction(c.metric, ratio)} ({interval})"
    more = f"; about {c.blocks_needed} blocks per arm would decide" if c.blocks_needed else ""
    return f"{name} inconclusive (ratio {ratio:.2f}, {interval}{more})"


def _direction(metric: str, ratio: float) -> str:
    unit = METRIC_BY_NAME[metric].unit if metric in METRIC_BY_NAME else ""
    up, down = {"tok/s": ("faster", "slower"), "s": ("slower", "faster")}.get(
        unit, ("higher", "lower")
    )
    if ratio >= 1:
        return f"{ratio:.2f}x {up}"
    return f"{1 / ratio:.2f}x {down} (ratio {ratio:.2f})" if ratio > 0 else f"ratio {ratio:.2f}"


# --- all comparisons -------------------------------------------------------------------------


def load_level(c: Comparison) -> LoadLevel:
    """The load level a comparison is at: a concurrency, or an open-loop rate."""
    return LoadLevel(c.concurrency, c.rate_rps)


def level_words(level: LoadLevel) -> str:
    """``concurrency 4`` or ``2 req/s``."""
    return f"concurrency {level.concurrency}" if level.rate_rps is None else level.label


def _where(c: Comparison) -> str:
    """`` at concurrency 4``, `` at 2 req/s``, or `` over the rate sweep`` for capacity, which
    is one figure per arm from all its rates (its record's level is only the cap)."""
    if c.statistic == CAPACITY_STATISTIC:
        return " over the rate sweep"
    return f" at {level_words(load_level(c))}"


def verdicts(summary: Summary) -> list[tuple[str, str]]:
    """One (candidate, sentence) per candidate, reference and concurrency level, every decision
    statistic in it; the reference is named when it is not the run's baseline."""
    comps = summary.comparisons
    multi = len({_where(c) for c in comps}) > 1
    ci = ci_label(summary)
    groups: dict[tuple[str, str, str], list[str]] = {}
    for c in comps:
        key = (c.candidate, c.baseline, _where(c) if multi else "")
        groups.setdefault(key, []).append(comparison_phrase(c, ci))
    out = []
    for (cand, ref, where), phrases in groups.items():
        against = f" against {ref}" if ref != summary.baseline else ""
        out.append((f"{cand}{against}{where}", ", ".join(phrases)))
    compared = {cand for cand, _, _ in groups}
    for arm in summary.arm_order()[1:]:
        if arm not in compared:
            a = summary.arms[arm]
            out.append((arm, f"not compared: {a.n_ok} successful and {a.n_failed} failed trial "
                             "requests"))  # fmt: skip
    return out


def _interval(lo: object, hi: object) -> str:
    if finite(lo) is None and finite(hi) is None:
        return "-"
    return f"{num(lo, '.3f')}-{num(hi, '.3f')}"


def _verdict_cell(c: Comparison) -> str:
    """The verdict with the heterogeneity words under it (a new line in HTML; Markdown keeps
    one line per table row, so there they follow in parentheses)."""
    return f"{c.verdict}\n({c.heterogeneity})" if c.heterogeneity else c.verdict


def _blocks_cell(c: Comparison) -> str:
    return f"{c.n_blocks} ({c.n_pairs} pairs)" if c.n_pairs else str(c.n_blocks)


def comparison_table(summary: Summary) -> Table:
    """A row per comparison: the decision statistic's ratio and interval, then the ratio of
    medians and of means."""
    rows = tuple(
        (
            metric_label(c), c.candidate, c.baseline, str(load_level(c)), num(c.ratio, ".3f"),
            _interval(c.ci_low, c.ci_high), num(median_ratio(c), ".3f"),
            num(c.ratio_mean, ".3f"), _verdict_cell(c), f"+/-{c.min_effect * 100:g} %",
            method_label(c), _blocks_cell(c),
            "-" if c.blocks_needed is None else str(c.blocks_needed),
        )
        for c in summary.comparisons
    )  # fmt: skip
    open_loop = any(c.rate_rps is not None for c in summary.comparisons)
    headers = (
        "metric (statistic)", "candidate", "baseline", "load" if open_loop else "concurrency",
        "ratio",
        ci_label(summary), "ratio (medians)", "ratio (means)", "verdict", "no-difference band",
        "method", "blocks (pairs)", "blocks needed",
    )  # fmt: skip
    return Table(headers, rows)


def _splits(c: Comparison) -> bool:
    return any(p.position in OUTSIDE for p in c.prompts or ())


def _distinct(comparisons: Sequence[Comparison]) -> list[Comparison]:
    """Comparisons with per-prompt effects, each set of effects once: the mean and the p90 of
    one metric pair the same per-prompt ratios, and would draw the same plot."""
    seen: set[tuple[str, str, LoadLevel, str, tuple[PromptEffect, ...]]] = set()
    out = []
    for c in comparisons:
        key = (c.candidate, c.baseline, load_level(c), c.metric, tuple(c.prompts or ()))
        if c.prompts and key not in seen:
            seen.add(key)
            out.append(c)
    return out


def prompt_plot_comparisons(comparisons: Sequence[Comparison]) -> list[Comparison]:
    """The comparisons that get a per-prompt plot, in summary order, at most
    ``MAX_PROMPT_PLOTS``: first each candidate's (and level's) first comparison in which some
    prompt lies confidently outside the no-difference band, then the other such comparisons,
    then the first comparison of each candidate not yet shown; identical per-prompt effects
    are drawn once. A matrix of many arms thus shows every split arm before a second metric
    of one arm."""
    distinct = _distinct(comparisons)
    firsts: dict[tuple[str, str, LoadLevel], Comparison] = {}
    for c in distinct:
        key = (c.candidate, c.baseline, load_level(c))
        if key not in firsts or (_splits(c) and not _splits(firsts[key])):
            firsts[key] = c
    first_ids = {id(c) for c in firsts.values()}
    tiers = (
        [c for c in distinct if id(c) in first_ids and _splits(c)],
        [c for c in distinct if id(c) not in first_ids and _splits(c)],
        [c for c in distinct if id(c) in first_ids and not _splits(c)],
    )
    chosen = {id(c) for c in [c for tier in tiers for c in tier][:MAX_PROMPT_PLOTS]}
    return [c for c in distinct if id(c) in chosen]


def _prompt_note(summary: Summary) -> Para | None:
    distinct = _distinct(summary.comparisons)
    if not distinct:
        return None
    left = len(distinct) - len(prompt_plot_comparisons(summary.comparisons))
    rest = f"; {left} more are not plotted" if left else ""
    return Para(
        "Per-prompt paired ratios (plots in report.html): each prompt's candidate / reference "
        "ratio over its rounds with its interval, the no-difference band shaded. Plotted, at "
        f"most {MAX_PROMPT_PLOTS}: for each candidate its first comparison in which some "
        "prompt lies confidently outside the band, then the other such comparisons, then each "
        "remaining candidate's first decision statistic; statistics that share their "
        f"per-prompt effects (the mean and p90 of one metric) are drawn once{rest}."
    )


def _lead(summary: Summary, ci: str) -> str:
    stats = list(dict.fromkeys(c.statistic for c in summary.comparisons if c.statistic))
    words = ", ".join(STATISTIC_WORDS.get(s, s) for s in stats) or "the decision statistic"
    if all(c.baseline == summary.baseline for c in summary.comparisons):
        against = f"the baseline {summary.baseline or '?'}"
    else:
        against = f"its reference arm (the baseline {summary.baseline or '?'} unless named)"
    return (f"Each candidate against {against}: candidate / reference ratio of {words}, with "
            f"its {ci}; the method of each interval is named under the table.")  # fmt: skip


def verdict_blocks(summary: Summary) -> tuple[Block, ...]:
    """The Verdicts section: sentences first, then notes, the table, its method lines and the
    plots (forest of every comparison; per-prompt ratios of the chosen ones)."""
    ci = ci_label(summary)
    sentences = verdicts(summary)
    if not sentences:
        return (Para("No comparisons: this run has a single arm or no decision metric."),)
    blocks: list[Block] = [Para(_lead(summary, ci)), KeyValues(tuple(sentences))]
    levels = {x for c in summary.comparisons if (x := finite(c.confidence_level))}
    conf = finite(summary.confidence) or 0.95
    if len(levels) == 1 and abs(next(iter(levels)) - conf) > 1e-9:
        blocks.append(Para(f"Sequential looks: each interval is computed at the "
                           f"{next(iter(levels)) * 100:.2f} % level so that the run as a whole "
                           f"keeps its {conf * 100:g} % confidence."))  # fmt: skip
    if summary.interleaved is False:
        blocks.append(Para("The arms were NOT interleaved: drift of the machine between "
                           "arms is not controlled and shows up as a difference."))  # fmt: skip
    n_warn = len(summary.warnings)
    if n_warn:
        blocks.append(Para(f"{n_warn} warning(s) below qualify these numbers."))
    blocks.append(comparison_table(summary))
    blocks += [Para(line) for line in method_notes(summary.comparisons)]
    blocks.append(Figures("forest", "the forest plot of these ratios"))
    note = _prompt_note(summary)
    if note is not None:
        blocks += [note, Figures("prompts", "the per-prompt paired ratios")]
    return tuple(blocks)
