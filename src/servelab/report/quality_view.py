"""The report's "Quality" section, from ``summary["quality"]``.

Owns how quality sits beside speed in the report: per arm every quality rate that has a
population in this run (k of n, with its Wilson interval), each candidate's difference from the
baseline with its exact-test verdict, the coherence flags by kind, and perplexity and KL
divergence when ``servelab quality ppl`` has run. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from servelab.report.blocks import Block, Para, Table

QUALITY_TEXT = (
    "Every successful trial reply is scored (docs/quality.md): tool calls against the "
    "workload's expectations and the tools' JSON schemas, Chinese script with OpenCC and a "
    "Taiwan-usage allowance, coherence and integrity. Rates are k of n with a Wilson "
    "interval; the per-request scores and their evidence are in quality/scores.jsonl."
)


def _pct(x: Any) -> str:
    return f"{x * 100:.1f} %" if isinstance(x, int | float) and not isinstance(x, bool) else "-"


def _rate(r: Mapping[str, Any]) -> str:
    if not r.get("n"):
        return "-"
    return f"{_pct(r.get('p'))} ({_pct(r.get('ci_low'))} - {_pct(r.get('ci_high'))}), " \
           f"{r.get('k')} of {r.get('n')}"  # fmt: skip


def _ppl_blocks(ppl: Mapping[str, Any]) -> list[Block]:
    rows = []
    for arm, a in (ppl.get("arms") or {}).items():
        if not isinstance(a, Mapping):
            continue
        raw_kld = a.get("kld")
        kld: Mapping[str, Any] = raw_kld if isinstance(raw_kld, Mapping) else {}
        ppl_v, err = a.get("ppl"), a.get("ppl_err")
        rows.append((
            str(arm),
            f"{ppl_v:.4f} +/- {err:.4f}" if isinstance(ppl_v, float) and isinstance(err, float)
            else str(ppl_v if ppl_v is not None else a.get("note", "-")),
            f"{kld['mean']:.6f}" if isinstance(kld.get("mean"), float) else "-",
            f"{kld['same_top_p_pct']:.2f} %" if isinstance(kld.get("same_top_p_pct"), float)
            else "-",
        ))  # fmt: skip
    text = ppl.get("text") or {}
    lead = Para(
        f"Perplexity of each arm's model and KV configuration on {text.get('name', 'the text')} "
        f"(context {ppl.get('ctx', '?')}), and the KL divergence of its token distributions "
        f"from the baseline {ppl.get('baseline', '?')}'s (llama-perplexity; docs/perplexity.md)."
    )
    return [lead, Table(("arm", "PPL", "KLD mean", "same top token"), tuple(rows))]


def quality_blocks(summary: Mapping[str, Any]) -> tuple[Block, ...]:
    q = summary.get("quality")
    if not isinstance(q, Mapping) or not q.get("arms"):
        return (Para("No quality scores for this run."),)
    arms = list(q["arms"])
    rates = {a: q["arms"][a].get("rates") or {} for a in arms}
    metrics = [m for m in q.get("metrics") or []
               if any((rates[a].get(m["name"]) or {}).get("n") for a in arms)]  # fmt: skip
    blocks: list[Block] = [Para(QUALITY_TEXT)]
    if metrics:
        blocks.append(Table(
            ("rate", "better", *arms),
            tuple((m["name"], "higher" if m["higher_is_better"] else "lower",
                   *(_rate(rates[a][m["name"]]) for a in arms)) for m in metrics),
        ))  # fmt: skip
    comps = []
    for arm, by_metric in (q.get("comparisons") or {}).items():
        for m in metrics:
            c = by_metric.get(m["name"]) if isinstance(by_metric, Mapping) else None
            if isinstance(c, Mapping):
                comps.append((str(arm), m["name"], _pct(c.get("difference")),
                               f"{_pct(c.get('diff_ci_low'))} - {_pct(c.get('diff_ci_high'))}",
                               f"{c.get('p_value', 0):.3g}", str(c.get("verdict"))))  # fmt: skip
    if comps:
        blocks.append(Para(f"Each candidate against the baseline {q.get('baseline')}: "
                           "difference of rates, exact test."))  # fmt: skip
        blocks.append(Table(("candidate", "rate", "difference", "interval", "p-value",
                             "verdict"), tuple(comps)))  # fmt: skip
    flags = {a: q["arms"][a].get("flag_counts") or {} for a in arms}
    kinds = sorted({k for f in flags.values() for k, v in f.items() if v})
    if kinds:
        blocks.append(
            Table(
                ("coherence flag", *arms),
                tuple((k, *(str(flags[a].get(k, 0)) for a in arms)) for k in kinds),
            )
        )
    if isinstance(q.get("ppl"), Mapping):
        blocks.extend(_ppl_blocks(q["ppl"]))
    blocks.extend(Para(str(n)) for n in q.get("notes") or [])
    return tuple(blocks)


def _fmt_gate(v: Any) -> str:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return "-"
    return f"{v:.4g}"


def gates_blocks(summary: Mapping[str, Any]) -> tuple[Block, ...]:
    """Pass / fail per arm and rule, each with its value, interval and threshold."""
    gates = summary.get("gates")
    if not isinstance(gates, Mapping) or not gates:
        return ()
    arms = list(gates)
    rules = list(dict.fromkeys(r for a in arms for r in gates[a]))
    rows = []
    for rule in rules:
        cells = []
        for arm in arms:
            res = gates[arm].get(rule) or {}
            lo, hi = (res.get("interval") or [None, None])[:2]
            mark = "PASS" if res.get("passed") else "FAIL"
            cells.append(f"{mark}: {_fmt_gate(res.get('value'))} [{_fmt_gate(lo)}, "
                         f"{_fmt_gate(hi)}] vs {_fmt_gate(res.get('threshold'))}")  # fmt: skip
        rows.append((rule, *cells))
    required = ", ".join(summary.get("gates_required") or [])
    failed = summary.get("gates_failed") or []
    lead = (f"A rule holds when its confidence interval clears the threshold (the lower end for "
            f">=, the upper end for <=), not merely the point estimate. Required to pass: "
            f"{required}. " + (f"FAILED: {'; '.join(failed)}." if failed
                               else "Every required arm passes."))  # fmt: skip
    return (Para(lead), Table(("gate", *arms), tuple(rows)))
