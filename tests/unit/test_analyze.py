"""Tests for servelab.analysis: the summary.json contract, built from manifest and rows alone."""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from servelab.analysis import analyze as analyze_run
from servelab.analysis import look, settings
from servelab.analysis.comparisons import sentence
from servelab.analysis.run_warnings import WARNING_KINDS
from servelab.analysis.settings import ManifestLike
from servelab.stats.sweep import Request, block_aggregate_tps, sweep
from servelab.store import SCHEMA_VERSION

DOC = Path(__file__).resolve().parents[2] / "docs" / "summary-json.md"
TOP_KEYS = {
    "schema_version", "kind", "run_id", "baseline", "decision_metrics", "interleaved",
    "confidence", "arms", "comparisons", "proportions", "sweep", "stopping", "config_diff",
    "allowed_confounds", "warnings",
}  # fmt: skip


def analyze(m: ManifestLike, data: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
    """The summary as summary.json holds it."""
    return analyze_run(m, data, **kw).to_json()


def start(block: int, **describe: str) -> dict[str, Any]:
    """One recorded engine start."""
    return {"block": block, "concurrency": 1, "t_unix_s": 1.8e9 + block, "describe": describe}


def manifest(**extra: Any) -> dict[str, Any]:
    m: dict[str, Any] = {
        "schema_version": 1, "kind": "experiment", "run_id": "demo", "baseline": "none",
        "arms": {"none": {}, "ngram": {}}, "seed": 3,
        "spec": {"blocks": 4, "stop": {"max_blocks": 8}, "seed": 3, "baseline": "none"},
    }  # fmt: skip
    for key in ("seed", "decision_metrics", "baseline"):  # a version 1 manifest held both copies
        if key in extra and "spec" not in extra:
            m["spec"][key] = extra[key]
    m.update(extra)
    return m


def rows(
    *, blocks: int = 6, speedup: float = 1.0, seed: int = 0, levels: tuple[int, ...] = (1,),
    per_block: int = 8, n_out: dict[str, int] | None = None,
) -> list[dict[str, Any]]:  # fmt: skip
    """Interleaved rounds: drift shared per round, lognormal noise per request."""
    gen = np.random.default_rng(seed)
    out: list[dict[str, Any]] = []
    t = 1000.0
    for b in range(blocks):
        drift = gen.normal(0, 0.05)
        for level in levels:
            for arm, factor in (("none", 1.0), ("ngram", speedup)):
                for i in range(per_block):
                    n = (n_out or {}).get(arm, 64)
                    tps = 120.0 * factor * np.exp(drift + gen.normal(0, 0.03)) / level**0.5
                    ttft = 0.05 * np.exp(gen.normal(0, 0.03))
                    e2e = ttft + (n - 1) / tps
                    out.append(row(arm, b, len(out), level, t, tps, ttft, e2e, n))
                    t += e2e if (i + 1) % level == 0 else 0.0
    return out


def row(
    arm: str, block: int, seq: int, level: int, t: float, tps: float, ttft: float, e2e: float,
    n: int, **extra: Any,
) -> dict[str, Any]:  # fmt: skip
    r = {
        "schema_version": 1, "run_id": "demo", "arm": arm, "block": block, "phase": "trial",
        "seq": seq, "prompt_id": f"p{seq % 4}", "concurrency": level, "t_send_unix_s": t,
        "outcome": "ok", "error": None, "finish_reason": "stop", "decode_tps": tps,
        "ttft_s": ttft, "e2e_s": e2e, "n_out": n, "server_timings": {"cache_n": 0},
    }  # fmt: skip
    r.update(extra)
    return r


def by_metric(
    summary: dict[str, Any], metric: str, level: int = 1, statistic: str | None = None
) -> dict[str, Any]:
    """The comparison of one metric (on its first decision statistic unless named)."""
    found = [
        c for c in summary["comparisons"] if c["metric"] == metric and c["concurrency"] == level
    ]
    return next(c for c in found if statistic in (None, c["statistic"]))


def kinds(summary: dict[str, Any]) -> list[str]:
    return [w["kind"] for w in summary["warnings"]]


def test_top_level_keys_match_the_contract_doc() -> None:
    s = analyze(manifest(), rows())
    assert set(s) >= TOP_KEYS
    assert s["schema_version"] == SCHEMA_VERSION
    documented = DOC.read_text(encoding="utf-8")
    for key in s:
        assert f'"{key}"' in documented or f"`{key}`" in documented, key
    json.dumps(s, allow_nan=False)  # strict JSON


def test_a_clear_speedup_is_better_in_every_metric_with_the_right_direction() -> None:
    s = analyze(manifest(), rows(speedup=1.3))
    decode, e2e = by_metric(s, "decode_tps"), by_metric(s, "e2e_s")
    assert decode["verdict"] == "better" and decode["ratio"] > 1.2
    assert decode["ci_low"] < decode["ratio"] < decode["ci_high"]
    assert e2e["verdict"] == "better" and e2e["ratio"] < 0.85 and e2e["lower_is_better"]
    assert decode["statistic"] == "pooled" and e2e["statistic"] == "mean"
    assert (
        decode["summary"].startswith(("decode pooled 1.2", "decode pooled 1.3"))
        and "faster (95 % CI" in decode["summary"]
    )
    assert "faster (ratio 0.7" in e2e["summary"]
    tail = by_metric(s, "e2e_s", statistic="p90")
    assert tail["verdict"] == "better" and tail["summary"].startswith("e2e p90")
    assert by_metric(s, "ttft_s")["verdict"] in ("no_difference", "inconclusive")


def test_same_configuration_is_not_called_better_or_worse() -> None:
    s = analyze(manifest(), rows(blocks=8))
    assert {c["verdict"] for c in s["comparisons"]} <= {"no_difference", "inconclusive"}


def test_deterministic_and_independent_of_row_order() -> None:
    data = rows()
    shuffled = copy.deepcopy(data)
    random.Random(1).shuffle(shuffled)
    assert analyze(manifest(), data) == analyze(manifest(), shuffled)
    other_seed = analyze(manifest(seed=4), data)["comparisons"][0]["ci_low"]
    assert other_seed != analyze(manifest(), data)["comparisons"][0]["ci_low"]


def test_warmups_and_failures_never_enter_latency_statistics() -> None:
    data = rows()
    base = analyze(manifest(), data)
    noisy = [
        *data,
        row("none", 0, 900, 1, 0.0, 1.0, 9.0, 99.0, 64, phase="warmup"),
        row("none", 1, 901, 1, 0.0, None, None, None, 0, outcome="timeout"),  # type: ignore[arg-type]
    ]
    s = analyze(manifest(), noisy)
    assert s["comparisons"] == base["comparisons"]
    arm = s["arms"]["none"]
    assert (arm["n_warmup"], arm["n_failed"], arm["failures"]) == (1, 1, {"timeout": 1})
    assert arm["error_rate"]["k"] == 1 and arm["error_rate"]["p"] == pytest.approx(1 / 49)
    assert "failed_requests" in kinds(s)


def test_each_concurrency_level_is_compared_on_its_own() -> None:
    s = analyze(manifest(), rows(levels=(1, 2), speedup=1.3))
    assert sorted({c["concurrency"] for c in s["comparisons"]}) == [1, 2]
    # per level: decode pooled, TTFT mean and p90, e2e mean and p90
    assert len(s["comparisons"]) == 2 * 5
    points = s["sweep"]["none"]
    assert [p["concurrency"] for p in points] == [1, 2]
    assert points[0]["efficiency"] == 1.0 and points[0]["efficiency_reference"] == 1
    assert "by_concurrency" in s["arms"]["none"]


def test_an_import_is_unpaired_and_says_what_it_cannot_control() -> None:
    m = {"kind": "import", "run_id": "imp", "baseline": "none", "arms": {"none": {}, "ngram": {}}}
    s = analyze(m, rows(speedup=1.3))
    assert s["interleaved"] is False
    assert all(c["paired"] is False for c in s["comparisons"])
    assert s["stopping"]["sequential"] is False and s["stopping"]["confidence_level"] == 0.95
    assert kinds(s)[0] == "not_interleaved"
    assert "cannot be separated" in s["warnings"][0]["detail"]


def test_missing_keys_get_defaults() -> None:
    cfg = settings({}, rows())
    assert (cfg.baseline, cfg.arms, cfg.interleaved) == ("none", ("none", "ngram"), True)
    assert (cfg.min_effect, cfg.confidence, cfg.decision_metrics[0]) == (0.03, 0.95, "decode_tps")
    assert cfg.decision[:3] == (("decode_tps", "pooled"), ("ttft_s", "mean"), ("ttft_s", "p90"))
    s = analyze({}, rows())
    assert s["kind"] == "experiment" and len(s["comparisons"]) == 5


def test_allowed_confounds_come_first_and_every_kind_is_known() -> None:
    data = rows(n_out={"none": 64, "ngram": 90})
    data[0]["finish_reason"] = "length"
    data[1]["server_timings"] = {"cache_n": 12}
    data[2]["e2e_s"] = 50.0
    m = manifest(
        allowed_confounds=[{"field": "ctx_size", "values": {"none": 4096, "ngram": 8192}}],
        preflight=[{"kind": "load", "detail": "load average 3.1", "advice": "wait",
                    "blocking": True}],
        arms={"none": {"starts": [start(0, build_info="b0-aaa"), start(3, build_info="b0-bbb")]},
              "ngram": {}},
    )  # fmt: skip
    s = analyze(m, data)
    found = kinds(s)
    assert found[0] == "allowed_confound"
    assert set(found) >= {
        "preflight", "build_changed", "truncated_outputs", "prompt_cache_hits",
        "output_length_mismatch", "cold_start_outliers",
    }  # fmt: skip
    assert set(found) <= set(WARNING_KINDS)
    assert all(w["advice"] for w in s["warnings"])
    assert found.count("preflight") == 1
    mismatch = next(w for w in s["warnings"] if w["kind"] == "output_length_mismatch")
    assert mismatch["arm"] == "ngram" and "length_matched: true" in mismatch["advice"]
    assert s["allowed_confounds"] == m["allowed_confounds"]


def test_length_matched_runs_do_not_warn_about_truncation() -> None:
    data = [dict(r, finish_reason="length") for r in rows()]
    m = manifest(spec={"blocks": 4, "base": {"length_matched": True}})
    assert "truncated_outputs" not in kinds(analyze(m, data))
    assert "truncated_outputs" in kinds(analyze(manifest(), data))


def test_a_noisy_baseline_is_flagged() -> None:
    data = rows()
    for r in data:
        if r["arm"] == "none" and r["block"] % 2:
            r["decode_tps"] /= 2
    assert "noisy_machine" in kinds(analyze(manifest(), data))
    assert "noisy_machine" not in kinds(analyze(manifest(), rows()))


def test_look_stops_once_decided_and_matches_the_final_summary() -> None:
    data = rows(blocks=8, speedup=1.5)
    m = manifest(decision_metrics=["decode_tps", "e2e_s"])  # TTFT does not change here
    early = look(m, data, after_block=1)
    assert not early.stop and "at least 4" in early.reason
    decision = look(m, data, after_block=5)
    assert decision.stop and decision.decided and decision.n_rounds == 6
    assert decision.as_look() == {
        "after_block": 5, "decided": True, "reason": decision.reason
    }  # fmt: skip
    stopped = [r for r in data if r["block"] <= 5]
    final = analyze({**m, "status": "stopped_early", "looks": [decision.as_look()]}, stopped)
    assert final["comparisons"] == [c.to_json() for c in decision.comparisons]
    assert final["stopping"]["stopped_early"] and final["stopping"]["reason"] == decision.reason
    assert final["stopping"]["confidence_level"] == decision.confidence_level > 0.95


def test_look_respects_the_target_ci_width() -> None:
    data = rows(blocks=8, speedup=1.02)
    loose = manifest(spec={"blocks": 4, "stop": {"max_blocks": 20, "target_ci_width": 5.0}})
    assert look(loose, data, after_block=3).stop
    assert "narrower" in look(loose, data, after_block=3).reason


def test_sentences() -> None:
    assert (
        sentence("decode_tps", 1.18, 1.09, 1.27, "better", 0.03, None, 0.95)
        == "decode 1.18x faster (95 % CI 1.09-1.27)"
    )
    ttft = sentence("ttft_s", 1.0, 0.99, 1.02, "no_difference", 0.03, None, 0.95)
    assert ttft.startswith("TTFT no difference")
    e2e = sentence("e2e_s", 1.04, 0.97, 1.12, "inconclusive", 0.03, 14, 0.95)
    assert e2e.startswith("e2e inconclusive: need ~14 blocks")
    assert sentence("e2e_s", 0.8, 0.75, 0.86, "better", 0.03, None, 0.95) == (
        "e2e 1.25x faster (ratio 0.80, 95 % CI 0.75-0.86)"
    )


def test_block_aggregate_throughput_known_answer() -> None:
    block = [Request(0.0, 1.0, 10, 12.0, 0.1), Request(0.5, 1.5, 10, 8.0, 0.2)]
    assert block_aggregate_tps(block) == pytest.approx(20 / 2.0)
    assert block_aggregate_tps([]) is None


def test_sweep_efficiency_against_linear_scaling() -> None:
    one = [[Request(0.0, 1.0, 100, 100.0, 0.1)]]
    two = [[Request(0.0, 1.0, 100, 100.0, 0.1), Request(0.0, 1.0, 60, 60.0, 0.1)]]
    result = sweep({2: two, 1: one})
    assert result.reference_concurrency == 1
    assert [p.aggregate_tps for p in result.points] == [100.0, 160.0]
    assert result.points[1].efficiency == pytest.approx(0.8)
    assert result.points[1].per_stream_tps == pytest.approx(80.0)
    relative = sweep({2: two, 4: two})
    assert relative.reference_concurrency == 2
    assert relative.points[1].efficiency == pytest.approx(0.5)


def test_a_model_or_binary_swapped_between_starts_is_flagged() -> None:
    same = {"build_info": "b0-aaa", "binary_sha256": "bin1"}
    m = manifest(arms={
        "none": {"starts": [start(0, **same, model_sha256="m1"),
                            start(1, **same, model_sha256="m2")]},
        "ngram": {"starts": [start(0, **same, model_sha256="m1")] * 2},
    })  # fmt: skip
    flagged = [w for w in analyze(m, rows(), n_resamples=200)["warnings"]
               if w["kind"] == "build_changed"]  # fmt: skip
    assert [(w["arm"], "model" in w["detail"]) for w in flagged] == [("none", True)]


def test_blocks_that_shared_an_engine_start_are_flagged() -> None:
    def starts(*blocks: int) -> dict[str, Any]:
        return {"starts": [start(b) for b in blocks]}

    every_block = manifest(arms={"none": starts(0, 1, 2, 3), "ngram": starts(0, 1, 2, 3)})
    assert "shared_engine_starts" not in kinds(analyze(every_block, rows(blocks=4)))
    # restart: arm_change, order A B | B A | A B | B A: none starts in rounds 0, 1 and 3 (its
    # block 2 follows its block 1), ngram in rounds 0 and 2
    arm_change = manifest(arms={"none": starts(0, 1, 3), "ngram": starts(0, 2)})
    flagged = [w for w in analyze(arm_change, rows(blocks=4))["warnings"]
               if w["kind"] == "shared_engine_starts"]  # fmt: skip
    assert [(w["arm"], w["detail"][:6]) for w in flagged] == [("none", "1 of 4"),
                                                              ("ngram", "2 of 4")]  # fmt: skip
    assert "restart: every_block" in flagged[0]["advice"]
    assert "shared_engine_starts" not in kinds(analyze(manifest(), rows(blocks=4)))  # import


def test_an_arm_on_a_synthetic_model_is_flagged() -> None:
    m = manifest(arms={"none": {"effective": {"model.synthetic": "llama3-8b"}}, "ngram": {}})
    flagged = [w for w in analyze(m, rows(), n_resamples=200)["warnings"]
               if w["kind"] == "synthetic_model"]  # fmt: skip
    assert [w["arm"] for w in flagged] == ["none"]
    assert "llama3-8b" in flagged[0]["detail"] and "not text" in flagged[0]["detail"]
    assert "synthetic_model" not in kinds(analyze(manifest(), rows(), n_resamples=200))
    both = {"effective": {"model.synthetic": "qwen3-30b-a3b"}}
    shared = [
        w
        for w in analyze(manifest(arms={"none": both, "ngram": both}), rows(), n_resamples=200)[
            "warnings"
        ]
        if w["kind"] == "synthetic_model"
    ]
    assert len(shared) == 1 and "arm" not in shared[0] and "none, ngram" in shared[0]["detail"]
