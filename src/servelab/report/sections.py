"""What a run report says, in which order: the sections both renderers walk.

Owns the report's content (docs/report.md): ``report_sections`` turns a summary dict
(docs/summary-json.md), the manifest and optionally the rows into sections of plain-string
blocks (paragraphs, key/value lists, tables, replies, plot slots); markdown.py and html.py render
the same sections, so both reports always say the same thing. Pure: no I/O and no plotting.
Every key beyond the core is optional: an imported run has no host or engine description, an
arm may have no successful request at all.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from servelab.metrics import METRIC_BY_NAME
from servelab.report.blocks import Block, Figures, Heading, KeyValues, Para, Reply, Section, Table
from servelab.report.quality_view import gates_blocks, quality_blocks
from servelab.report.rows import Row, in_order, trials
from servelab.report.table import SHOWN, fmt_value
from servelab.report.theory_view import theory_blocks

REPLY_CHARS = 600  # a sample reply is cut after this many characters
SAMPLES_OK = 3  # sample replies per arm
SAMPLES_FAILED = 2  # failed requests shown per arm, with their error
SHORT_NAMES = {
    "decode_tps": "decode", "ttft_s": "TTFT", "e2e_s": "end-to-end time", "tpot_s": "TPOT",
    "itl_s": "ITL", "e2e_tps": "end-to-end tok/s", "prefill_tps": "prefill",
}  # fmt: skip


# --- small readers that tolerate anything ---------------------------------------------------


def _d(x: Any) -> dict[str, Any]:
    return x if isinstance(x, dict) else {}


def _l(x: Any) -> list[Any]:
    return x if isinstance(x, list) else []


def _f(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
        return None
    return float(x)


def _num(x: Any, spec: str = ".2f") -> str:
    v = _f(x)
    return "-" if v is None else format(v, spec)


def _pct(x: Any) -> str:
    v = _f(x)
    return "-" if v is None else f"{v * 100:.1f} %"


def value_text(v: Any) -> str:
    """A configuration value as a reader should see it; empty and unset are visible."""
    if v is None:
        return "(unset)"
    if isinstance(v, str):
        return v if v else '""'
    if isinstance(v, float):
        return f"{v:.6g}"
    return json.dumps(v, sort_keys=True)


def fmt_metric(metric: str, v: Any) -> str:
    value = _f(v)
    if value is None:
        return "-"
    unit = METRIC_BY_NAME[metric].unit if metric in METRIC_BY_NAME else ""
    return f"{value:.3f}" if unit == "ratio" else fmt_value(metric, value)


def truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]} ... [{len(text) - limit} more characters]"


def arm_order(summary: Mapping[str, Any]) -> list[str]:
    """Arms of the summary, baseline first."""
    arms = [str(a) for a in _d(summary.get("arms"))]
    base = summary.get("baseline")
    if base in arms:
        arms.remove(base)
        arms.insert(0, base)
    return arms


def decision_metrics(summary: Mapping[str, Any]) -> list[str]:
    named = [str(m) for m in _l(summary.get("decision_metrics"))]
    from_comparisons = [str(c.get("metric")) for c in _comparisons(summary) if c.get("metric")]
    return list(dict.fromkeys(named + from_comparisons))


def _comparisons(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [c for c in _l(summary.get("comparisons")) if isinstance(c, dict)]


def _ci_label(summary: Mapping[str, Any]) -> str:
    conf = _f(summary.get("confidence")) or 0.95
    return f"{conf * 100:g} % CI"


# --- content ---------------------------------------------------------------------------------


def confound_items(
    summary: Mapping[str, Any], manifest: Mapping[str, Any]
) -> list[tuple[str, str]]:
    """One (field, its value in every arm) per allowed confound."""
    items = _l(summary.get("allowed_confounds")) or _l(manifest.get("allowed_confounds"))
    out = []
    for item in (i for i in items if isinstance(i, dict)):
        values = _d(item.get("values"))
        per_arm = ", ".join(f"{arm} = {value_text(v)}" for arm, v in values.items())
        out.append((str(item.get("field", "?")), per_arm or "values not recorded"))
    return out


def comparison_phrase(c: Mapping[str, Any], ci: str = "95 % CI") -> str:
    """ "decode 1.18x faster (95 % CI 1.09-1.27)": the analyser's words, or ours from numbers."""
    given = c.get("summary")
    if isinstance(given, str) and given.strip():
        return given.strip()
    metric = str(c.get("metric", "?"))
    name = SHORT_NAMES.get(metric, metric)
    ratio, lo, hi = _f(c.get("ratio")), _num(c.get("ci_low")), _num(c.get("ci_high"))
    if ratio is None:
        return f"{name}: no data to compare"
    verdict = c.get("verdict")
    interval = f"{ci} {lo}-{hi}"
    if verdict == "no_difference":
        band = _f(c.get("min_effect"))
        within = f", within +/-{band * 100:g} %" if band is not None else ""
        return f"{name} no difference (ratio {ratio:.2f}, {interval}{within})"
    if verdict in ("better", "worse"):
        return f"{name} {_direction(metric, ratio)} ({interval})"
    needed = c.get("blocks_needed")
    more = f"; about {needed} blocks per arm would decide" if needed else ""
    return f"{name} inconclusive (ratio {ratio:.2f}, {interval}{more})"


def _direction(metric: str, ratio: float) -> str:
    unit = METRIC_BY_NAME[metric].unit if metric in METRIC_BY_NAME else ""
    up, down = {"tok/s": ("faster", "slower"), "s": ("slower", "faster")}.get(
        unit, ("higher", "lower")
    )
    if ratio >= 1:
        return f"{ratio:.2f}x {up}"
    return f"{1 / ratio:.2f}x {down} (ratio {ratio:.2f})" if ratio > 0 else f"ratio {ratio:.2f}"


def verdicts(summary: Mapping[str, Any]) -> list[tuple[str, str]]:
    """One (candidate, sentence) per candidate and concurrency level, every metric in it."""
    comps = _comparisons(summary)
    multi = len({c.get("concurrency") for c in comps}) > 1
    ci = _ci_label(summary)
    groups: dict[tuple[str, Any], list[str]] = {}
    for c in comps:
        key = (str(c.get("candidate", "?")), c.get("concurrency") if multi else None)
        groups.setdefault(key, []).append(comparison_phrase(c, ci))
    out = [
        (f"{cand}{f' at concurrency {conc}' if multi else ''}", ", ".join(phrases))
        for (cand, conc), phrases in groups.items()
    ]
    compared = {cand for cand, _ in groups}
    for arm in arm_order(summary)[1:]:
        if arm not in compared:
            a = _d(_d(summary.get("arms")).get(arm))
            out.append((arm, f"not compared: {a.get('n_ok', '?')} successful and "
                             f"{a.get('n_failed', '?')} failed trial requests"))  # fmt: skip
    return out


def comparison_table(summary: Mapping[str, Any]) -> Table:
    ci = _ci_label(summary)
    rows = []
    for c in _comparisons(summary):
        band = _f(c.get("min_effect"))
        rows.append((
            str(c.get("metric", "?")), str(c.get("candidate", "?")),
            str(c.get("baseline", summary.get("baseline", "?"))), str(c.get("concurrency", "-")),
            _num(c.get("ratio"), ".3f"), _interval(c.get("ci_low"), c.get("ci_high")),
            _num(c.get("ratio_mean"), ".3f"), str(c.get("verdict", "-")),
            "-" if band is None else f"+/-{band * 100:g} %", str(c.get("n_blocks", "-")),
            "-" if c.get("blocks_needed") is None else str(c["blocks_needed"]),
        ))  # fmt: skip
    headers = (
        "metric", "candidate", "baseline", "concurrency", "ratio (medians)", ci,
        "ratio (means)", "verdict", "no-difference band", "blocks", "blocks needed",
    )  # fmt: skip
    return Table(headers, tuple(rows))


def _interval(lo: Any, hi: Any) -> str:
    if _f(lo) is None and _f(hi) is None:
        return "-"
    return f"{_num(lo, '.3f')}-{_num(hi, '.3f')}"


def _counts(x: Any) -> str:
    items = sorted(_d(x).items())
    return ", ".join(f"{k}: {v}" for k, v in items) if items else "-"


def arm_table(summary: Mapping[str, Any]) -> Table:
    arms, base = _d(summary.get("arms")), summary.get("baseline")
    rows = []
    for arm in arm_order(summary):
        a = _d(arms.get(arm))
        role = "baseline" if arm == base else "candidate"
        rows.append((
            arm, role, str(a.get("n_ok", "-")), str(a.get("n_failed", "-")),
            str(a.get("n_warmup", "-")), str(a.get("n_blocks", "-")), _counts(a.get("failures")),
            _counts(a.get("finish_reasons")),
        ))  # fmt: skip
    headers = (
        "arm", "role", "ok", "failed", "warm-up", "blocks", "failures", "finish reasons",
    )  # fmt: skip
    return Table(headers, tuple(rows))


def _shown_metrics(summary: Mapping[str, Any]) -> list[str]:
    arms = [_d(a) for a in _d(summary.get("arms")).values()]
    present = {
        m
        for a in arms
        for m, s in _d(a.get("metrics")).items()
        if _f(_d(s).get("median")) is not None
    }
    decision = decision_metrics(summary)
    rest = [m for m in (*SHOWN, *sorted(present)) if m in present and m not in decision]
    return list(dict.fromkeys(decision + rest))


def metric_table(summary: Mapping[str, Any]) -> Table:
    """Rows are metrics, a column per arm: median / p90 (n when it differs from the ok count)."""
    order, arms = arm_order(summary), _d(summary.get("arms"))
    rows = []
    for metric in _shown_metrics(summary):
        unit = METRIC_BY_NAME[metric].unit if metric in METRIC_BY_NAME else ""
        cells = [f"{metric} ({unit})" if unit else metric]
        for arm in order:
            a = _d(arms.get(arm))
            s = _d(_d(a.get("metrics")).get(metric))
            if _f(s.get("median")) is None:
                cells.append("-")
                continue
            n = s.get("n")
            n_note = f" (n={n})" if n is not None and n != a.get("n_ok") else ""
            cells.append(f"{fmt_metric(metric, s['median'])} / {fmt_metric(metric, s.get('p90'))}"
                         f"{n_note}")  # fmt: skip
        rows.append(tuple(cells))
    return Table(("metric", *order), tuple(rows))


def _rate_keys(summary: Mapping[str, Any]) -> list[str]:
    keys: dict[str, None] = {}
    for a in _d(summary.get("arms")).values():
        for k, v in _d(a).items():
            if isinstance(v, dict) and "p" in v:
                keys[k] = None
    return sorted(keys, key=lambda k: (k != "error_rate", k))


def rate_table(summary: Mapping[str, Any], ci: str) -> Table:
    keys, arms = _rate_keys(summary), _d(summary.get("arms"))
    rows = []
    for arm in arm_order(summary):
        a = _d(arms.get(arm))
        cells = [arm]
        for k in keys:
            r = _d(a.get(k))
            counts = f", {r['k']} of {r['n']}" if "k" in r and "n" in r else ""
            ci_text = f" ({_pct(r.get('ci_low'))} - {_pct(r.get('ci_high'))})"
            has_p = _f(r.get("p")) is not None
            cells.append(f"{_pct(r.get('p'))}{ci_text if has_p else ''}{counts}" if r else "-")
        rows.append(tuple(cells))
    return Table(("arm", *(f"{k} (Wilson {ci})" for k in keys)), tuple(rows))


def proportion_table(summary: Mapping[str, Any]) -> Table | None:
    props = [p for p in _l(summary.get("proportions")) if isinstance(p, dict)]
    if not props:
        return None
    rows = tuple(
        (
            str(p.get("metric", "?")), str(p.get("baseline", "?")), str(p.get("candidate", "?")),
            _pct(p.get("baseline_p")), _pct(p.get("candidate_p")), _pct(p.get("difference")),
            _num(p.get("p_value"), ".3g"), str(p.get("verdict", "-")),
        )
        for p in props
    )  # fmt: skip
    headers = ("rate", "baseline", "candidate", "baseline rate", "candidate rate", "difference",
               "p-value (exact test)", "verdict")  # fmt: skip
    return Table(headers, rows)


def sweep_table(summary: Mapping[str, Any]) -> Table | None:
    sweep = _d(summary.get("sweep"))
    rows = []
    for arm, points in sweep.items():
        for p in sorted((p for p in _l(points) if isinstance(p, dict)),
                        key=lambda p: _f(p.get("concurrency")) or 0):  # fmt: skip
            rows.append((
                str(arm), str(p.get("concurrency", "-")), _num(p.get("aggregate_tps"), ".1f"),
                _num(p.get("per_stream_tps"), ".1f"), fmt_metric("ttft_s", p.get("ttft_s")),
                _num(p.get("efficiency"), ".2f"),
            ))  # fmt: skip
    if not rows:
        return None
    headers = ("arm", "concurrency", "aggregate tok/s", "per-stream tok/s", "median TTFT",
               "scaling efficiency")  # fmt: skip
    return Table(headers, tuple(rows))


def has_sweep_plot(summary: Mapping[str, Any]) -> bool:
    levels = {p.get("concurrency") for pts in _d(summary.get("sweep")).values()
              for p in _l(pts) if isinstance(p, dict)}  # fmt: skip
    return len(levels) > 1


def config_diff_table(summary: Mapping[str, Any], manifest: Mapping[str, Any]) -> Table | None:
    diff = _d(summary.get("config_diff")) or _d(manifest.get("config_diff"))
    if not diff:
        return None
    order = arm_order(summary) or sorted({a for v in diff.values() for a in _d(v)})
    declared = {str(x) for x in _l(manifest.get("declared"))}
    confounds = {str(_d(c).get("field")) for c in _l(summary.get("allowed_confounds"))}
    rows = []
    for field, values in diff.items():
        v = _d(values)
        why = ("allowed confound" if field in confounds
               else "declared" if field in declared else "")  # fmt: skip
        rows.append((str(field), *(value_text(v.get(a)) for a in order), why))
    return Table(("field", *order, "note"), tuple(rows))


def stopping_items(
    summary: Mapping[str, Any], manifest: Mapping[str, Any]
) -> list[tuple[str, str]]:
    st = _d(summary.get("stopping"))
    first = [k for k in ("rule", "looks", "stopped_early", "reason") if k in st]
    items = [
        (k.replace("_", " "), "yes" if v is True else "no" if v is False else value_text(v))
        for k, v in ((k, st[k]) for k in (*first, *(k for k in st if k not in first)))
        if v is not None and not isinstance(v, dict | list)
    ]
    for look in (x for x in _l(manifest.get("looks")) if isinstance(x, dict)):
        decided = "decided" if look.get("decided") else "continued"
        items.append((f"look after block {look.get('after_block', '?')}",
                      f"{decided}: {look.get('reason', '')}".rstrip(": ")))  # fmt: skip
    if manifest.get("status"):
        items.append(("run status", str(manifest["status"])))
    return items


def _describes(arm_entry: Mapping[str, Any]) -> list[dict[str, Any]]:
    starts = [_d(_d(s).get("describe")) for s in _l(arm_entry.get("starts"))]
    found = [d for d in starts if d] or [d for d in (_d(arm_entry.get("describe")),) if d]
    return found


def host_items(manifest: Mapping[str, Any]) -> list[tuple[str, str]]:
    items = [(k.replace("_", " "), str(manifest[k]))
             for k in ("run_id", "kind", "servelab_version", "created_utc", "spec_path")
             if manifest.get(k)]  # fmt: skip
    host = _d(manifest.get("host"))
    if not host:
        return [*items, ("host", "not recorded in the manifest (imported runs carry none)")]
    mem = _f(host.get("memory_total_bytes"))
    gpus = [_d(g) for g in _l(host.get("gpus"))]
    gpu_text = "; ".join(
        f"{g.get('name', '?')} (driver {g.get('driver', '?')}, {g.get('memory', '?')})"
        for g in gpus
    )
    load = [_num(x, ".2f") for x in _l(host.get("loadavg"))]
    facts = [
        ("CPU", host.get("cpu_model")),
        ("cores", f"{host.get('cpu_count_physical', '?')} physical, "
                  f"{host.get('cpu_count_logical', '?')} logical"),
        ("memory", f"{mem / 2**30:.1f} GiB" if mem else None),
        ("OS", host.get("os")), ("Python", host.get("python")), ("hostname", host.get("hostname")),
        ("GPU", gpu_text or "none detected"),
        ("load average at start (1, 5, 15 min)", " / ".join(load) if load else None),
    ]  # fmt: skip
    return items + [(k, str(v)) for k, v in facts if v]


def engine_table(manifest: Mapping[str, Any]) -> Table | None:
    rows = []
    for arm, entry in _d(manifest.get("arms")).items():
        ds = _describes(_d(entry))
        if not ds:
            continue
        d = ds[0]
        builds = list(
            dict.fromkeys(str(x.get("build_info") or x.get("version") or "?") for x in ds)
        )
        build = builds[0] if len(builds) == 1 else "CHANGED between starts: " + ", ".join(builds)
        rows.append((
            str(arm), str(d.get("kind", "?")), build, str(d.get("commit") or "-"),
            str(d.get("binary_sha256") or "-")[:12], str(d.get("model_name") or "-"),
            str(d.get("model_sha256") or "-"), str(len(ds)),
        ))  # fmt: skip
    if not rows:
        return None
    headers = ("arm", "engine", "build", "commit", "binary sha256", "model", "model sha256",
               "starts")  # fmt: skip
    return Table(headers, tuple(rows))


def import_items(manifest: Mapping[str, Any]) -> list[tuple[str, str]]:
    source = _d(manifest.get("source"))
    items = [("imported from", str(source["format"]))] if source.get("format") else []
    for f in (_d(x) for x in _l(source.get("files"))):
        items.append(("file", f"{f.get('path', '?')} (sha256 {f.get('sha256', '?')})"))
    items += [("note", str(n)) for n in _l(manifest.get("notes"))]
    return items


def warning_items(summary: Mapping[str, Any]) -> list[tuple[str, str]]:
    items = []
    for w in (x for x in _l(summary.get("warnings")) if isinstance(x, dict)):
        arm = f" ({w['arm']})" if w.get("arm") else ""
        detail = str(w.get("detail") or "").strip()
        if detail and w.get("advice"):
            detail += "" if detail.endswith((".", "!", "?")) else "."
        advice = f" Advice: {w['advice']}" if w.get("advice") else ""
        items.append((f"{w.get('kind', 'warning')}{arm}", f"{detail}{advice}".strip()))
    return items


def _reply_body(row: Row) -> str:
    parts = []
    if row.get("outcome") not in (None, "ok"):
        parts.append(f"error: {row.get('error') or '(no message)'}")
    if row.get("reasoning"):
        parts.append("[reasoning] " + truncate(str(row["reasoning"]), REPLY_CHARS // 3))
    if row.get("text"):
        parts.append(truncate(str(row["text"]), REPLY_CHARS))
    for call in (_d(c) for c in _l(row.get("tool_calls"))):
        args = truncate(str(call.get("arguments", "")), REPLY_CHARS // 2)
        parts.append(f"[tool call] {call.get('name', '?')}({args})")
    return "\n".join(parts) or "(empty reply)"


def sample_rows(rows: Sequence[Row], arm: str) -> list[Row]:
    """A few successful trial replies (distinct prompts first) and a few failures, by seq."""
    trial = in_order(trials(rows, arm))
    ok = [r for r in trial if r.get("outcome") == "ok"]
    first = {r.get("prompt_id"): r for r in reversed(ok)}  # earliest row of each prompt
    distinct = [r for r in ok if first[r.get("prompt_id")] is r]
    ids = {id(r) for r in distinct}
    chosen = (distinct + [r for r in ok if id(r) not in ids])[:SAMPLES_OK]
    return chosen + [r for r in trial if r.get("outcome") != "ok"][:SAMPLES_FAILED]


def replies(rows: Sequence[Row], arms: Sequence[str]) -> list[Block]:
    blocks: list[Block] = []
    for arm in list(dict.fromkeys([*arms, *(str(r.get("arm")) for r in rows)])):
        chosen = sample_rows(rows, arm)
        blocks.append(Heading(arm))
        if not chosen:
            blocks.append(Para("No trial requests recorded."))
        for r in chosen:
            head = (f"{r.get('prompt_id', '?')} (block {r.get('block', '?')}, concurrency "
                    f"{r.get('concurrency', '?')}): {r.get('outcome', '?')}, {r.get('n_out', '?')}"
                    f" tokens, finish {r.get('finish_reason') or '-'}")  # fmt: skip
            blocks.append(Reply(head, _reply_body(r)))
    return blocks


def report_title(summary: Mapping[str, Any], manifest: Mapping[str, Any]) -> str:
    return f"servelab report: {summary.get('run_id') or manifest.get('run_id') or 'run'}"


def report_sections(
    summary: Mapping[str, Any], manifest: Mapping[str, Any], rows: Sequence[Row] | None = None
) -> list[Section]:
    """Every section of a report, in reading order (docs/report.md)."""
    ci = _ci_label(summary)
    sections = []
    confounds = confound_items(summary, manifest)
    if confounds:
        lead = ("The arms differ in fields the spec did not declare, and the run went ahead "
                "with --allow-confound. Any difference below may come from these fields rather "
                "than from the change under test.")  # fmt: skip
        sections.append(Section("confounds", "Confounded comparison",
                                (Para(lead), KeyValues(tuple(confounds))), alert=True))  # fmt: skip
    gate_blocks = gates_blocks(summary)
    if gate_blocks:
        sections.append(Section("gates", "Gates", gate_blocks))
    sections += [
        Section("verdicts", "Verdicts", _verdict_blocks(summary, ci)),
        Section("arms", "Arms and metrics", (
            arm_table(summary),
            Para("Median / p90 over successful trial requests; warm-ups and failed requests "
                 "never enter these figures."),
            metric_table(summary),
        )),
        Section("proportions", "Error and truncation rates", tuple(
            b for b in (rate_table(summary, ci), proportion_table(summary)) if b is not None
        )),
        Section("quality", "Quality", quality_blocks(summary)),
        Section("distributions", "Distributions", (Figures(
            "distributions", "the distribution of each decision metric per arm"),)),
        Section("drift", "Per-block drift", (Para(
            "Median of each block against time, arms interleaved: a trend shared by all arms is "
            "drift of the machine, which interleaving cancels; a jump in one arm is not."),
            Figures("drift", "the per-block medians over time"))),
        Section("sweep", "Concurrency", _sweep_blocks(summary)),
        Section("theory", "Theory beside measurement", theory_blocks(summary)),
        Section("config", "Configuration differences", _config_blocks(summary, manifest)),
        Section("stopping", "Stopping record", _kv_or(stopping_items(summary, manifest),
                                                      "No stopping record.")),
        Section("environment", "Environment", _environment_blocks(manifest)),
        Section("warnings", "Warnings", _kv_or(warning_items(summary), "None.")),
        Section("samples", "Sample replies", tuple(replies(rows, arm_order(summary))) if rows
                else (Para("Sample replies are shown in report.html."),)),
    ]  # fmt: skip
    return sections


def _kv_or(items: list[tuple[str, str]], empty: str) -> tuple[Block, ...]:
    return (KeyValues(tuple(items)),) if items else (Para(empty),)


def _verdict_blocks(summary: Mapping[str, Any], ci: str) -> tuple[Block, ...]:
    sentences = verdicts(summary)
    if not sentences:
        return (Para("No comparisons: this run has a single arm or no decision metric."),)
    blocks: list[Block] = [
        Para(f"Each candidate against the baseline {summary.get('baseline', '?')}: ratio of "
             f"medians, candidate / baseline, {ci} from a bootstrap over blocks."),
        KeyValues(tuple(sentences)),
    ]  # fmt: skip
    levels = {x for c in _comparisons(summary) if (x := _f(c.get("confidence_level")))}
    conf = _f(summary.get("confidence")) or 0.95
    if len(levels) == 1 and abs(next(iter(levels)) - conf) > 1e-9:
        blocks.append(Para(f"Sequential looks: each interval is computed at the "
                           f"{next(iter(levels)) * 100:.2f} % level so that the run as a whole "
                           f"keeps its {conf * 100:g} % confidence."))  # fmt: skip
    if summary.get("interleaved") is False:
        blocks.append(Para("The arms were NOT interleaved: drift of the machine between "
                           "arms is not controlled and shows up as a difference."))  # fmt: skip
    n_warn = len(warning_items(summary))
    if n_warn:
        blocks.append(Para(f"{n_warn} warning(s) below qualify these numbers."))
    blocks += [comparison_table(summary), Figures("forest", "the forest plot of these ratios")]
    return tuple(blocks)


def _sweep_blocks(summary: Mapping[str, Any]) -> tuple[Block, ...]:
    table = sweep_table(summary)
    if table is None:
        return (Para("No concurrency sweep recorded."),)
    blocks: list[Block] = [table]
    if has_sweep_plot(summary):
        blocks.insert(0, Figures("sweep", "aggregate tok/s and scaling efficiency against ideal"))
    else:
        blocks.insert(0, Para("One concurrency level: no scaling to plot."))
    return tuple(blocks)


def _config_blocks(summary: Mapping[str, Any], manifest: Mapping[str, Any]) -> tuple[Block, ...]:
    table = config_diff_table(summary, manifest)
    if table is None:
        return (Para("No recorded difference between the arms' effective configurations."),)
    return (Para("Every effective field that differs between arms."), table)


def _environment_blocks(manifest: Mapping[str, Any]) -> tuple[Block, ...]:
    blocks: list[Block] = [KeyValues(tuple(host_items(manifest)))]
    engines = engine_table(manifest)
    blocks.append(engines if engines else Para("No engine description recorded."))
    imported = import_items(manifest)
    if imported:
        blocks.append(KeyValues(tuple(imported)))
    return tuple(blocks)
