"""What a run report says, in which order: the sections both renderers walk.

Owns the report's content (docs/report.md): ``report_sections`` turns a ``Summary``
(docs/summary-json.md), the manifest and optionally the rows into sections of plain-string
blocks (paragraphs, key/value lists, tables, replies, plot slots); markdown.py and html.py render
the same sections, so both reports always say the same thing. The section views beside it own
the comparisons and verdicts (comparison_view.py), quality and gates (quality_view.py), theory
(theory_view.py), speculative decoding and the prefix cache (spec_decode_view.py), the
cross-hardware matrix of a run spread over Ray nodes (hardware_matrix_view.py), the
environment (environment_view.py) and sample replies (replies_view.py).
Pure: no I/O and no plotting. An imported run has no host or engine description, an arm may
have no successful request.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from servelab.analysis.row_selection import Row
from servelab.metrics import METRIC_BY_NAME
from servelab.report.batch_fit_view import batch_fit_blocks
from servelab.report.bench_table import SHOWN, fmt_value
from servelab.report.blocks import Block, Figures, KeyValues, Para, Section, Table
from servelab.report.capacity_view import capacity_blocks
from servelab.report.comparison_view import ci_label, finite, num, verdict_blocks
from servelab.report.environment_view import environment_blocks
from servelab.report.hardware_matrix_view import hardware_matrix_blocks
from servelab.report.quality_view import gates_blocks, quality_blocks
from servelab.report.replies_view import replies
from servelab.report.spec_decode_view import prefix_cache_blocks, spec_decode_blocks
from servelab.report.theory_view import theory_blocks
from servelab.stats.capacity import CAPACITY_STATISTIC
from servelab.store import Manifest
from servelab.store.summary import Summary


def _pct(x: object) -> str:
    v = finite(x)
    return "-" if v is None else f"{v * 100:.1f} %"


def value_text(v: object) -> str:
    """A configuration value as a reader should see it; empty and unset are visible."""
    if v is None:
        return "(unset)"
    if isinstance(v, str):
        return v if v else '""'
    if isinstance(v, float):
        return f"{v:.6g}"
    return json.dumps(v, sort_keys=True)


def fmt_metric(metric: str, v: object) -> str:
    value = finite(v)
    if value is None:
        return "-"
    unit = METRIC_BY_NAME[metric].unit if metric in METRIC_BY_NAME else ""
    return f"{value:.3f}" if unit == "ratio" else fmt_value(metric, value)


def arm_order(summary: Summary) -> list[str]:
    """Arms of the summary, baseline first."""
    return summary.arm_order()


def decision_metrics(summary: Summary) -> list[str]:
    """The decision metrics with values per request (capacity, one figure per arm from its
    whole rate sweep, has its own section and no per-request distribution)."""
    per_arm = {c.metric for c in summary.comparisons if c.statistic == CAPACITY_STATISTIC}
    named = [*summary.decision_metrics, *(c.metric for c in summary.comparisons if c.metric)]
    return [m for m in dict.fromkeys(named) if m not in per_arm]


# --- content ---------------------------------------------------------------------------------


def confound_items(summary: Summary, manifest: Manifest) -> list[tuple[str, str]]:
    """One (field, its value in every arm) per allowed confound."""
    items: list[tuple[str, Mapping[str, object]]] = [
        (c.field, c.values) for c in summary.allowed_confounds
    ] or [(c.field, c.values) for c in manifest.allowed_confounds]
    out = []
    for field, values in items:
        per_arm = ", ".join(f"{arm} = {value_text(v)}" for arm, v in values.items())
        out.append((field, per_arm or "values not recorded"))
    return out


# What two engines cannot share, whatever the configuration: shown when the arms' engine kinds
# differ (the spec had to declare each of these; docs/vllm.md "Comparing engines").
ENGINE_BOUND = ("engine.kind", "engine.build", "model.format", "model.weights",
                "model.chat_template_sha256", "sampling.engine_defaults")  # fmt: skip


def unequal_items(manifest: Manifest) -> list[tuple[str, str]]:
    """One (field, its value in every arm) per engine-bound difference of a cross-engine run;
    empty when every arm ran on the same engine kind."""
    diff = manifest.config_diff
    if "engine.kind" not in diff:
        return []
    return [
        (f, ", ".join(f"{arm} = {value_text(v)}" for arm, v in diff[f].items()))
        for f in ENGINE_BOUND if f in diff
    ]  # fmt: skip


def _counts(x: Mapping[str, int]) -> str:
    items = sorted(x.items())
    return ", ".join(f"{k}: {v}" for k, v in items) if items else "-"


def arm_table(summary: Summary) -> Table:
    rows = []
    for arm in arm_order(summary):
        a = summary.arms[arm]
        role = "baseline" if arm == summary.baseline else "candidate"
        blocks = "-" if a.n_blocks is None else str(a.n_blocks)
        rows.append((arm, role, str(a.n_ok), str(a.n_failed), str(a.n_warmup), blocks,
                     _counts(a.failures), _counts(a.finish_reasons)))  # fmt: skip
    headers = (
        "arm", "role", "ok", "failed", "warm-up", "blocks", "failures", "finish reasons",
    )  # fmt: skip
    return Table(headers, tuple(rows))


def _shown_metrics(summary: Summary) -> list[str]:
    present = {
        m
        for a in summary.arms.values()
        for m, s in a.metrics.items()
        if finite(s.median) is not None
    }
    decision = decision_metrics(summary)
    rest = [m for m in (*SHOWN, *sorted(present)) if m in present and m not in decision]
    return list(dict.fromkeys(decision + rest))


def metric_table(summary: Summary) -> Table:
    """Rows are metrics, a column per arm: median / p90 (n when it differs from the ok count)."""
    order = arm_order(summary)
    rows = []
    for metric in _shown_metrics(summary):
        unit = METRIC_BY_NAME[metric].unit if metric in METRIC_BY_NAME else ""
        cells = [f"{metric} ({unit})" if unit else metric]
        for arm in order:
            a = summary.arms[arm]
            s = a.metrics.get(metric)
            if s is None or finite(s.median) is None:
                cells.append("-")
                continue
            n_note = f" (n={s.n})" if s.n != a.n_ok else ""
            cells.append(f"{fmt_metric(metric, s.median)} / {fmt_metric(metric, s.p90)}{n_note}")
        rows.append(tuple(cells))
    return Table(("metric", *order), tuple(rows))


def rate_table(summary: Summary, ci: str) -> Table:
    keys = sorted({k for a in summary.arms.values() for k in a.rates()},
                  key=lambda k: (k != "error_rate", k))  # fmt: skip
    rows = []
    for arm in arm_order(summary):
        rates = summary.arms[arm].rates()
        cells = [arm]
        for k in keys:
            r = rates.get(k)
            if r is None:
                cells.append("-")
                continue
            ci_text = f" ({_pct(r.ci_low)} - {_pct(r.ci_high)})" if finite(r.p) is not None else ""
            cells.append(f"{_pct(r.p)}{ci_text}, {r.k} of {r.n}")
        rows.append(tuple(cells))
    return Table(("arm", *(f"{k} (Wilson {ci})" for k in keys)), tuple(rows))


def proportion_table(summary: Summary) -> Table | None:
    if not summary.proportions:
        return None
    rows = tuple(
        (
            p.metric, p.baseline, p.candidate, _pct(p.baseline_p), _pct(p.candidate_p),
            _pct(p.difference), num(p.p_value, ".3g"), p.verdict,
        )
        for p in summary.proportions
    )  # fmt: skip
    headers = ("rate", "baseline", "candidate", "baseline rate", "candidate rate", "difference",
               "p-value (exact test)", "verdict")  # fmt: skip
    return Table(headers, rows)


def sweep_table(summary: Summary) -> Table | None:
    rows = [
        (
            arm, str(p.concurrency), num(p.aggregate_tps, ".1f"), num(p.per_stream_tps, ".1f"),
            fmt_metric("ttft_s", p.ttft_s), num(p.efficiency, ".2f"),
        )
        for arm, points in summary.sweep.items()
        for p in sorted(points, key=lambda p: p.concurrency)
    ]  # fmt: skip
    if not rows:
        return None
    headers = ("arm", "concurrency", "aggregate tok/s", "per-stream tok/s", "median TTFT",
               "scaling efficiency")  # fmt: skip
    return Table(headers, tuple(rows))


def has_sweep_plot(summary: Summary) -> bool:
    return len({p.concurrency for pts in summary.sweep.values() for p in pts}) > 1


def config_diff_table(summary: Summary, manifest: Manifest) -> Table | None:
    diff: Mapping[str, Mapping[str, object]] = summary.config_diff or manifest.config_diff
    if not diff:
        return None
    order = arm_order(summary) or sorted({a for v in diff.values() for a in v})
    declared = set(manifest.declared)
    confounds = {c.field for c in summary.allowed_confounds}
    rows = []
    for field, values in diff.items():
        why = ("allowed confound" if field in confounds
               else "declared" if field in declared else "")  # fmt: skip
        rows.append((str(field), *(value_text(values.get(a)) for a in order), why))
    return Table(("field", *order, "note"), tuple(rows))


def stopping_items(summary: Summary, manifest: Manifest) -> list[tuple[str, str]]:
    st = summary.stopping.to_json()
    first = [k for k in ("rule", "looks", "stopped_early", "reason") if k in st]
    items = [
        (k.replace("_", " "), "yes" if v is True else "no" if v is False else value_text(v))
        for k, v in ((k, st[k]) for k in (*first, *(k for k in st if k not in first)))
        if v is not None and not isinstance(v, dict | list)
    ]
    for look in manifest.looks:
        decided = "decided" if look.decided else "continued"
        items.append((f"look after block {look.after_block}",
                      f"{decided}: {look.reason}".rstrip(": ")))  # fmt: skip
    if manifest.status:
        items.append(("run status", manifest.status))
    return items


def warning_items(summary: Summary) -> list[tuple[str, str]]:
    items = []
    for w in summary.warnings:
        arm = f" ({w.arm})" if w.arm else ""
        detail = w.detail.strip()
        if detail and w.advice:
            detail += "" if detail.endswith((".", "!", "?")) else "."
        advice = f" Advice: {w.advice}" if w.advice else ""
        items.append((f"{w.kind}{arm}", f"{detail}{advice}".strip()))
    return items


def report_title(summary: Summary, manifest: Manifest) -> str:
    return f"servelab report: {summary.run_id or manifest.run_id or 'run'}"


def _synthetic_blocks(summary: Summary) -> tuple[Block, ...]:
    """A warning above the quality figures when an arm ran a random-weight model."""
    found = [w for w in summary.warnings if w.kind == "synthetic_model"]
    if not found:
        return ()
    who = ", ".join(w.arm for w in found if w.arm) if all(w.arm for w in found) else ""
    return (Para(f"These figures mean nothing for {who or 'the arms named in the warnings'}: a "
                 "synthetic model has random weights of a real shape, so its replies are not "
                 "text. Its speed and memory are real."),)  # fmt: skip


def report_sections(
    summary: Summary, manifest: Manifest, rows: Sequence[Row] | None = None
) -> list[Section]:
    """Every section of a report, in reading order (docs/report.md)."""
    ci = ci_label(summary)
    sections = []
    confounds = confound_items(summary, manifest)
    if confounds:
        lead = ("The arms differ in fields the spec did not declare, and the run went ahead "
                "with --allow-confound. Any difference below may come from these fields rather "
                "than from the change under test.")  # fmt: skip
        sections.append(Section("confounds", "Confounded comparison",
                                (Para(lead), KeyValues(tuple(confounds))), alert=True))  # fmt: skip
    unequal = unequal_items(manifest)
    if unequal:
        lead = ("The arms run on different engines. The spec declared these differences, which "
                "no setting can remove, so every comparison below includes them, not only the "
                "engine's own speed.")  # fmt: skip
        sections.append(Section("unequal", "What the arms could not equalise",
                                (Para(lead), KeyValues(tuple(unequal)))))  # fmt: skip
    gate_blocks = gates_blocks(summary)
    if gate_blocks:
        sections.append(Section("gates", "Gates", gate_blocks))
    sections += [
        Section("verdicts", "Verdicts", verdict_blocks(summary)),
        Section("arms", "Arms and metrics", (
            arm_table(summary),
            Para("Median / p90 over successful trial requests; warm-ups and failed requests "
                 "never enter these figures."),
            metric_table(summary),
        )),
        Section("proportions", "Error and truncation rates", tuple(
            b for b in (rate_table(summary, ci), proportion_table(summary)) if b is not None
        )),
        Section("quality", "Quality", (*_synthetic_blocks(summary),
                                       *quality_blocks(summary.quality))),
        Section("distributions", "Distributions", (Figures(
            "distributions", "the distribution of each decision metric per arm"),)),
        Section("drift", "Per-block drift", (Para(
            "Median of each block against time, arms interleaved: a trend shared by all arms is "
            "drift of the machine, which interleaving cancels; a jump in one arm is not."),
            Figures("drift", "the per-block medians over time"))),
        Section("sweep", "Concurrency", _sweep_blocks(summary)),
        *((Section("capacity", "Capacity and goodput", capacity_blocks(summary.capacity)),)
          if summary.capacity is not None else ()),
        *((Section("spec_decode", "Speculative decoding",
                   spec_decode_blocks(summary.spec_decode, summary)),)
          if summary.spec_decode is not None else ()),
        *((Section("prefix_cache", "Prefix cache", prefix_cache_blocks(summary.prefix_cache)),)
          if summary.prefix_cache is not None else ()),
        Section("theory", "Theory beside measurement", theory_blocks(summary.theory)),
        *((Section("hardware_matrix", "Hardware matrix",
                   hardware_matrix_blocks(summary.hardware_matrix, manifest)),)
          if summary.hardware_matrix is not None else ()),
        Section("config", "Configuration differences", _config_blocks(summary, manifest)),
        Section("stopping", "Stopping record", _kv_or(stopping_items(summary, manifest),
                                                      "No stopping record.")),
        Section("environment", "Environment", environment_blocks(manifest)),
        Section("warnings", "Warnings", _kv_or(warning_items(summary), "None.")),
        Section("samples", "Sample replies", tuple(replies(rows, arm_order(summary))) if rows
                else (Para("Sample replies are shown in report.html."),)),
    ]  # fmt: skip
    return sections


def _kv_or(items: list[tuple[str, str]], empty: str) -> tuple[Block, ...]:
    return (KeyValues(tuple(items)),) if items else (Para(empty),)


def _sweep_blocks(summary: Summary) -> tuple[Block, ...]:
    table = sweep_table(summary)
    if table is None:
        return (Para("No concurrency sweep recorded."),)
    if has_sweep_plot(summary):
        lead: Block = Figures("sweep", "aggregate tok/s and scaling efficiency against ideal")
    else:
        lead = Para("One concurrency level: no scaling to plot.")
    return (lead, table, *batch_fit_blocks(summary.batch_fit))


def _config_blocks(summary: Summary, manifest: Manifest) -> tuple[Block, ...]:
    table = config_diff_table(summary, manifest)
    if table is None:
        return (Para("No recorded difference between the arms' effective configurations."),)
    return (Para("Every effective field that differs between arms."), table)
