"""The typed summary records: summary.json read back and written again is the same file.

Every summary.json in the fixtures (the release-0.1.0 runs and the hand-written report
fixtures) must survive ``from_json`` then ``to_json`` unchanged, keys in the same order; the
analysis of the released demo and bench runs must reproduce the summaries the release wrote.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from servelab.analysis import analyze, bench_summary, run_facts
from servelab.analysis.engine_facts import counter_names
from servelab.analysis.gate_outcomes import GateContext
from servelab.analysis.predictions import theory_section
from servelab.analysis.quality_rates import quality_section
from servelab.report.theory_inputs import read_theory_inputs
from servelab.store import read_run
from servelab.store.perplexity import PerplexityDoc
from servelab.store.summary import (
    ArmPrediction,
    BenchSummary,
    QualitySection,
    Summary,
    TheoryNote,
    read_summary,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
RELEASE = FIXTURES / "runs" / "release-0.1.0"
SUMMARIES = sorted([*RELEASE.glob("*/summary.json"), *(FIXTURES / "report").glob("summary-*.json")])
ANALYSED = ("kind", "run_id", "baseline", "decision_metrics", "interleaved", "confidence", "seed",
            "n_resamples", "arms", "comparisons", "proportions", "sweep", "stopping",
            "config_diff", "allowed_confounds", "warnings")  # fmt: skip


@pytest.mark.parametrize("path", SUMMARIES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_a_summary_reads_back_to_the_same_json(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    obj = json.loads(text)
    record = read_summary(obj)
    assert record.to_json() == obj
    assert list(record.to_json()) == list(obj)  # key order kept: files stay diff-friendly
    assert json.dumps(record.to_json(), indent=2) == json.dumps(obj, indent=2)


def test_the_bench_summary_is_its_own_record() -> None:
    obj = json.loads((RELEASE / "bench" / "summary.json").read_text(encoding="utf-8"))
    assert isinstance(read_summary(obj), BenchSummary)
    assert isinstance(read_summary(json.loads((RELEASE / "demo" / "summary.json").read_text(
        encoding="utf-8"))), Summary)  # fmt: skip


@pytest.mark.parametrize("name", ["demo", "import"])
def test_the_analysis_on_medians_reproduces_what_the_release_wrote(name: str) -> None:
    """Release 0.1 decided on the median; on that statistic today's analysis (paired by round
    and prompt, rounds resampled) gives its intervals and verdicts, so the change of default
    statistic is the only change. (Sentences differ: today's name the statistic and the
    prompts whose effect lies outside the band; floats agree to rounding.)"""
    run = read_run(RELEASE / name)
    released = json.loads((RELEASE / name / "summary.json").read_text(encoding="utf-8"))
    medians = [(m, "median") for m in run.manifest.decision_metrics]
    summary = analyze(run.manifest, run.rows, decision=medians).to_json()
    old_keys = set(released["comparisons"][0]) - {"summary"}
    assert len(summary["comparisons"]) == len(released["comparisons"])
    for now, then in zip(summary["comparisons"], released["comparisons"], strict=True):
        for key in sorted(old_keys):
            if isinstance(then[key], float):
                assert now[key] == pytest.approx(then[key], rel=1e-12), key
            else:
                assert now[key] == then[key], key
    rest = [k for k in ANALYSED if k not in ("comparisons", "warnings")]
    assert {k: summary[k] for k in rest} == {k: released[k] for k in rest}
    # the same warnings; not_interleaved's detail now also covers single-pass pairing
    assert [w["kind"] for w in summary["warnings"]] == [w["kind"] for w in released["warnings"]]
    unchanged = [w for w in summary["warnings"] if w["kind"] != "not_interleaved"]
    assert unchanged == [w for w in released["warnings"] if w["kind"] != "not_interleaved"]


def test_two_single_pass_bench_runs_now_pair_by_prompt() -> None:
    """Release 0.1 gave two one-block bench runs no interval; each asked the same six
    prompts once, so today they pair by prompt, with the per-prompt noise the pairs show."""
    run = read_run(RELEASE / "compare")
    released = json.loads((RELEASE / "compare" / "summary.json").read_text(encoding="utf-8"))
    medians = [(m, "median") for m in run.manifest.decision_metrics]
    summary = analyze(run.manifest, run.rows, decision=medians)
    for now, then in zip(summary.comparisons, released["comparisons"], strict=True):
        assert then["ci_low"] is None and now.ci_low is not None
        assert now.method == "prompt_noise" and now.n_pairs == 6
        assert now.ratio == pytest.approx(then["ratio"], rel=1e-12)
        assert now.ci_low < now.ratio < now.ci_high


def test_the_bench_summary_is_rebuilt_from_rows_and_counter_deltas() -> None:
    run = read_run(RELEASE / "bench")
    deltas = json.loads((RELEASE / "bench" / "metrics" / "bench-deltas.json").read_text(
        encoding="utf-8"))["counter_deltas"]  # fmt: skip
    kind = run.manifest.arm("bench").effective.get("engine.kind")
    summary = bench_summary(run.rows, deltas, counter_names(kind))
    released = json.loads((RELEASE / "bench" / "summary.json").read_text(encoding="utf-8"))
    assert summary.to_json() == released


def test_gates_read_kv_from_the_theory_section() -> None:
    obj = json.loads((RELEASE / "demo" / "summary.json").read_text(encoding="utf-8"))
    summary = Summary.from_json(obj)
    assert summary.theory is not None
    assert isinstance(summary.theory.arms["none"], ArmPrediction)
    ctx = GateContext.of(summary)
    assert ctx.kv_bytes["none"] == 90.0 * 2**20  # what llama-server reported wins
    assert ctx.error_rates["none"].n == 48 and ctx.arms == ("none", "ngram-simple")
    imported = Summary.from_json(
        json.loads((RELEASE / "import" / "summary.json").read_text(encoding="utf-8"))
    )
    assert imported.theory is not None
    assert all(isinstance(t, TheoryNote) for t in imported.theory.arms.values())
    assert set(GateContext.of(imported).kv_bytes.values()) == {None}


def test_theory_from_inputs_read_by_the_caller_matches_the_release() -> None:
    run = read_run(RELEASE / "demo")
    model = run.manifest.arm("none").effective.get("model.path")
    if not (isinstance(model, str) and Path(model).exists()):
        pytest.skip("the demo's model file is not on this machine")
    facts = run_facts(run.manifest)
    inputs = read_theory_inputs(run.dir, facts)
    theory = theory_section(facts, run.rows, run.manifest.baseline, inputs)
    released = json.loads((RELEASE / "demo" / "summary.json").read_text(encoding="utf-8"))
    assert theory.to_json() == released["theory"]
    without = theory_section(facts, run.rows, run.manifest.baseline, {})
    assert all(isinstance(t, TheoryNote) for t in without.arms.values())  # nothing read: notes


def test_an_exposed_bind_is_a_warning_only_for_an_engine_servelab_starts() -> None:
    def arm(kind: str) -> dict[str, object]:
        return {"engine_config": {"kind": kind, "bind": "0.0.0.0"}}

    manifest = {"schema_version": 1, "kind": "bench", "run_id": "r", "baseline": "local",
                "arms": {"local": arm("llamacpp"), "remote": arm("openai")}}  # fmt: skip
    found = [w.arm for w in analyze(manifest, []).warnings if w.kind == "exposed_bind"]
    assert found == ["local"]


def test_perplexity_results_travel_in_the_quality_section() -> None:
    arm = {"ppl_err": 0.3, "chunks": 15, "ctx": 256, "argv": ["llama-perplexity"], "log": "l",
           "seconds": 1.0, "cache_type_k": "f16", "cache_type_v": "f16",
           "flash_attn": "auto"}  # fmt: skip
    doc = PerplexityDoc.model_validate({
        "run_id": "r", "created_utc": "2026-11-30T00:00:00Z", "ctx": 256, "baseline": "a",
        "status": "complete",
        "text": {"name": "t", "file": "t.txt", "sha256": "0" * 64, "bytes": 1, "licence": "pd"},
        "arms": {"a": {**arm, "ppl": 12.0, "kld": None, "mode": "save"},
                 "b": {**arm, "ppl": 12.2, "kld": {"mean": 0.01}, "mode": "kld"}},
    })  # fmt: skip
    section = quality_section({}, "a", ["no workload"], doc)
    assert section.to_json() == json.loads(
        json.dumps({"notes": ["no workload"], "ppl": doc.to_json()})
    )
    assert QualitySection.from_json(section.to_json()) == section
