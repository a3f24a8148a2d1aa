"""From a run directory's contents to ``summary.json``: the analysis of an experiment or import.

Owns ``analyze`` (manifest dict + request rows -> the summary dict of docs/summary-json.md) and
``look`` (the sequential look the runner takes after each round). Pure: no files, no clock, no
network; the same manifest, rows and seed give the same summary. The statistics themselves live
in ``servelab.stats`` (docs/statistics.md); this module groups rows, picks defaults for older
manifests and imports, words verdicts and collects the warnings a reader must see.
"""

from __future__ import annotations

import zlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from servelab.metrics import METRIC_BY_NAME
from servelab.runner.summary import summarize_arm
from servelab.stats.compare import RatioComparison, compare_blocks, decide
from servelab.stats.proportions import compare_rates, wilson
from servelab.stats.sequential import LookPlan, StopRule, plan_looks, stop_rule
from servelab.stats.summary import summarize
from servelab.stats.sweep import Request, SweepPoint, sweep
from servelab.store import SCHEMA_VERSION

DEFAULT_DECISION_METRICS = ("decode_tps", "ttft_s", "e2e_s")
DEFAULT_MIN_EFFECT = 0.03
DEFAULT_CONFIDENCE = 0.95
DEFAULT_RESAMPLES = 2000
LENGTH_MISMATCH = 0.10  # relative difference of median n_out between arms
COLD_START_FACTOR = 3.0  # a trial request this many times its arm's median e2e
NOISY_CV = 0.10  # coefficient of variation of the baseline's block medians
LABELS = {"decode_tps": "decode", "ttft_s": "TTFT", "e2e_s": "e2e", "tpot_s": "TPOT"}

Row = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Settings:
    """What the analysis needs from a manifest, with defaults for imports and older runs."""

    kind: str
    run_id: str
    arms: tuple[str, ...]  # baseline first
    decision_metrics: tuple[str, ...]
    interleaved: bool
    confidence: float
    min_effect: float
    min_blocks: int
    max_blocks: int | None
    target_ci_width: float | None
    seed: int
    length_matched: bool

    @property
    def baseline(self) -> str:
        return self.arms[0]

    def plan(self) -> LookPlan:
        """The look plan; a fixed-size run (or an import) has one look at the full level."""
        alpha = round(1 - self.confidence, 12)
        if not self.interleaved or self.max_blocks is None or self.max_blocks <= self.min_blocks:
            return plan_looks(1, 1, alpha=alpha)
        return plan_looks(self.min_blocks, self.max_blocks, alpha=alpha)


@dataclass(frozen=True, slots=True)
class StopDecision:
    """The outcome of one sequential look (see ``look``)."""

    stop: bool  # the run may stop now
    decided: bool  # every comparison is better, worse or no_difference
    reason: str
    after_block: int
    n_rounds: int
    confidence_level: float  # the per-look level the intervals used
    comparisons: tuple[dict[str, Any], ...]

    def as_look(self) -> dict[str, Any]:
        """The entry for ``manifest["looks"]``."""
        return {"after_block": self.after_block, "decided": self.decided, "reason": self.reason}


def _get(mapping: Mapping[str, Any] | None, *keys: str) -> Any:
    for key in keys:
        if mapping and mapping.get(key) is not None:
            return mapping[key]
    return None


def settings(manifest: Mapping[str, Any], rows: Sequence[Row] = ()) -> Settings:
    spec = manifest.get("spec") or {}
    stop = manifest.get("stop") or spec.get("stop") or {}
    kind = str(manifest.get("kind") or "experiment")
    seen = list(dict.fromkeys(str(r.get("arm")) for r in rows if r.get("arm") is not None))
    arms = [*(manifest.get("arms") or {}), *seen]
    baseline = _get(manifest, "baseline") or spec.get("baseline") or (arms[0] if arms else "")
    metrics = _get(manifest, "decision_metrics") or _get(spec, "decision_metrics", "metrics") or ()
    interleaved = manifest.get("interleaved")
    max_blocks = stop.get("max_blocks")
    return Settings(
        kind=kind,
        run_id=str(manifest.get("run_id") or ""),
        arms=tuple(dict.fromkeys([str(baseline), *arms])),
        decision_metrics=tuple(metrics) or DEFAULT_DECISION_METRICS,
        interleaved=bool(interleaved) if interleaved is not None else kind != "import",
        confidence=float(manifest.get("confidence") or DEFAULT_CONFIDENCE),
        min_effect=float(stop.get("min_effect") or DEFAULT_MIN_EFFECT),
        min_blocks=int(spec.get("blocks") or 1),
        max_blocks=int(max_blocks) if max_blocks else None,
        target_ci_width=stop.get("target_ci_width"),
        seed=int(_get(manifest, "seed") or spec.get("seed") or 0),
        length_matched=bool(
            _get(spec, "length_matched") or _get(spec.get("base"), "length_matched")
        ),
    )


# ---------------------------------------------------------------------------- rows


def _in_order(rows: Sequence[Row]) -> list[Row]:
    """Rows in plan order (``seq``), so that sums and lists do not depend on file order."""
    return sorted(rows, key=lambda r: int(r.get("seq") or 0))


def _block(row: Row) -> int:
    return int(row.get("block") or 0)


def _trials(rows: Iterable[Row]) -> list[Row]:
    return [r for r in rows if r.get("phase") == "trial"]


def _ok(rows: Iterable[Row]) -> list[Row]:
    return [r for r in _trials(rows) if r.get("outcome") == "ok"]


def _by_arm(rows: Iterable[Row]) -> dict[str, list[Row]]:
    out: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        out[str(row.get("arm"))].append(row)
    return out


def _cells(rows: Iterable[Row]) -> dict[str, dict[int, dict[int, list[Row]]]]:
    """ok trial rows as ``{arm: {concurrency: {block: rows}}}``."""
    out: dict[str, dict[int, dict[int, list[Row]]]] = {}
    for row in _ok(rows):
        level = int(row.get("concurrency") or 1)
        arm = out.setdefault(str(row.get("arm")), {})
        arm.setdefault(level, {}).setdefault(_block(row), []).append(row)
    return out


def _positive(rows: Iterable[Row], metric: str) -> list[float]:
    values = (r.get(metric) for r in rows)
    return [float(v) for v in values if isinstance(v, int | float) and 0 < v < float("inf")]


def _blocks_of(cell: Mapping[int, list[Row]], metric: str) -> dict[int, list[float]]:
    values = {b: _positive(rows, metric) for b, rows in cell.items()}
    return {b: v for b, v in sorted(values.items()) if v}


def _n_rounds(rows: Sequence[Row]) -> int:
    blocks = [_block(r) for r in _trials(rows)]
    return max(blocks) + 1 if blocks else 0


# ---------------------------------------------------------------------------- comparisons


def _rng(seed: int, *key: object) -> np.random.Generator:
    """One generator per comparison, keyed by content so that order does not matter."""
    digest = zlib.crc32("|".join(map(str, key)).encode())
    return np.random.default_rng(np.random.SeedSequence([seed, digest]))


def _compare_cell(
    base: dict[int, list[float]], cand: dict[int, list[float]], paired: bool,
    rng: np.random.Generator, confidence: float, n_resamples: int,
) -> RatioComparison | None:  # fmt: skip
    if paired:
        rounds = sorted(set(base) & set(cand))
        b, c = [base[r] for r in rounds], [cand[r] for r in rounds]
    else:
        b, c = list(base.values()), list(cand.values())
    if not b or not c:
        return None
    return compare_blocks(
        b, c, paired=paired, rng=rng, confidence=confidence, n_resamples=n_resamples
    )


def comparisons(
    cfg: Settings, rows: Sequence[Row], *, confidence: float, n_resamples: int
) -> list[dict[str, Any]]:
    """One comparison per candidate arm, concurrency level (shared by both arms) and metric."""
    cells = _cells(rows)
    base_cells = cells.get(cfg.baseline, {})
    out = []
    for cand in cfg.arms[1:]:
        cand_cells = cells.get(cand, {})
        for level in sorted(set(base_cells) & set(cand_cells)):
            for metric in cfg.decision_metrics:
                rng = _rng(cfg.seed, metric, cfg.baseline, cand, level)
                result = _compare_cell(
                    _blocks_of(base_cells[level], metric), _blocks_of(cand_cells[level], metric),
                    cfg.interleaved, rng, confidence, n_resamples,
                )  # fmt: skip
                out.append(_comparison_dict(cfg, metric, cand, level, result, confidence))
    return out


def _lower_is_better(metric: str) -> bool:
    known = METRIC_BY_NAME.get(metric)
    return bool(known.lower_is_better) if known and known.lower_is_better is not None else False


def _comparison_dict(
    cfg: Settings, metric: str, cand: str, level: int, r: RatioComparison | None,
    confidence: float,
) -> dict[str, Any]:  # fmt: skip
    lower = _lower_is_better(metric)
    out: dict[str, Any] = {
        "metric": metric, "baseline": cfg.baseline, "candidate": cand, "concurrency": level,
        "statistic": "median", "lower_is_better": lower, "ratio": None, "ci_low": None,
        "ci_high": None, "ratio_mean": None, "ci_low_mean": None, "ci_high_mean": None,
        "verdict": "inconclusive", "min_effect": cfg.min_effect, "n_blocks": 0,
        "blocks_needed": None, "paired": cfg.interleaved, "confidence_level": confidence,
        "ci_width": None, "n_blocks_baseline": 0, "n_blocks_candidate": 0,
    }  # fmt: skip
    if r is None:
        out["summary"] = f"{_label(metric)} inconclusive: no successful requests to compare"
        return out
    d = decide(r.median, lower_is_better=lower, min_effect=cfg.min_effect, n_blocks=r.n_blocks)
    lo, hi = r.median.ci_low, r.median.ci_high
    width = hi - lo if lo is not None and hi is not None else None
    out.update(
        ratio=r.median.ratio, ci_low=r.median.ci_low, ci_high=r.median.ci_high,
        ratio_mean=r.mean.ratio, ci_low_mean=r.mean.ci_low, ci_high_mean=r.mean.ci_high,
        verdict=d.verdict, n_blocks=r.n_blocks, blocks_needed=d.blocks_needed, ci_width=width,
        n_blocks_baseline=r.n_blocks_baseline, n_blocks_candidate=r.n_blocks_candidate,
    )  # fmt: skip
    out["summary"] = sentence(out, cfg.confidence)
    return out


def _label(metric: str) -> str:
    return LABELS.get(metric, metric)


def _ci_text(c: Mapping[str, Any], confidence: float) -> str:
    return f"{confidence * 100:g} % CI {c['ci_low']:.2f}-{c['ci_high']:.2f}"


def sentence(c: Mapping[str, Any], confidence: float) -> str:
    """One human sentence for a comparison dict, e.g. "decode 1.18x faster (95 % CI 1.09-1.27)"."""
    label, ratio, verdict = _label(c["metric"]), c["ratio"], c["verdict"]
    if c["ci_low"] is None:
        return f"{label} inconclusive: need at least 2 blocks per arm (ratio {ratio:.2f})"
    ci = _ci_text(c, confidence)
    if verdict == "no_difference":
        return f"{label} no difference (within ±{c['min_effect'] * 100:g} %; {ci})"
    if verdict == "inconclusive":
        need = c["blocks_needed"]
        return f"{label} inconclusive: need ~{need} blocks (ratio {ratio:.2f}, {ci})"
    unit = METRIC_BY_NAME[c["metric"]].unit if c["metric"] in METRIC_BY_NAME else ""
    good, bad = ("faster", "slower") if unit in ("s", "tok/s") else ("better", "worse")
    factor = max(ratio, 1 / ratio)
    word = good if verdict == "better" else bad
    if factor == ratio:
        return f"{label} {factor:.2f}x {word} ({ci})"
    return f"{label} {factor:.2f}x {word} (ratio {ratio:.2f}, {ci})"


# ---------------------------------------------------------------------------- proportions


def _rate_counts(rows: Sequence[Row]) -> dict[str, tuple[int, int]]:
    trials, ok = _trials(rows), _ok(rows)
    failed = sum(1 for r in trials if r.get("outcome") != "ok")
    truncated = sum(1 for r in ok if r.get("finish_reason") == "length")
    return {"error_rate": (failed, len(trials)), "truncated_rate": (truncated, len(ok))}


def _rate_dict(k: int, n: int, confidence: float) -> dict[str, Any]:
    r = wilson(k, n, confidence)
    return {"k": k, "n": n, "p": r.p, "ci_low": r.ci_low, "ci_high": r.ci_high}


def proportions(
    cfg: Settings, by_arm: Mapping[str, Sequence[Row]], confidence: float
) -> list[dict[str, Any]]:
    counts = {arm: _rate_counts(by_arm.get(arm, ())) for arm in cfg.arms}
    out = []
    for cand in cfg.arms[1:]:
        for metric, (kb, nb) in counts[cfg.baseline].items():
            kc, nc = counts[cand][metric]
            r = compare_rates(kb, nb, kc, nc, lower_is_better=True, confidence=confidence)
            entry = {
                "metric": metric, "baseline": cfg.baseline, "candidate": cand,
                "baseline_p": r.baseline.p, "candidate_p": r.candidate.p,
                "baseline_k": kb, "baseline_n": nb, "candidate_k": kc, "candidate_n": nc,
                "difference": r.difference, "diff_ci_low": r.diff_ci_low,
                "diff_ci_high": r.diff_ci_high, "p_value": r.p_value, "verdict": r.verdict,
            }  # fmt: skip
            out.append(entry)
    return out


# ---------------------------------------------------------------------------- arms, sweep


def _arm_summary(rows: Sequence[Row], metrics: Sequence[str], confidence: float) -> dict[str, Any]:
    out = summarize_arm([dict(r) for r in rows])
    ok = _ok(rows)
    for metric in metrics:
        out["metrics"].setdefault(metric, summarize(r.get(metric) for r in ok).as_dict())
    out["n_blocks"] = len({(_block(r), r.get("concurrency")) for r in _trials(rows)})
    for name, (k, n) in _rate_counts(rows).items():
        out[name] = _rate_dict(k, n, confidence)
    levels = sorted({int(r.get("concurrency") or 1) for r in ok})
    if len(levels) > 1:
        out["by_concurrency"] = {
            str(c): {
                m: summarize(r.get(m) for r in ok if int(r.get("concurrency") or 1) == c).as_dict()
                for m in metrics
            }
            for c in levels
        }
    return out


def _request(row: Row) -> Request | None:
    t, e2e, n = row.get("t_send_unix_s"), row.get("e2e_s"), row.get("n_out")
    if not all(isinstance(v, int | float) for v in (t, e2e, n)):
        return None
    return Request(float(t), float(e2e), int(n), row.get("decode_tps"), row.get("ttft_s"))  # type: ignore[arg-type]


def _sweep_point(p: SweepPoint, reference: int | None) -> dict[str, Any]:
    return {
        "concurrency": p.concurrency, "aggregate_tps": p.aggregate_tps,
        "per_stream_tps": p.per_stream_tps, "ttft_s": p.ttft_s, "efficiency": p.efficiency,
        "efficiency_reference": reference, "n_blocks": p.n_blocks,
    }  # fmt: skip


def sweep_table(cfg: Settings, rows: Sequence[Row]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for arm, levels in _cells(rows).items():
        data = {
            c: [[q for q in map(_request, block) if q] for block in blocks.values()]
            for c, blocks in levels.items()
        }
        result = sweep(data)
        out[arm] = [_sweep_point(p, result.reference_concurrency) for p in result.points]
    return {arm: out[arm] for arm in (*cfg.arms, *out) if arm in out}


# ---------------------------------------------------------------------------- warnings

# The fixed set of warning kinds, in the order they are listed, with the advice each gives.
ADVICE = {
    "allowed_confound": "declare the field in the spec's `declare`, or make the arms agree",
    "not_interleaved": "rerun both configurations as one experiment (`servelab run`), which "
    "interleaves them block by block",
    "preflight": "rerun on a quiet machine, without --force",
    "noisy_machine": "stop other work on the machine, or raise `blocks` / `stop.max_blocks` so "
    "the interleaved rounds can average the drift out",
    "build_changed": "do not rebuild or upgrade the engine during a run; rerun the experiment",
    "failed_requests": "read `error` in requests.jsonl and engine-<arm>.log; for timeouts raise "
    "`base.request_timeout_s`",
    "truncated_outputs": "raise `base.max_tokens`, or set `base.length_matched: true` so every "
    "arm generates exactly max_tokens",
    "output_length_mismatch": "set `base.length_matched: true` in the spec (fixed max_tokens, "
    "EOS ignored) so every arm generates the same number of tokens",
    "prompt_cache_hits": "run without --prefix-cache (servelab then sends cache_prompt: false)",
    "cold_start_outliers": "raise `warmup` (warm-up requests after every engine start)",
}
WARNING_KINDS = tuple(ADVICE)


def _warning(
    kind: str, detail: str, arm: str | None = None, advice: str | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": kind, **({"arm": arm} if arm is not None else {})}
    return {**out, "detail": detail, "advice": advice or ADVICE[kind]}


def _confound_warnings(manifest: Mapping[str, Any]) -> list[dict[str, Any]]:
    out = []
    for c in manifest.get("allowed_confounds") or []:
        values = ", ".join(f"{a}={v!r}" for a, v in (c.get("values") or {}).items())
        detail = (
            f"arms also differ in {c.get('field')} ({values}), run anyway with --allow-confound: "
            "a difference may come from this field, not the one studied"
        )
        out.append(_warning("allowed_confound", detail))
    return out


def _not_interleaved(cfg: Settings) -> list[dict[str, Any]]:
    if cfg.interleaved or len(cfg.arms) < 2:
        return []
    detail = (
        "the arms were not run in interleaved rounds: drift of the machine or the software "
        "between the runs cannot be separated from the configuration effect, and each arm's "
        "blocks were resampled on their own"
    )
    return [_warning("not_interleaved", detail)]


def _findings(preflight: Any) -> list[Any]:
    if isinstance(preflight, Mapping):
        preflight = preflight.get("findings") or []
    return list(preflight) if isinstance(preflight, list) else []


def _preflight_warnings(manifest: Mapping[str, Any]) -> list[dict[str, Any]]:
    out = []
    for f in _findings(manifest.get("preflight")):
        if not isinstance(f, Mapping):
            out.append(_warning("preflight", str(f)))
            continue
        if f.get("ok") is True or f.get("passed") is True or f.get("severity") in ("ok", "info"):
            continue
        detail = str(f.get("detail") or f.get("message") or f.get("kind") or dict(f))
        out.append(_warning("preflight", detail, advice=f.get("advice")))
    return out


def _noisy_warnings(cfg: Settings, rows: Sequence[Row]) -> list[dict[str, Any]]:
    metric = "decode_tps" if "decode_tps" in cfg.decision_metrics else cfg.decision_metrics[0]
    worst: tuple[float, int] | None = None
    for level, cell in _cells(rows).get(cfg.baseline, {}).items():
        medians = [float(np.median(v)) for v in _blocks_of(cell, metric).values()]
        if len(medians) >= 3 and np.mean(medians) > 0:
            cv = float(np.std(medians, ddof=1) / np.mean(medians))
            worst = max(worst or (cv, level), (cv, level))
    if worst is None or worst[0] <= NOISY_CV:
        return []
    detail = (
        f"the baseline's {metric} varies {worst[0] * 100:.0f} % (coefficient of variation of "
        f"block medians) at concurrency {worst[1]}, above {NOISY_CV * 100:g} %"
    )
    return [_warning("noisy_machine", detail, cfg.baseline)]


_BUILD_KEYS = (("build_info", "build"), ("binary_sha256", "binary"), ("model_sha256", "model"))


def _build_warnings(manifest: Mapping[str, Any]) -> list[dict[str, Any]]:
    out = []
    for arm, info in (manifest.get("arms") or {}).items():
        starts = (info or {}).get("starts") or []
        for key, what in _BUILD_KEYS:
            seen = [(s.get("describe") or {}).get(key) for s in starts]
            distinct = list(dict.fromkeys(str(v) for v in seen if v is not None))
            if len(distinct) > 1:
                detail = f"the engine's {what} changed between blocks: {', '.join(distinct)}"
                out.append(_warning("build_changed", detail, str(arm)))
    return out


def _cache_hits(rows: Iterable[Row]) -> int:
    return sum(((r.get("server_timings") or {}).get("cache_n") or 0) > 0 for r in rows)


def _row_warnings(cfg: Settings, by_arm: Mapping[str, Sequence[Row]]) -> list[dict[str, Any]]:
    out = []
    for arm in cfg.arms:
        trials, ok = _trials(by_arm.get(arm, ())), _ok(by_arm.get(arm, ()))
        failed = Counter(str(r.get("outcome")) for r in trials if r.get("outcome") != "ok")
        if failed:
            what = ", ".join(f"{n} {k}" for k, n in sorted(failed.items()))
            detail = (
                f"{sum(failed.values())} of {len(trials)} trial requests failed ({what}); "
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


def _length_warnings(cfg: Settings, by_arm: Mapping[str, Sequence[Row]]) -> list[dict[str, Any]]:
    def median_out(arm: str) -> float | None:
        return summarize(r.get("n_out") for r in _ok(by_arm.get(arm, ()))).median

    base = median_out(cfg.baseline)
    out = []
    for arm in cfg.arms[1:]:
        cand = median_out(arm)
        if base and cand is not None and abs(cand / base - 1) > LENGTH_MISMATCH:
            detail = (
                f"median output length {cand:.0f} tokens vs {base:.0f} for the baseline "
                f"{cfg.baseline}: e2e and throughput compare different work"
            )
            out.append(_warning("output_length_mismatch", detail, arm))
    return out


def _start_blocks(manifest: Mapping[str, Any], arm: str) -> set[int]:
    starts = ((manifest.get("arms") or {}).get(arm) or {}).get("starts") or []
    return {int(s["block"]) for s in starts if isinstance(s.get("block"), int)}


def _slow(ok: Sequence[Row]) -> list[Row]:
    """Requests over COLD_START_FACTOR x the median e2e of their concurrency level."""
    slow: list[Row] = []
    for level in {int(r.get("concurrency") or 1) for r in ok}:
        rows = [r for r in ok if int(r.get("concurrency") or 1) == level]
        median = summarize(r.get("e2e_s") for r in rows).median
        if median:
            slow += [r for r in rows if (r.get("e2e_s") or 0) > COLD_START_FACTOR * median]
    return slow


def _cold_warnings(
    cfg: Settings, manifest: Mapping[str, Any], by_arm: Mapping[str, Sequence[Row]]
) -> list[dict[str, Any]]:
    out = []
    for arm in cfg.arms:
        ok = _ok(by_arm.get(arm, ()))
        if not (slow := _slow(ok)):
            continue
        starts, firsts = _start_blocks(manifest, arm), dict[int, Any]()
        for r in sorted(ok, key=lambda r: int(r.get("seq") or 0)):
            firsts.setdefault(_block(r), r.get("seq"))
        first = sum(_block(r) in starts and firsts[_block(r)] == r.get("seq") for r in slow)
        detail = (
            f"{len(slow)} trial request(s) took over {COLD_START_FACTOR:g}x the arm's median e2e; "
            f"{first} of them the first after an engine start"
        )
        out.append(_warning("cold_start_outliers", detail, arm))
    return out


def warnings(
    cfg: Settings, manifest: Mapping[str, Any], rows: Sequence[Row]
) -> list[dict[str, Any]]:
    """Every warning, allowed confounds first; kinds are ``WARNING_KINDS``."""
    by_arm = _by_arm(rows)
    return [
        *_confound_warnings(manifest),
        *_not_interleaved(cfg),
        *_preflight_warnings(manifest),
        *_noisy_warnings(cfg, rows),
        *_build_warnings(manifest),
        *_row_warnings(cfg, by_arm),
        *_length_warnings(cfg, by_arm),
        *_cold_warnings(cfg, manifest, by_arm),
    ]


# ---------------------------------------------------------------------------- entry points


def _rule(cfg: Settings, comps: Sequence[Mapping[str, Any]], n_rounds: int) -> StopRule:
    return stop_rule(
        [c["verdict"] for c in comps],
        [c["ci_width"] for c in comps],
        n_rounds=n_rounds,
        plan=cfg.plan(),
        target_ci_width=cfg.target_ci_width,
    )


def look(
    manifest: Mapping[str, Any],
    rows: Sequence[Row],
    after_block: int,
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
) -> StopDecision:
    """The sequential look after round ``after_block`` (0-based) completed.

    Uses only rows of blocks up to ``after_block`` and the confidence level the look plan
    assigns to ``after_block + 1`` rounds, so that the final summary of a run that stopped here
    gives the same verdicts.
    """
    cfg = settings(manifest, rows)
    seen = [r for r in _in_order(rows) if _block(r) <= after_block]
    n_rounds = after_block + 1
    level = cfg.plan().confidence_at(n_rounds)
    comps = comparisons(cfg, seen, confidence=level, n_resamples=n_resamples)
    rule = _rule(cfg, comps, n_rounds)
    return StopDecision(rule.stop, rule.decided, rule.reason, after_block, n_rounds, level,
                        tuple(comps))  # fmt: skip


def _stopping(
    cfg: Settings, manifest: Mapping[str, Any], comps: Sequence[Mapping[str, Any]],
    n_rounds: int, level: float,
) -> dict[str, Any]:  # fmt: skip
    plan = cfg.plan()
    looks = manifest.get("looks") or []
    sequential = len(plan.looks) > 1
    rule = (
        f"sequential: a look after every round from {plan.looks[0]} to {plan.looks[-1]} "
        f"blocks, {plan.spending} alpha spending (alpha {plan.alpha:g}); stop when every "
        "comparison is decided"
        + (f" or every CI is narrower than {cfg.target_ci_width:g}" if cfg.target_ci_width else "")
        if sequential
        else "fixed size: one analysis at the end"
    )
    reason = looks[-1].get("reason") if looks else _rule(cfg, comps, n_rounds).reason
    return {
        "rule": rule, "sequential": sequential, "spending": plan.spending if sequential else None,
        "alpha": plan.alpha, "min_blocks": plan.looks[0] if sequential else None,
        "max_blocks": plan.looks[-1] if sequential else None,
        "target_ci_width": cfg.target_ci_width, "looks": len(looks), "n_rounds": n_rounds,
        "confidence_level": level, "stopped_early": manifest.get("status") == "stopped_early",
        "reason": reason,
    }  # fmt: skip


def analyze(
    manifest: Mapping[str, Any],
    rows: Sequence[Row],
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
) -> dict[str, Any]:
    """The summary dict of docs/summary-json.md for a manifest and its request rows."""
    rows = _in_order(rows)
    cfg = settings(manifest, rows)
    by_arm = _by_arm(rows)
    n_rounds = _n_rounds(rows)
    level = cfg.plan().confidence_at(n_rounds)
    comps = comparisons(cfg, rows, confidence=level, n_resamples=n_resamples)
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": cfg.kind,
        "run_id": cfg.run_id,
        "baseline": cfg.baseline,
        "decision_metrics": list(cfg.decision_metrics),
        "interleaved": cfg.interleaved,
        "confidence": cfg.confidence,
        "seed": cfg.seed,
        "n_resamples": n_resamples,
        "arms": {
            arm: _arm_summary(by_arm.get(arm, ()), cfg.decision_metrics, cfg.confidence)
            for arm in cfg.arms
        },
        "comparisons": comps,
        "proportions": proportions(cfg, by_arm, cfg.confidence),
        "sweep": sweep_table(cfg, rows),
        "stopping": _stopping(cfg, manifest, comps, n_rounds, level),
        "config_diff": dict(manifest.get("config_diff") or {}),
        "allowed_confounds": list(manifest.get("allowed_confounds") or []),
        "warnings": warnings(cfg, manifest, rows),
    }
