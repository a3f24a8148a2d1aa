"""Report plots: matplotlib figures rendered to PNG bytes for report.html.

Owns the figures of a report (docs/report.md): per decision metric the distribution per arm
(box plus strip) and the per-block medians over time (drift), the forest plot of comparison
ratios with their intervals and no-difference bands, per chosen comparison the per-prompt
paired ratios with their intervals, and the concurrency sweep against ideal linear scaling.
Every figure is a ``matplotlib.figure.Figure`` with the Agg canvas attached explicitly: pyplot
is never imported, so no backend switch, figure registry or rcParams change leaks into the
caller, and each figure is cleared once rendered. Text from the run (arm and prompt ids) is
drawn literally, never as mathtext. No files: bytes out.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from servelab.analysis.row_selection import Row, ok_trials, trials
from servelab.metrics import METRIC_BY_NAME
from servelab.report.comparison_view import (
    OUTSIDE,
    level_words,
    load_level,
    metric_label,
    prompt_plot_comparisons,
)
from servelab.report.sections import arm_order, decision_metrics, has_sweep_plot
from servelab.stats.prompt_effects import PromptEffect
from servelab.store.summary import Comparison, Summary, SweepRow

if TYPE_CHECKING:  # matplotlib is imported when a figure is drawn (it takes ~0.5 s)
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

Points = list[tuple[float, float]]

DPI = 96
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)  # fmt: skip
VERDICT_COLOURS = {
    "better": "#2ca02c", "worse": "#d62728", "no_difference": "#555555", "inconclusive": "#ff7f0e",
}  # fmt: skip
MAX_PROMPT_ROWS = 40  # a per-prompt plot keeps the prompts outside the band, then the farthest
NICE_RATIOS = (0.1, 0.2, 0.25, 0.33, 0.4, 0.5, 0.6, 0.67, 0.75, 0.8, 0.9, 0.95, 1.0, 1.05, 1.1,
               1.2, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 10.0)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Plot:
    kind: str  # distributions | drift | forest | prompts | sweep
    title: str
    alt: str  # what the image shows, for readers that cannot see it
    png: bytes

    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


def _finite(v: Any) -> list[float]:
    """The finite numbers in a value or a list of values (``itl_s`` is a list per request)."""
    items = v if isinstance(v, list) else [v]
    return [
        float(x)
        for x in items
        if isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)
    ]


def _label(arm: str, concurrency: Any, multi: bool) -> str:
    return f"{arm} c={concurrency}" if multi else arm


def _levels(rows: Sequence[Row]) -> list[Any]:
    return sorted({r.get("concurrency") for r in rows}, key=lambda c: (c is None, str(c).zfill(9)))


def metric_values(rows: Sequence[Row], metric: str, arms: Sequence[str]) -> dict[str, list[float]]:
    """Values of ``metric`` over successful trial requests, per arm (and level, when several).

    Arms without a successful request keep an empty group, so the plot says so.
    """
    ok = ok_trials(rows)
    levels = _levels(ok)
    multi = len(levels) > 1
    groups: dict[str, list[float]] = {}
    for arm in arms:
        mine = [r for r in ok if r.get("arm") == arm]
        if not mine:
            groups[arm] = []
        for c in levels:
            vals = [x for r in mine if r.get("concurrency") == c for x in _finite(r.get(metric))]
            if vals or any(r.get("concurrency") == c for r in mine):
                groups[_label(arm, c, multi)] = vals
    return groups


def block_medians(
    rows: Sequence[Row], metric: str, arms: Sequence[str]
) -> tuple[dict[str, Points], str]:
    """Per arm (and level) the median of each block, placed at the block's first send.

    x is minutes since the first trial request; without wall-clock sends it is the block
    index, with arms offset inside a round so the interleaving stays visible.
    """
    tried = trials(rows)
    sends = [t for r in tried for t in _finite(r.get("t_send_unix_s"))]
    timed = bool(tried) and len(sends) == len(tried)
    origin = min(sends) if sends else 0.0
    multi = len(_levels(ok_trials(rows))) > 1
    blocks: dict[tuple[str, Any, Any], list[Row]] = {}
    for r in tried:
        blocks.setdefault((str(r.get("arm")), r.get("concurrency"), r.get("block")), []).append(r)
    series: dict[str, Points] = {}
    for (arm, c, block), members in blocks.items():
        vals = [x for r in members if r.get("outcome") == "ok" for x in _finite(r.get(metric))]
        if not vals or not isinstance(block, int):
            continue
        if timed:
            x = (min(t for r in members for t in _finite(r.get("t_send_unix_s"))) - origin) / 60
        else:
            x = block + (arms.index(arm) if arm in arms else 0) / (len(arms) + 1)
        series.setdefault(_label(arm, c, multi), []).append((x, float(np.median(vals))))
    x_label = "minutes since the first trial request" if timed else "block (round)"
    return {k: sorted(v) for k, v in series.items()}, x_label


def _figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def to_png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    fig.clear()
    return buf.getvalue()


def _scale(metric: str, values: Sequence[float]) -> tuple[float, str]:
    """Seconds below two are shown as milliseconds."""
    unit = METRIC_BY_NAME[metric].unit if metric in METRIC_BY_NAME else ""
    if unit == "s" and values and max(abs(v) for v in values) < 2:
        return 1e3, "ms"
    return 1.0, unit


def _arm_of(label: str, colours: Mapping[str, str]) -> str:
    return colours.get(label) or colours.get(label.rsplit(" c=", 1)[0]) or "#333333"


def distribution_figure(
    metric: str, groups: Mapping[str, Sequence[float]], colours: Mapping[str, str]
) -> Figure:
    labels = list(groups)
    scale, unit = _scale(metric, [v for vals in groups.values() for v in vals])
    fig = _figure(7.5, 1.3 + 0.55 * len(labels))
    ax = fig.add_subplot()
    rng = np.random.default_rng(0)  # fixed jitter: the same run gives the same picture
    for i, label in enumerate(labels):
        y = len(labels) - 1 - i
        vals = np.asarray(groups[label], dtype=float) * scale
        if vals.size == 0:
            ax.text(0.02, y, "no successful requests", transform=ax.get_yaxis_transform(),
                    va="center", color="#d62728")  # fmt: skip
            continue
        colour = _arm_of(label, colours)
        ax.boxplot(vals, positions=[y], orientation="horizontal", widths=0.5, showfliers=False,
                   medianprops={"color": colour, "linewidth": 2})  # fmt: skip
        ax.scatter(vals, y + rng.uniform(-0.2, 0.2, vals.size), s=10, alpha=0.45, color=colour,
                   linewidths=0)  # fmt: skip
    ax.set_yticks(range(len(labels)), list(reversed(labels)))
    ax.set_ylim(-0.7, len(labels) - 0.3)
    ax.set_xlabel(f"{metric} ({unit})" if unit else metric)
    ax.set_title(f"{metric}: successful trial requests per arm", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    return fig


def drift_figure(
    metric: str, series: Mapping[str, Points], x_label: str, colours: Mapping[str, str]
) -> Figure:
    scale, unit = _scale(metric, [y for pts in series.values() for _, y in pts])
    fig = _figure(7.5, 3.4)
    ax = fig.add_subplot()
    markers = "osD^v<>"
    for i, (label, pts) in enumerate(series.items()):
        xs, ys = zip(*pts, strict=True)
        ax.plot(xs, [y * scale for y in ys], marker=markers[i % len(markers)], linewidth=1,
                color=_arm_of(label, colours), label=label)  # fmt: skip
    ax.set_xlabel(x_label)
    ax.set_ylabel(f"block median {metric} ({unit})" if unit else f"block median {metric}")
    ax.set_title(f"{metric}: per-block medians over the run", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def _band(c: Comparison) -> tuple[float, float] | None:
    """The no-difference band [1/(1+min_effect), 1+min_effect] the verdict is read against."""
    m = _finite(c.min_effect)
    return (1 / (1 + m[0]), 1 + m[0]) if m and m[0] > 0 else None


def _forest_row(ax: Axes, y: int, c: Comparison) -> None:
    band = _band(c)
    if band:
        ax.fill_betweenx([y - 0.35, y + 0.35], *band, color="#e0e0e0", zorder=0)
    ratio = _finite(c.ratio)
    if not ratio:
        ax.text(1.0, y, "no data", ha="center", va="center", color="#d62728")
        return
    colour = VERDICT_COLOURS.get(c.verdict, "#333333")
    lo, hi = _finite(c.ci_low), _finite(c.ci_high)
    if lo and hi:
        ax.plot([lo[0], hi[0]], [y, y], color=colour, linewidth=2.5, solid_capstyle="butt")
    ax.plot([ratio[0]], [y], "o", color=colour, markersize=7)


def forest_figure(comparisons: Sequence[Comparison], ci_label: str) -> Figure:
    multi = len({load_level(c) for c in comparisons}) > 1
    n = len(comparisons)
    fig = _figure(8.0, 1.4 + 0.42 * n)
    ax = fig.add_subplot()
    labels = []
    for i, c in enumerate(comparisons):
        _forest_row(ax, n - 1 - i, c)
        where = f" {load_level(c).label}" if multi else ""
        labels.append(f"{metric_label(c)}: {c.candidate}{where} [{c.verdict}]")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_yticks(range(n), list(reversed(labels)), parse_math=False)
    ax.set_ylim(-0.7, n - 0.3)
    ax.set_xlabel(f"candidate / reference, each comparison's statistic\nwith its {ci_label}")
    ax.set_title("Comparison ratios\ngrey band: no difference (within the smallest effect)",
                 fontsize=10)  # fmt: skip
    ax.grid(axis="x", alpha=0.3)
    return fig


def _prompt_colour(position: str, lower_is_better: bool) -> str:
    """Prompts outside the band in the colour of what they mean; the others grey."""
    if position not in OUTSIDE:
        return VERDICT_COLOURS["no_difference"]
    worse = (position == "below") != lower_is_better
    return VERDICT_COLOURS["worse" if worse else "better"]


def _shown_prompts(prompts: Sequence[PromptEffect]) -> list[PromptEffect]:
    """At most ``MAX_PROMPT_ROWS`` prompts, those outside the band and the farthest from 1
    first, ordered by ratio (a split effect shows as two clusters)."""

    def distance(p: PromptEffect) -> tuple[bool, float]:
        r = _finite(p.ratio)
        return (p.position not in OUTSIDE, -abs(math.log(r[0])) if r and r[0] > 0 else 0.0)

    kept = sorted(prompts, key=distance)[:MAX_PROMPT_ROWS]
    return sorted(kept, key=lambda p: ((_finite(p.ratio) or [math.inf])[0], p.prompt))


def _prompt_id(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _log_ticks(ax: Axes, values: Sequence[float]) -> None:
    """A log x axis with plain ratio ticks (matplotlib's would show one decade at most)."""
    lo, hi = min(values) / 1.04, max(values) * 1.04
    ax.set_xscale("log")
    ax.set_xlim(lo, hi)
    ticks = [t for t in NICE_RATIOS if lo <= t <= hi]
    step = max(1, math.ceil(len(ticks) / 8))
    ticks = sorted({*ticks[::step], 1.0} if lo <= 1.0 <= hi else set(ticks[::step]))
    if len(ticks) < 3:
        ticks = sorted({*ticks, float(f"{lo * 1.02:.3g}"), float(f"{hi / 1.02:.3g}")})
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.minorticks_off()


def _prompt_rows(ax: Axes, shown: Sequence[PromptEffect], lower_is_better: bool) -> list[float]:
    """Draw a row per prompt, the first at the top; returns the x values drawn."""
    xs: list[float] = []
    n = len(shown)
    for i, p in enumerate(shown):
        y = n - 1 - i
        colour = _prompt_colour(p.position, lower_is_better)
        lo, hi, r = _finite(p.ci_low), _finite(p.ci_high), _finite(p.ratio)
        if lo and hi and lo[0] > 0:
            ax.plot([lo[0], hi[0]], [y, y], color=colour, linewidth=2, solid_capstyle="butt")
            xs += [lo[0], hi[0]]
        if r and r[0] > 0:
            face = "white" if p.position == "unclear" else colour
            ax.plot([r[0]], [y], "o", color=colour, markerfacecolor=face, markersize=6)
            xs.append(r[0])
    return xs


def prompt_figure(c: Comparison, ci_label: str) -> Figure:
    """One row per prompt: its paired ratio (point; hollow when unclear) with its interval
    (whisker, none without one), the no-difference band shaded, a line at 1 and a dashed one
    at the comparison's own ratio; prompts outside the band coloured by what they mean."""
    prompts = c.prompts or ()
    shown = _shown_prompts(prompts)
    n = len(shown)
    fig = _figure(8.0, 1.7 + 0.3 * n)
    ax = fig.add_subplot()
    xs = [1.0, *_prompt_rows(ax, shown, c.lower_is_better)]
    band = _band(c)
    if band:
        ax.axvspan(*band, color="#e0e0e0", zorder=0, label="no difference")
        xs += band
    ax.axvline(1.0, color="black", linewidth=0.8)
    ratio = _finite(c.ratio)
    if ratio and ratio[0] > 0:
        colour = VERDICT_COLOURS.get(c.verdict, "#333333")
        label = f"{c.statistic} ratio {ratio[0]:.2f} ({c.verdict})"
        ax.axvline(ratio[0], color=colour, linestyle="--", linewidth=1.2, label=label)
        xs.append(ratio[0])
    _log_ticks(ax, xs)
    labels = [_prompt_id(p.prompt) for p in reversed(shown)]
    ax.set_yticks(range(n), labels, parse_math=False)
    ax.set_ylim(-0.7, n - 0.3)
    ax.set_xlabel(f"candidate / reference per prompt, paired over rounds\nwith its "
                  f"simultaneous {ci_label} (log scale)")  # fmt: skip
    more = f"\n{n} of {len(prompts)} prompts: those outside the band, then the farthest"
    title = f"{metric_label(c)} per prompt\n{c.candidate} / {c.baseline}"
    ax.set_title(title + (more if n < len(prompts) else ""), fontsize=10, parse_math=False)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return fig


def _prompt_plot(c: Comparison, ci_label: str, multi: bool) -> Plot:
    prompts = c.prompts or ()
    outside = [p.prompt for p in prompts if p.position in OUTSIDE]
    level = f" at {level_words(load_level(c))}" if multi else ""
    named = f" ({', '.join(outside)})" if outside else ""
    alt = (f"Per-prompt paired ratios of {metric_label(c)} for {c.candidate} against "
           f"{c.baseline}{level}: {len(outside)} of {len(prompts)} prompts confidently "
           f"outside the no-difference band{named}")  # fmt: skip
    title = f"{metric_label(c)}: {c.candidate}{level} per prompt"
    return Plot("prompts", title, alt, to_png(prompt_figure(c, ci_label)))


def _sweep_points(points: Sequence[SweepRow]) -> tuple[list[float], list[float], list[float]]:
    pts = sorted(points, key=lambda p: p.concurrency)
    nan = float("nan")
    cs = [float(p.concurrency) for p in pts]
    agg = [(_finite(p.aggregate_tps) or [nan])[0] for p in pts]
    eff = [(_finite(p.efficiency) or [nan])[0] for p in pts]
    return cs, agg, eff


def sweep_figure(sweep: Mapping[str, Sequence[SweepRow]], colours: Mapping[str, str]) -> Figure:
    fig = _figure(10.0, 3.8)
    ax_agg, ax_eff = fig.subplots(1, 2)
    levels: set[float] = set()
    for arm, points in sweep.items():
        cs, agg, eff = _sweep_points(points)
        if not cs:
            continue
        levels.update(cs)
        colour = colours.get(arm, "#333333")
        ax_agg.plot(cs, agg, "o-", color=colour, label=arm)
        known = [(c, a) for c, a in zip(cs, agg, strict=True) if math.isfinite(a)]
        if known:  # ideal: linear from the lowest level measured
            c0, a0 = known[0]
            ax_agg.plot(cs, [a0 * c / c0 for c in cs], "--", color=colour, alpha=0.5,
                        label=f"{arm} ideal linear")  # fmt: skip
        ax_eff.plot(cs, eff, "o-", color=colour, label=arm)
    ax_eff.axhline(1.0, color="black", linestyle="--", linewidth=0.8, label="ideal linear")
    ticks = sorted(levels)
    for ax, ylabel in ((ax_agg, "aggregate tok/s"), (ax_eff, "scaling efficiency")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("concurrency (requests in flight)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    ax_eff.set_ylim(bottom=0)
    fig.suptitle("Concurrency sweep", fontsize=10)
    return fig


def arm_colours(summary: Summary, rows: Sequence[Row]) -> dict[str, str]:
    arms = list(dict.fromkeys([*arm_order(summary), *(str(r.get("arm")) for r in rows)]))
    return {arm: PALETTE[i % len(PALETTE)] for i, arm in enumerate(arms)}


def report_plots(summary: Summary, rows: Sequence[Row]) -> list[Plot]:
    """Every plot of a report, in the order the report shows them."""
    colours = arm_colours(summary, rows)
    arms = list(colours)
    plots: list[Plot] = []
    comparisons = summary.comparisons
    if comparisons:
        conf = (_finite(summary.confidence) or [0.95])[0]
        ci = f"{conf * 100:g} % CI"
        fig = forest_figure(comparisons, ci)
        plots.append(Plot("forest", "Comparison ratios", "Forest plot of every comparison ratio "
                          "with its interval and no-difference band", to_png(fig)))  # fmt: skip
        multi = len({load_level(c) for c in comparisons}) > 1
        plots += [_prompt_plot(c, ci, multi) for c in prompt_plot_comparisons(comparisons)]
    for metric in decision_metrics(summary):
        groups = metric_values(rows, metric, arms)
        if any(groups.values()):
            fig = distribution_figure(metric, groups, colours)
            plots.append(Plot("distributions", f"{metric} per arm",
                              f"Box and strip plot of {metric} per arm", to_png(fig)))  # fmt: skip
        series, x_label = block_medians(rows, metric, arms)
        if series:
            fig = drift_figure(metric, series, x_label, colours)
            alt = f"Block medians of {metric} over time per arm"
            plots.append(Plot("drift", f"{metric} per block", alt, to_png(fig)))
    if has_sweep_plot(summary):
        fig = sweep_figure(summary.sweep, colours)
        alt = "Aggregate tok/s and scaling efficiency against concurrency per arm, with ideal"
        plots.append(Plot("sweep", "Concurrency sweep", alt, to_png(fig)))
    return plots
