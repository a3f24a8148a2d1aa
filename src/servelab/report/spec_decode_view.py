"""The report's "Speculative decoding" and "Prefix cache" sections, from the summary's
``spec_decode`` and ``prefix_cache`` records (``store.engine_records``).

Owns how an arm's drafting and prompt caching read, the same whichever engine ran: per arm the
source of its figures (the engine's counters or its replies), drafts, draft and accepted tokens,
acceptance rate, mean accepted length, tokens per verify step and the acceptance at each draft
position; where the replies reported drafts, the acceptance of each request (its distribution
per arm and the first requests listed); and per candidate arm its speed verdict against the
reference beside the speedup theory predicted from the acceptance it measured (the
repeated-baseline control of an A/A arm included). Per arm its prefix-cache hits and per block
how the cache was emptied. Pure: renders the records it is given and computes no statistic;
the renderers escape every string.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from servelab.report.blocks import Block, Para, Table
from servelab.report.comparison_view import ci_label, num
from servelab.store.engine_records import (
    PrefixCacheRecord,
    RequestAcceptance,
    RequestDrafts,
    SpecDecodeRecord,
)
from servelab.store.summary import ArmPrediction, Comparison, SpecPrediction, Summary

POSITIONS_SHOWN = 8  # per-position acceptance beyond this is summarised, not listed
SOURCE_WORDS = {"metrics": "engine counters", "requests": "per-request timings"}
SPEC_LEAD = (
    "Acceptance rate = accepted / draft tokens; mean accepted length = accepted tokens per "
    "draft, and a verify step yields that + 1 tokens; acceptance at position i = drafts whose "
    "i-th token (1 = the first) was accepted / drafts. From the engine's /metrics counter deltas "
    "over the trial blocks (vLLM) or the replies' draft_n / draft_n_accepted (llama.cpp, "
    "with the draft count and positions from its counters when the run stored them)."
)
PER_REQUEST_LEAD = (
    "Acceptance per request = its accepted / draft tokens (the replies' draft_n_accepted / "
    "draft_n). Quartiles over the requests that drafted; a request that drafted nothing has "
    "no acceptance and is counted apart."
)
LISTED_LEAD = "Each arm's first trial requests in run order (block, then send order)."
VERDICT_LEAD = (
    "Each candidate arm against its reference on decode speed (the decision statistic of "
    "decode_tps, one row per decision statistic; the Verdicts section has every metric): "
    "acceptance measured per request, the speedup theory predicts from that acceptance "
    "(Theory beside measurement), and the measured ratio with its interval and verdict. An "
    "arm identical to the baseline is the A/A control: anything but no_difference or "
    "inconclusive there is a false verdict."
)
VERDICT_METRIC = "decode_tps"
CACHE_LEAD = (
    "Prompt tokens the engine found in its prefix cache over the trial blocks, of those it "
    "looked up; each block starts with an empty cache (emptied: how)."
)


def _n(x: float | None, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def positions_text(per_position: Sequence[float]) -> str:
    """``1: 0.92, 2: 0.85, ...`` (1-based), the tail beyond ``POSITIONS_SHOWN`` summarised."""
    if not per_position:
        return "-"
    shown = ", ".join(f"{i + 1}: {p:.2f}" for i, p in enumerate(per_position[:POSITIONS_SHOWN]))
    rest = per_position[POSITIONS_SHOWN:]
    if rest:
        shown += f", ... {len(per_position)}: {rest[-1]:.2f}"
    return shown


def _spec_row(arm: str, r: SpecDecodeRecord) -> tuple[str, ...]:
    covers = f"{r.n_blocks} blocks" + (f", {r.n_requests} requests" if r.n_requests else "")
    return (
        arm, SOURCE_WORDS.get(r.source, r.source), _n(r.drafts, "d"), str(r.draft_tokens),
        str(r.accepted_tokens), f"{r.acceptance_rate * 100:.1f} %",
        _n(r.mean_accepted_length, ".2f"), _n(r.tokens_per_step, ".2f"),
        positions_text(r.per_position), covers,
    )  # fmt: skip


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:.1f} %"


def _distribution_row(arm: str, a: RequestAcceptance) -> tuple[str, ...]:
    no_draft = f"{a.n_no_draft} ({a.no_draft_share * 100:.0f} %)"
    return (arm, str(a.n_requests), no_draft,
            *(_pct(x) for x in (a.min, a.q1, a.median, a.q3, a.max)))  # fmt: skip


def _listed_row(arm: str, d: RequestDrafts) -> tuple[str, ...]:
    return (arm, str(d.block), d.prompt_id, str(d.draft_tokens), str(d.accepted_tokens),
            _pct(d.acceptance_rate))  # fmt: skip


def per_request_blocks(records: Mapping[str, SpecDecodeRecord]) -> tuple[Block, ...]:
    """The distribution of acceptance per request per arm, then each arm's first requests
    (the rest counted in a line); nothing when no record came from the replies."""
    found = {arm: r.per_request for arm, r in records.items() if r.per_request is not None}
    if not found:
        return ()
    dist = Table(("arm", "requests", "drafted nothing", "min", "q1", "median", "q3", "max"),
                 tuple(_distribution_row(arm, a) for arm, a in found.items()))  # fmt: skip
    listed = Table(
        ("arm", "block", "prompt", "draft tokens", "accepted", "acceptance"),
        tuple(_listed_row(arm, d) for arm, a in found.items() for d in a.listed),
    )  # fmt: skip
    more = [f"{arm}: {a.n_requests - len(a.listed)} more" for arm, a in found.items()
            if a.n_requests > len(a.listed)]  # fmt: skip
    tail = (Para("Not listed (in the figures above and in requests.jsonl): "
                 + "; ".join(more) + "."),) if more else ()  # fmt: skip
    return (Para(PER_REQUEST_LEAD), dist, Para(LISTED_LEAD), listed, *tail)


def _decode_comparisons(summary: Summary) -> list[Comparison]:
    return [c for c in summary.comparisons if c.metric == VERDICT_METRIC]


def _prediction(summary: Summary, arm: str) -> SpecPrediction | None:
    t = summary.theory.arms.get(arm) if summary.theory is not None else None
    return t.spec if isinstance(t, ArmPrediction) else None


def _verdict_row(
    c: Comparison, records: Mapping[str, SpecDecodeRecord], summary: Summary, multi: bool
) -> tuple[str, ...]:
    r = records.get(c.candidate)
    a = r.per_request if r is not None else None
    spec = _prediction(summary, c.candidate)
    where = f" @ {c.concurrency}" if multi else ""
    k = r.draft_tokens / r.drafts if r is not None and r.drafts else None
    return (
        f"{c.candidate}{where}", c.baseline, num(k, ".1f"),
        _pct(a.median if a is not None else None), _pct(r.acceptance_rate if r else None),
        num(spec.predicted_speedup if spec else None), c.statistic, num(c.ratio, ".3f"),
        f"{num(c.ci_low, '.3f')}-{num(c.ci_high, '.3f')}", c.verdict,
    )  # fmt: skip


def verdict_blocks(
    records: Mapping[str, SpecDecodeRecord], summary: Summary | None
) -> tuple[Block, ...]:
    """Per candidate arm (and level) of the decode comparisons: K, acceptance, predicted and
    measured speedup, interval and verdict; nothing without a decode comparison."""
    comps = _decode_comparisons(summary) if summary is not None else []
    if summary is None or not comps:
        return ()
    multi = len({c.concurrency for c in comps}) > 1
    rows = tuple(_verdict_row(c, records, summary, multi) for c in comps)
    headers = ("arm", "reference", "K (drafted per draft)", "acceptance (median request)",
               "acceptance (pooled)", "predicted x", "statistic", "measured x",
               ci_label(summary), "verdict")  # fmt: skip
    return (Para(VERDICT_LEAD), Table(headers, rows))


def spec_decode_blocks(
    records: Mapping[str, SpecDecodeRecord] | None, summary: Summary | None = None
) -> tuple[Block, ...]:
    """The section: per arm its drafting figures, acceptance per request (where the replies
    reported it) and, given the ``summary``, the speed verdict per candidate arm beside
    theory's prediction."""
    if not records:
        return (Para("No arm drafted tokens."),)
    rows = tuple(_spec_row(arm, r) for arm, r in records.items())
    headers = ("arm", "source", "drafts", "draft tokens", "accepted", "acceptance rate",
               "mean accepted length", "tokens per step", "acceptance by position",
               "covers")  # fmt: skip
    return (Para(SPEC_LEAD), Table(headers, rows), *per_request_blocks(records),
            *verdict_blocks(records, summary))  # fmt: skip


def _emptied(record: PrefixCacheRecord) -> str:
    how = list(dict.fromkeys(b.emptied or "not recorded" for b in record.blocks))
    return ", ".join(how) if how else "-"


def prefix_cache_blocks(records: Mapping[str, PrefixCacheRecord] | None) -> tuple[Block, ...]:
    if not records:
        return (Para("No arm cached prompts or found prompt tokens in a cache."),)
    caching = {True: "on", False: "off", None: "not recorded"}
    rows = tuple(
        (arm, caching[r.caching], SOURCE_WORDS.get(r.source, r.source), str(r.hit_tokens),
         str(r.queried_tokens), _n(r.hit_rate * 100 if r.hit_rate is not None else None, ".1f")
         + (" %" if r.hit_rate is not None else ""), str(len(r.blocks)), _emptied(r))
        for arm, r in records.items()
    )  # fmt: skip
    headers = ("arm", "caching", "source", "hit tokens", "queried tokens", "hit rate",
               "blocks", "emptied by")  # fmt: skip
    return (Para(CACHE_LEAD), Table(headers, rows))
