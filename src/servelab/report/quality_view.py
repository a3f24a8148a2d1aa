"""The report's "Quality" and "Gates" sections, from the summary's quality and gate records.

Owns how quality sits beside speed in the report: per arm every quality rate that has a
population in this run (k of n, with its Wilson interval), the tool-call outcomes and the
script classes behind them (counts, with the target-script share and its interval), each
candidate's difference from the baseline with its exact-test verdict, the coherence flags by
kind, perplexity and KL divergence when ``servelab quality ppl`` has run, and the one line per
arm that a console prints (``arm_quality_words``). Pure.
"""

from __future__ import annotations

from servelab.report.blocks import Block, Para, Table
from servelab.scoring.toolcalls import OUTCOMES
from servelab.store.perplexity import PerplexityDoc
from servelab.store.summary import QualityArm, QualitySection, RateCI, Summary

QUALITY_TEXT = (
    "Every successful trial reply is scored (docs/quality.md): tool calls against the "
    "workload's expectations and the tools' JSON schemas, Chinese script with OpenCC and a "
    "Taiwan-usage allowance, coherence and integrity. Rates are k of n with a Wilson "
    "interval; the per-request scores and their evidence are in quality/scores.jsonl."
)


def _pct(x: object) -> str:
    return f"{x * 100:.1f} %" if isinstance(x, int | float) and not isinstance(x, bool) else "-"


def _rate(r: RateCI | None) -> str:
    if r is None or not r.n:
        return "-"
    return f"{_pct(r.p)} ({_pct(r.ci_low)} - {_pct(r.ci_high)}), {r.k} of {r.n}"


SCRIPT_CLASSES = ("traditional", "neutral", "mixed", "simplified", "none")
"""The script classes in report order (``scoring.script``): Traditional only, Han characters
common to both scripts, both scripts, Simplified only, no Han character at all."""
_SHARES = (  # the target-script shares, each a rate over the prompts asking for Traditional
    ("traditional_rate", "share reading Traditional (traditional or neutral)"),
    ("mixed_rate", "share mixed"),
    ("simplified_rate", "share Simplified"),
)
_HEADLINE = (
    ("tool_accuracy", "tool accuracy"),
    ("false_fire_rate", "false fires"),
    ("args_valid_rate", "args valid"),
    ("traditional_rate", "Traditional"),
)


def _outcome_blocks(q: QualitySection, arms: list[str]) -> list[Block]:
    """Tool-call outcomes per arm (counts): what tool accuracy and false fires are made of."""
    assert q.arms is not None
    counts = {a: q.arms[a].tool_outcomes for a in arms}
    seen = [o for o in OUTCOMES if any(counts[a].get(o) for a in arms)]
    if not seen or seen == ["not_applicable"]:
        return []
    rows = tuple((o, *(str(counts[a].get(o, 0)) for a in arms)) for o in seen)
    return [Table(("tool outcome", *arms), rows)]


def _script_blocks(q: QualitySection, arms: list[str]) -> list[Block]:
    """Script classes per arm (counts of replies with Han characters or to a Chinese prompt),
    then the target-script shares with their Wilson intervals."""
    assert q.arms is not None
    classes = {a: q.arms[a].script_classes for a in arms}
    if not any(classes.values()):
        return []
    names = [*SCRIPT_CLASSES, *sorted({c for v in classes.values() for c in v} - {*SCRIPT_CLASSES})]
    rows: list[tuple[str, ...]] = [
        (name, *(str(classes[a].get(name, 0)) for a in arms)) for name in names
    ]
    rows += [
        (label, *(_rate(q.arms[a].rates.get(metric)) for a in arms))
        for metric, label in _SHARES
        if any(_rate(q.arms[a].rates.get(metric)) != "-" for a in arms)
    ]
    lead = Para(
        "Script classes of the replies (counts), and the shares among replies to prompts "
        "asking for Traditional Chinese (zh-TW), each with its Wilson interval."
    )
    return [lead, Table(("script class", *arms), tuple(rows))]


def arm_quality_words(arm: str, q: QualityArm) -> str:
    """One console line per arm: the headline rates, each with its interval, and the script
    classes, e.g. ``quality full: tool accuracy 61.1 % (38.6 % - 79.7 %), 11 of 18; ...``;
    empty when the arm has none of them."""
    parts = [
        f"{label} {_rate(r)}"
        for name, label in _HEADLINE
        if (r := q.rates.get(name)) is not None and r.n
    ]
    if q.script_classes:
        order = [*SCRIPT_CLASSES, *sorted(set(q.script_classes) - set(SCRIPT_CLASSES))]
        counts = ", ".join(f"{c} {q.script_classes[c]}" for c in order if c in q.script_classes)
        parts.append(f"script classes {counts}")
    return f"quality {arm}: {'; '.join(parts)}" if parts else ""


def _ppl_blocks(ppl: PerplexityDoc) -> list[Block]:
    rows: list[tuple[str, ...]] = []
    for arm, a in ppl.arms.items():
        kld = a.kld or {}
        mean, same = kld.get("mean"), kld.get("same_top_p_pct")
        rows.append((
            arm, f"{a.ppl:.4f} +/- {a.ppl_err:.4f}",
            f"{mean:.6f}" if mean is not None else "-",
            f"{same:.2f} %" if same is not None else "-",
        ))  # fmt: skip
    rows += [(arm, f"not measured: {why}", "-", "-") for arm, why in ppl.skipped.items()]
    lead = Para(
        f"Perplexity of each arm's model and KV configuration on {ppl.text.name} "
        f"(context {ppl.ctx}), and the KL divergence of its token distributions "
        f"from the baseline {ppl.baseline or '?'}'s (llama-perplexity; docs/perplexity.md)."
    )
    return [lead, Table(("arm", "PPL", "KLD mean", "same top token"), tuple(rows))]


def quality_blocks(q: QualitySection | None) -> tuple[Block, ...]:
    if q is None or not q.arms:
        return (Para("No quality scores for this run."),)
    arms = list(q.arms)
    rates = {a: q.arms[a].rates for a in arms}
    metrics = [m for m in q.metrics or () if any(_rate(rates[a].get(m.name)) != "-" for a in arms)]
    blocks: list[Block] = [Para(QUALITY_TEXT)]
    if metrics:
        blocks.append(Table(
            ("rate", "better", *arms),
            tuple((m.name, "higher" if m.higher_is_better else "lower",
                   *(_rate(rates[a].get(m.name)) for a in arms)) for m in metrics),
        ))  # fmt: skip
    blocks += _outcome_blocks(q, arms)
    blocks += _script_blocks(q, arms)
    comps = []
    for arm, by_metric in (q.comparisons or {}).items():
        for m in metrics:
            c = by_metric.get(m.name)
            if c is not None:
                comps.append((arm, m.name, _pct(c.difference),
                               f"{_pct(c.diff_ci_low)} - {_pct(c.diff_ci_high)}",
                               f"{c.p_value or 0:.3g}", c.verdict))  # fmt: skip
    if comps:
        blocks.append(Para(f"Each candidate against the baseline {q.baseline}: "
                           "difference of rates, exact test."))  # fmt: skip
        blocks.append(Table(("candidate", "rate", "difference", "interval", "p-value",
                             "verdict"), tuple(comps)))  # fmt: skip
    flags = {a: q.arms[a].flag_counts for a in arms}
    kinds = sorted({k for f in flags.values() for k, v in f.items() if v})
    if kinds:
        blocks.append(
            Table(
                ("coherence flag", *arms),
                tuple((k, *(str(flags[a].get(k, 0)) for a in arms)) for k in kinds),
            )
        )
    if q.ppl is not None:
        blocks.extend(_ppl_blocks(q.ppl))
    blocks.extend(Para(str(n)) for n in q.notes)
    return tuple(blocks)


def fmt_gate(v: object) -> str:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return "-"
    return f"{v:.4g}"


def gates_blocks(summary: Summary) -> tuple[Block, ...]:
    """Pass / fail per arm and rule, each with its value, interval and threshold."""
    gates = summary.gates
    if not gates:
        return ()
    arms = list(gates)
    rules = list(dict.fromkeys(r for a in arms for r in gates[a]))
    rows = []
    for rule in rules:
        cells = []
        for arm in arms:
            res = gates[arm].get(rule)
            if res is None:
                cells.append("FAIL: - [-, -] vs -")
                continue
            lo, hi = res.interval
            mark = "PASS" if res.passed else "FAIL"
            cells.append(f"{mark}: {fmt_gate(res.value)} [{fmt_gate(lo)}, "
                         f"{fmt_gate(hi)}] vs {fmt_gate(res.threshold)}")  # fmt: skip
        rows.append((rule, *cells))
    required = ", ".join(summary.gates_required or ())
    failed = summary.gates_failed or ()
    lead = (f"A rule holds when its confidence interval clears the threshold (the lower end for "
            f">=, the upper end for <=), not merely the point estimate. Required to pass: "
            f"{required}. " + (f"FAILED: {'; '.join(failed)}." if failed
                               else "Every required arm passes."))  # fmt: skip
    return (Para(lead), Table(("gate", *arms), tuple(rows)))
