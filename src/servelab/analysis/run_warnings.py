"""The warnings a reader of a report must see, each with the advice that fixes it.

``warnings(cfg, facts, rows)`` collects them from the run's recorded facts (allowed confounds,
preflight findings, a managed engine that listened beyond loopback, a build, binary or model
that changed between engine starts) and from the rows (a noisy machine, failed or truncated
requests, arms whose outputs differ in length, prompt-cache hits, cold-start outliers). Kinds
and their order are ``WARNING_KINDS``; docs/summary-json.md lists them. ``client_load_warnings``
reads what driving each block cost the client (``ClientLoad``) against docs/selftest.md's
bounds; ``cache_warnings`` reads the prefix-cache records (``analysis.spec_decode``). Pure: no
files, no clock.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from servelab.analysis.row_selection import (
    Row,
    block_of,
    blocks_of,
    by_arm,
    cells,
    in_order,
    level_of,
    load_level,
    ok_trials,
    trials,
)
from servelab.analysis.settings import RunFacts, Settings
from servelab.records import ClientLoad
from servelab.spec.engine import bind_warning
from servelab.spec.load import LoadLevel
from servelab.stats.summary import summarize
from servelab.store.engine_records import PrefixCacheRecord
from servelab.store.metrics_files import BlockClientLoad
from servelab.store.summary import Warning

LENGTH_MISMATCH = 0.10  # relative difference of median n_out between arms
COLD_START_FACTOR = 3.0  # a trial request this many times its arm's median e2e
NOISY_CV = 0.10  # coefficient of variation of the baseline's block medians
CLIENT_CPU_SHARE = 0.8  # of one core, per client process, over a block
CLIENT_LAG_P99_S = 0.010  # event-loop lag p99 over a block (bench on 2 busy cores: ~4 ms)
CEILING_SHARE = 0.7  # a block's token rate against the saved `servelab selftest` ceiling
CLIENT_MIN_WALL_S = 1.0  # shorter blocks are not judged: a few ms of CPU is no share of a core

# The fixed set of warning kinds, in the order they are listed, with the advice each gives.
ADVICE = {
    "allowed_confound": "declare the field in the spec's `declare`, or make the arms agree",
    "not_interleaved": "rerun both configurations as one experiment (`servelab run`), which "
    "interleaves them block by block",
    "spread_over_nodes": "let every arm run on every node (`placement`), so the rotation of "
    "arms over nodes pairs each node's own speed out of the comparison",
    "preflight": "rerun on a quiet machine, without --force",
    "exposed_bind": "leave out --bind / `engine.bind` so the engine listens on 127.0.0.1 only",
    "noisy_machine": "stop other work on the machine, or raise `blocks` / `stop.max_blocks` so "
    "the interleaved rounds can average the drift out",
    "build_changed": "do not rebuild or upgrade the engine during a run; rerun the experiment",
    "synthetic_model": "quality figures (tool calls, script, coherence, perplexity) of a random-"
    "weight model mean nothing: read its speed and memory only, and judge quality on the real "
    "model",
    "shared_engine_starts": "set `restart: every_block` (the default), so each block's engine "
    "start is its own",
    "failed_requests": "read `error` in requests.jsonl and engine-<arm>.log; for timeouts raise "
    "`base.request_timeout_s`",
    "truncated_outputs": "raise `base.max_tokens`, or set `base.length_matched: true` so every "
    "arm generates exactly max_tokens",
    "output_length_mismatch": "set `base.length_matched: true` in the spec (fixed max_tokens, "
    "EOS ignored) so every arm generates the same number of tokens",
    "prompt_cache_hits": "run without --prefix-cache (servelab then sends cache_prompt: false)",
    "cold_start_outliers": "raise `warmup` (warm-up requests after every engine start)",
    "client_near_ceiling": "run `servelab selftest` to see this machine's client ceiling; lower "
    "--concurrency / --rate (the spec's `load`), or drive the engine from a machine with more "
    "free cores",
    "cache_hits_with_caching_off": "look for what turned caching back on in the arm's `flags` "
    "(vLLM: --enable-prefix-caching; llama.cpp: --cache-reuse), or set `prefix_cache: true` "
    "if the arm is meant to cache prompts",
}
WARNING_KINDS = tuple(ADVICE)


def _warning(kind: str, detail: str, arm: str | None = None, advice: str | None = None) -> Warning:
    return Warning(kind=kind, arm=arm, detail=detail, advice=advice or ADVICE[kind])


def _confound_warnings(facts: RunFacts) -> list[Warning]:
    out = []
    for c in facts.confounds:
        values = ", ".join(f"{a}={v!r}" for a, v in c.values.items())
        detail = (
            f"arms also differ in {c.field} ({values}), run anyway with --allow-confound: "
            "a difference may come from this field, not the one studied"
        )
        out.append(_warning("allowed_confound", detail))
    return out


def _not_interleaved(cfg: Settings) -> list[Warning]:
    if cfg.interleaved or len(cfg.arms) < 2:
        return []
    detail = (
        "the arms were not run in interleaved rounds: drift of the machine or the software "
        "between the runs cannot be separated from the configuration effect; the intervals "
        "cover the noise within the runs (each arm's blocks resampled on their own, or, for "
        "one pass through the prompts, the spread of the prompt-paired ratios), not the "
        "difference between two engine starts"
    )
    return [_warning("not_interleaved", detail)]


def spread_warnings(rows: Sequence[Row]) -> list[Warning]:
    """A run spread over Ray nodes (rows with ``node``): what ran at the same time, and any
    arm that did not visit every node the others did."""
    nodes_of: dict[str, set[str]] = {}
    for r in trials(rows):
        node = r.get("node")
        if isinstance(node, str):
            nodes_of.setdefault(str(r.get("arm")), set()).add(node)
    every = set().union(*nodes_of.values()) if nodes_of else set()
    if len(every) < 2:
        return []
    missing = {arm: sorted(every - mine) for arm, mine in nodes_of.items() if mine != every}
    detail = (
        f"blocks ran on {len(every)} Ray nodes ({', '.join(sorted(every))}): the blocks of one "
        "round ran at the same time on different nodes, rounds one after another; the arms are "
        "paired within rounds, so drift over time is shared, but each node's own load and speed "
        "are shared only by arms that visited it"
    )
    if missing:
        gaps = "; ".join(f"{arm} never ran on {', '.join(n)}" for arm, n in missing.items())
        detail += f" ({gaps})"
    return [_warning("spread_over_nodes", detail)]


def _preflight_warnings(facts: RunFacts) -> list[Warning]:
    return [_warning("preflight", f.detail, advice=f.advice) for f in facts.findings]


def _bind_warnings(facts: RunFacts) -> list[Warning]:
    """Arms whose managed engine listened where other machines could reach it."""
    out = []
    for arm, info in facts.arms.items():
        detail = bind_warning(info.bind) if info.bind is not None else None
        if detail:
            out.append(_warning("exposed_bind", detail, arm=arm))
    return out


def _level_words(level: LoadLevel) -> str:
    return f"concurrency {level.concurrency}" if level.rate_rps is None else level.label


def _noisy_warnings(cfg: Settings, rows: Sequence[Row]) -> list[Warning]:
    metric = "decode_tps" if "decode_tps" in cfg.decision_metrics else cfg.decision_metrics[0]
    worst: tuple[float, LoadLevel] | None = None
    for level, cell in cells(rows).get(cfg.baseline, {}).items():
        medians = [float(np.median(v)) for v in blocks_of(cell, metric).values()]
        if len(medians) >= 3 and np.mean(medians) > 0:
            cv = float(np.std(medians, ddof=1) / np.mean(medians))
            worst = max(worst or (cv, level), (cv, level))
    if worst is None or worst[0] <= NOISY_CV:
        return []
    detail = (
        f"the baseline's {metric} varies {worst[0] * 100:.0f} % (coefficient of variation of "
        f"block medians) at {_level_words(worst[1])}, above {NOISY_CV * 100:g} %"
    )
    return [_warning("noisy_machine", detail, cfg.baseline)]


_BUILD_KEYS = (("build_info", "build"), ("binary_sha256", "binary"), ("model_sha256", "model"))


def _build_warnings(facts: RunFacts) -> list[Warning]:
    out = []
    for arm, info in facts.arms.items():
        for key, what in _BUILD_KEYS:
            seen = [getattr(s, key) for s in info.starts]
            distinct = list(dict.fromkeys(str(v) for v in seen if v is not None))
            if len(distinct) > 1:
                detail = f"the engine's {what} changed between blocks: {', '.join(distinct)}"
                out.append(_warning("build_changed", detail, arm))
    return out


def _synthetic_warnings(facts: RunFacts) -> list[Warning]:
    """One warning per synthetic shape: for its arm, or naming the arms that share it."""
    by_like: dict[str, list[str]] = {}
    for arm, info in facts.arms.items():
        if like := info.effective.get("model.synthetic"):
            by_like.setdefault(str(like), []).append(arm)
    out = []
    for like, arms in by_like.items():
        who = "the model is" if len(arms) == 1 else f"arms {', '.join(arms)} run a model that is"
        detail = (f"{who} synthetic (random weights shaped like {like}, from `servelab models "
                  "synth`): its replies are not text")  # fmt: skip
        out.append(_warning("synthetic_model", detail, arms[0] if len(arms) == 1 else None))
    return out


def _shared_start_warnings(
    cfg: Settings, facts: RunFacts, grouped: Mapping[str, Sequence[Row]]
) -> list[Warning]:
    """Blocks run on an engine started for an earlier block (``restart: arm_change``).

    Each start settles at its own speed; blocks that share one are not independent, and the
    bootstrap over rounds then gives intervals that are too narrow (docs/experiments.md).
    """
    out = []
    for arm in cfg.arms:
        starts = facts.arm(arm).starts
        if not starts:
            continue  # an import or a bench: nothing recorded about engine starts
        started = {(s.block, s.concurrency) for s in starts}
        blocks = {(block_of(r), level_of(r)) for r in trials(grouped.get(arm, ()))}
        if shared := len(blocks - started):
            detail = (
                f"{shared} of {len(blocks)} blocks ran on an engine started for an earlier "
                "block: they share that start's speed, so the intervals may be too narrow"
            )
            out.append(_warning("shared_engine_starts", detail, arm))
    return out


def _cache_hits(rows: Iterable[Row]) -> int:
    return sum(((r.get("server_timings") or {}).get("cache_n") or 0) > 0 for r in rows)


def _row_warnings(cfg: Settings, grouped: Mapping[str, Sequence[Row]]) -> list[Warning]:
    out = []
    for arm in cfg.arms:
        tried, ok = trials(grouped.get(arm, ())), ok_trials(grouped.get(arm, ()))
        failed = Counter(str(r.get("outcome")) for r in tried if r.get("outcome") != "ok")
        if failed:
            what = ", ".join(f"{n} {k}" for k, n in sorted(failed.items()))
            detail = (
                f"{sum(failed.values())} of {len(tried)} trial requests failed ({what}); "
                "they are left out of every latency figure"
            )
            out.append(_warning("failed_requests", detail, arm))
        cut = sum(1 for r in ok if r.get("finish_reason") == "length")
        if cut and not cfg.length_matched:
            detail = f"{cut} of {len(ok)} successful requests stopped at max_tokens"
            out.append(_warning("truncated_outputs", detail, arm))
        if cached := _cache_hits(ok):
            detail = (
                f"{cached} trial request(s) reused prompt tokens from the engine's cache "
                "(timings.cache_n > 0): their TTFT and prefill are not cold figures"
            )
            out.append(_warning("prompt_cache_hits", detail, arm))
    return out


def _length_warnings(cfg: Settings, grouped: Mapping[str, Sequence[Row]]) -> list[Warning]:
    def median_out(arm: str) -> float | None:
        return summarize(r.get("n_out") for r in ok_trials(grouped.get(arm, ()))).median

    out = []
    for arm in cfg.candidates():
        ref = cfg.reference_of(arm)
        base, cand = median_out(ref), median_out(arm)
        if base and cand is not None and abs(cand / base - 1) > LENGTH_MISMATCH:
            role = "the baseline" if ref == cfg.baseline else "its reference"
            detail = (
                f"median output length {cand:.0f} tokens vs {base:.0f} for {role} "
                f"{ref}: e2e and throughput compare different work"
            )
            out.append(_warning("output_length_mismatch", detail, arm))
    return out


def _start_blocks(facts: RunFacts, arm: str) -> set[int]:
    return {s.block for s in facts.arm(arm).starts if s.block is not None}


def _slow(ok: Sequence[Row]) -> list[Row]:
    """Requests over COLD_START_FACTOR x the median e2e of their concurrency level."""
    slow: list[Row] = []
    for level in {level_of(r) for r in ok}:
        rows = [r for r in ok if level_of(r) == level]
        median = summarize(r.get("e2e_s") for r in rows).median
        if median:
            slow += [r for r in rows if (r.get("e2e_s") or 0) > COLD_START_FACTOR * median]
    return slow


def _cold_warnings(
    cfg: Settings, facts: RunFacts, grouped: Mapping[str, Sequence[Row]]
) -> list[Warning]:
    out = []
    for arm in cfg.arms:
        ok = ok_trials(grouped.get(arm, ()))
        if not (slow := _slow(ok)):
            continue
        starts, firsts = _start_blocks(facts, arm), dict[int, object]()
        for r in in_order(ok):
            firsts.setdefault(block_of(r), r.get("seq"))
        first = sum(block_of(r) in starts and firsts[block_of(r)] == r.get("seq") for r in slow)
        detail = (
            f"{len(slow)} trial request(s) took over {COLD_START_FACTOR:g}x the arm's median e2e; "
            f"{first} of them the first after an engine start"
        )
        out.append(_warning("cold_start_outliers", detail, arm))
    return out


def warnings(cfg: Settings, facts: RunFacts, rows: Sequence[Row]) -> list[Warning]:
    """Every warning, allowed confounds first; kinds are ``WARNING_KINDS``."""
    grouped = by_arm(rows)
    return [
        *_confound_warnings(facts),
        *_not_interleaved(cfg),
        *spread_warnings(rows),
        *_preflight_warnings(facts),
        *_bind_warnings(facts),
        *_noisy_warnings(cfg, rows),
        *_build_warnings(facts),
        *_synthetic_warnings(facts),
        *_shared_start_warnings(cfg, facts, grouped),
        *_row_warnings(cfg, grouped),
        *_length_warnings(cfg, grouped),
        *_cold_warnings(cfg, facts, grouped),
    ]


# ------------------------------------------------------------------------------ the client's load


def _level_tag(row: Row) -> str:
    """A row's level as the client-load files name it: ``c4`` or ``r2``."""
    level = load_level(row)
    return f"c{level.concurrency}" if level.rate_rps is None else f"r{level.rate_rps:g}"


def _block_rate(rows: Sequence[Row], block: BlockClientLoad) -> float:
    """Tokens per second the client took in over one block (its successful trial requests)."""
    mine = [
        r for r in ok_trials(rows)
        if r.get("arm") == block.arm and block_of(r) == block.block
        and (not block.level or _level_tag(r) == block.level)
    ]  # fmt: skip
    tokens = sum(int(r.get("n_out") or 0) for r in mine)
    return tokens / block.load.wall_s if block.load.wall_s > 0 else 0.0


def _near(load: ClientLoad, rate: float, ceiling: float | None) -> tuple[float, float, float]:
    """(CPU share of a core per process, loop lag p99 in s, share of the ceiling)."""
    cpu = load.cpu_s / load.wall_s / max(load.processes, 1) if load.wall_s > 0 else 0.0
    return cpu, load.loop_lag_p99_s or 0.0, rate / ceiling if ceiling else 0.0


def _over(figures: tuple[float, float, float]) -> bool:
    cpu, lag, share = figures
    return cpu >= CLIENT_CPU_SHARE or lag > CLIENT_LAG_P99_S or share >= CEILING_SHARE


def client_load_warnings(
    loads: Sequence[BlockClientLoad],
    rows: Sequence[Row],
    ceiling_tokens_per_s: float | None = None,
) -> list[Warning]:
    """``client_near_ceiling`` for each arm with a block whose client ran near its limits:
    ``CLIENT_CPU_SHARE`` of a core, an event-loop lag p99 over ``CLIENT_LAG_P99_S``, or a
    token rate of ``CEILING_SHARE`` of the saved selftest ceiling (docs/selftest.md). Blocks
    shorter than ``CLIENT_MIN_WALL_S`` are counted but not judged."""
    near: dict[str, list[tuple[float, float, float]]] = {}
    blocks: Counter[str] = Counter()
    for block in loads:
        blocks[block.arm] += 1
        if block.load.wall_s < CLIENT_MIN_WALL_S:
            continue
        figures = _near(block.load, _block_rate(rows, block), ceiling_tokens_per_s)
        if _over(figures):
            near.setdefault(block.arm, []).append(figures)
    return [
        _client_warning(arm, found, blocks[arm], ceiling_tokens_per_s)
        for arm, found in near.items()
    ]


def _client_warning(
    arm: str, found: Sequence[tuple[float, float, float]], n_blocks: int, ceiling: float | None
) -> Warning:
    cpu, lag, share = (max(f[i] for f in found) for i in range(3))
    what = [f"CPU up to {cpu:.2f} of a core", f"event-loop lag p99 up to {lag * 1000:.1f} ms"]
    if ceiling:
        what.append(
            f"up to {share * 100:.0f} % of this machine's selftest ceiling ({ceiling:,.0f} tok/s)"
        )
    detail = (
        f"in {len(found)} of {n_blocks} blocks the client ran near its own limits "
        f"({', '.join(what)}): its timestamps can be late and it can slow the engine it measures"
    )
    return _warning("client_near_ceiling", detail, arm)


# ------------------------------------------------------------------------------ the prefix cache


def cache_warnings(prefix_cache: Mapping[str, PrefixCacheRecord] | None) -> list[Warning]:
    """``cache_hits_with_caching_off`` for each arm whose effective configuration says prefix
    caching off but whose engine found prompt tokens in its cache anyway."""
    out = []
    for arm, record in (prefix_cache or {}).items():
        if record.caching is False and record.hit_tokens > 0:
            where = "its counters" if record.source == "metrics" else "its replies' cache_n"
            blocks = sum(1 for b in record.blocks if b.hit_tokens > 0)
            detail = (
                f"arm {arm} declares prefix caching off, yet {where} show {record.hit_tokens} "
                f"prompt tokens served from the cache (of {record.queried_tokens} looked up, in "
                f"{blocks} of {len(record.blocks)} blocks): its prefill and TTFT are not cold"
            )
            out.append(_warning("cache_hits_with_caching_off", detail, arm))
    return out
