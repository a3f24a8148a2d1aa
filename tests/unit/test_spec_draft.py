"""Draft-model speculation (issue 16, item 3): acceptance per request, the verdict per K beside
theory, a draft model's cost in theory, and a draft model named by its registry name.

Known answers on hand-made rows (llama-server leaves ``draft_n`` out of a request's timings
when it drafted nothing, so such a row has timings and no ``draft_n``); the summary round trip;
the report's tables; theory's c from two Qwen2.5 shapes (their config.json values). The real
run is tests/integration/test_spec_draft.py.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from servelab.analysis.engine_facts import counter_names
from servelab.analysis.predictions import ASSUMES, ASSUMES_DRAFT, TheoryInputs, theory_section
from servelab.analysis.settings import ArmFacts, RunFacts
from servelab.analysis.spec_decode import (
    CounterInputs,
    request_acceptance,
    spec_decode_record,
)
from servelab.engines.llamacpp_config import draft_model_paths
from servelab.errors import ModelNotFoundError
from servelab.models import DEFAULT_MODEL
from servelab.report.blocks import Para, Table
from servelab.report.markdown import render_markdown
from servelab.report.spec_decode_view import spec_decode_blocks
from servelab.store import read_run
from servelab.store.engine_records import REQUESTS_LISTED, SpecDecodeRecord
from servelab.store.summary import ArmPrediction, Comparison, Summary
from servelab.theory.arch_hf import architecture_from_hf_config
from servelab.theory.hardware import Hardware
from servelab.theory.kvtypes import CACHE_TYPES
from servelab.theory.specdec import draft_step_cost, expected_tokens

RELEASE = Path(__file__).parents[1] / "fixtures" / "runs" / "release-0.1.0"
LLAMA = counter_names("llamacpp")
F16 = CACHE_TYPES["f16"]


def row(arm: str, block: int, seq: int, drafted: int | None, accepted: int | None,
        **extra: object) -> dict[str, Any]:  # fmt: skip
    """A trial row as llama-server's timings fill it (``draft_n`` absent: drafted nothing)."""
    return {"arm": arm, "phase": "trial", "outcome": "ok", "block": block, "seq": seq,
            "concurrency": 1, "prompt_id": f"p{seq % 3}", "server_decode_tps": 10.0,
            "draft_n": drafted, "draft_accepted": accepted, **extra}  # fmt: skip


def k4_rows() -> list[dict[str, Any]]:
    rows = [
        row("k4", 1, 7, 40, 10),  # 0.25
        row("k4", 0, 3, 40, 30),  # 0.75, first in run order
        row("k4", 0, 5, None, None),  # timings without draft_n: drafted nothing
        row("k4", 1, 9, 20, 10),  # 0.5
        row("k4", 1, 11, 44, 44),  # 1.0
    ]
    rows.append(row("k4", 0, 1, 99, 0, phase="warmup"))  # warm-ups never count
    rows.append(row("k4", 1, 12, None, None, outcome="timeout", server_decode_tps=None))
    return rows


def test_acceptance_per_request_has_its_quartiles_and_counts_requests_that_drafted_nothing() -> (
    None
):
    a = request_acceptance(k4_rows())
    assert a is not None
    assert (a.n_requests, a.n_no_draft, a.no_draft_share) == (5, 1, 0.2)
    # numpy's linear interpolation over 0.25, 0.5, 0.75, 1.0
    assert (a.min, a.q1, a.median, a.q3, a.max) == pytest.approx((0.25, 0.4375, 0.625, 0.8125, 1))
    assert [(d.block, d.draft_tokens, d.accepted_tokens) for d in a.listed] == [
        (0, 40, 30), (0, 0, 0), (1, 40, 10), (1, 20, 10), (1, 44, 44),
    ]  # fmt: skip
    assert a.listed[1].acceptance_rate is None and a.listed[0].acceptance_rate == 0.75


def test_a_record_from_rows_carries_the_distribution_and_only_the_first_requests() -> None:
    rows = [row("k2", b, s, 10, s // 3) for b in range(3) for s in range(b * 10, b * 10 + 10)]
    record = spec_decode_record(rows, CounterInputs(LLAMA))
    assert record is not None and record.per_request is not None
    pr = record.per_request
    assert pr.n_requests == record.n_requests == 30 and pr.n_no_draft == 0
    assert len(pr.listed) == REQUESTS_LISTED < 30
    assert [d.block for d in pr.listed] == [0] * 10 + [1] * 2
    assert pr.median == pytest.approx(0.45)  # accepted s // 3 of 10 for s = 0..29: 4 and 5


def test_no_request_reported_drafting_gives_no_distribution() -> None:
    plain = [row("none", 0, 0, None, None, server_decode_tps=None)]
    assert request_acceptance(plain) is None
    assert request_acceptance([]) is None


def test_the_distribution_round_trips_and_is_left_out_where_there_is_none() -> None:
    record = spec_decode_record(k4_rows(), CounterInputs(LLAMA))
    assert record is not None
    obj = json.loads((RELEASE / "demo" / "summary.json").read_text(encoding="utf-8"))
    summary = Summary.from_json({**obj, "spec_decode": {"k4": record}})
    text = json.loads(json.dumps(summary.to_json()))
    assert text["spec_decode"]["k4"]["per_request"]["n_no_draft"] == 1
    assert list(text["spec_decode"]["k4"]["per_request"]) == [
        "n_requests", "n_no_draft", "no_draft_share", "min", "q1", "median", "q3", "max",
        "listed",
    ]  # fmt: skip
    assert Summary.from_json(text) == summary
    counters = SpecDecodeRecord("metrics", 70, 210, 99, 99 / 210, 99 / 70, 99 / 70 + 1, (), 2)
    written = json.loads(json.dumps(
        Summary.from_json({**obj, "spec_decode": {"v": counters}}).to_json()))  # fmt: skip
    assert "per_request" not in written["spec_decode"]["v"]


def test_the_demo_release_now_counts_its_requests_without_a_match() -> None:
    """The released ngram-simple arm: 48 trials, 44 with draft_n; the 4 others had timings
    and no draft_n (the n-gram found nothing to draft)."""
    run = read_run(RELEASE / "demo")
    record = spec_decode_record([r for r in run.rows if r["arm"] == "ngram-simple"],
                                CounterInputs(LLAMA))  # fmt: skip
    assert record is not None and record.per_request is not None
    assert (record.n_requests, record.per_request.n_requests) == (44, 48)
    assert record.per_request.n_no_draft == 4
    assert record.per_request.median == pytest.approx(0.1977, abs=1e-4)


# ------------------------------------------------------------------------------ report


def comparison(candidate: str, ratio: float, lo: float, hi: float, verdict: str) -> Comparison:
    return Comparison(
        metric="decode_tps", baseline="baseline", candidate=candidate, concurrency=1,
        statistic="pooled", lower_is_better=False, ratio=ratio, ci_low=lo, ci_high=hi,
        ratio_mean=ratio, ci_low_mean=lo, ci_high_mean=hi, verdict=verdict, min_effect=0.03,
        n_blocks=4, blocks_needed=None, paired=True, confidence_level=0.95, ci_width=hi - lo,
        n_blocks_baseline=4, n_blocks_candidate=4, summary="",
    )  # fmt: skip


def draft_summary() -> Summary:
    obj = json.loads((RELEASE / "demo" / "summary.json").read_text(encoding="utf-8"))
    base = Summary.from_json({**obj, "baseline": "baseline"})
    record = spec_decode_record(k4_rows(), CounterInputs(LLAMA))
    assert record is not None
    record = dataclasses.replace(record, drafts=40)  # K = 144 / 40 = 3.6
    return dataclasses.replace(
        base, theory=None, spec_decode={"k4": record},
        comparisons=(comparison("baseline-again", 1.004, 0.98, 1.03, "no_difference"),
                     comparison("k4", 0.81, 0.75, 0.88, "worse")),
    )  # fmt: skip


def test_the_section_lists_requests_and_gives_each_candidate_its_verdict() -> None:
    summary = draft_summary()
    assert summary.spec_decode is not None
    blocks = spec_decode_blocks(summary.spec_decode, summary)
    tables = [b for b in blocks if isinstance(b, Table)]
    assert len(tables) == 4  # drafting, distribution, requests, verdicts
    assert tables[1].rows == (("k4", "5", "1 (20 %)", "25.0 %", "43.8 %", "62.5 %", "81.2 %",
                               "100.0 %"),)  # fmt: skip
    assert tables[2].rows[1] == ("k4", "0", "p2", "0", "0", "-")
    verdicts = {r[0]: r for r in tables[3].rows}
    assert verdicts["baseline-again"][2:6] == ("-", "-", "-", "-")  # the A/A control
    assert verdicts["baseline-again"][-1] == "no_difference"
    assert verdicts["k4"] == ("k4", "baseline", "3.6", "62.5 %", "65.3 %", "-", "pooled",
                              "0.810", "0.750-0.880", "worse")  # fmt: skip
    assert not any(isinstance(b, Para) and "more" in b.text for b in blocks)
    md = render_markdown(summary, read_run(RELEASE / "demo").manifest)
    assert "| k4 | 1 | p1 | 40 | 10 | 25.0 % |" in md and "| statistic | measured x |" in md


def test_without_a_summary_or_per_request_figures_the_section_is_as_before() -> None:
    counters = SpecDecodeRecord("metrics", 70, 210, 99, 99 / 210, 99 / 70, 99 / 70 + 1, (), 2)
    blocks = spec_decode_blocks({"v": counters})
    assert [type(b) for b in blocks] == [Para, Table]


# ------------------------------------------------------------------------------ theory

QWEN = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "dtype": "bfloat16",
        "max_position_embeddings": 32768, "vocab_size": 151936, "tie_word_embeddings": True,
        "num_key_value_heads": 2}  # fmt: skip
QWEN_05B = {**QWEN, "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
            "num_attention_heads": 14}  # fmt: skip
QWEN_15B = {**QWEN, "hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28,
            "num_attention_heads": 12}  # fmt: skip
CPU = Hardware("host-cpu (measured)", 20.0, 64 * 2**30, 0.2)


def test_a_draft_costs_its_roofline_step_over_the_targets() -> None:
    target = architecture_from_hf_config(QWEN_15B, name="1.5b")
    draft = architecture_from_hf_config(QWEN_05B, name="0.5b")
    same = draft_step_cost(target, target, position=100, type_k=F16, type_v=F16)
    assert same == pytest.approx(1.0)
    c = draft_step_cost(target, draft, position=100, type_k=F16, type_v=F16)
    assert 0.25 < c < 0.45  # ~0.5B of ~1.5B parameters, tied 151936-token head on both
    c_hw = draft_step_cost(target, draft, position=100, type_k=F16, type_v=F16, hw=CPU)
    assert 0.25 < c_hw < 0.45


def test_theory_charges_a_draft_model_arm_for_its_drafts() -> None:
    target = architecture_from_hf_config(QWEN_15B, name="1.5b")
    draft = architecture_from_hf_config(QWEN_05B, name="0.5b")
    eff: dict[str, str | int] = {"engine.kind": "llamacpp", "model.path": "t.gguf",
                                 "ctx_per_slot": 1024, "parallel": 1}  # fmt: skip
    facts = RunFacts(arms={a: ArmFacts(effective=eff) for a in ("baseline", "k4", "ngram")},
                     hardware=CPU)  # fmt: skip
    record = SpecDecodeRecord("requests", 100, 400, 300, 0.75, 3.0, 4.0, (), 4, 16)
    rows = [{"arm": a, "phase": "trial", "outcome": "ok", "block": 0, "n_in": 60, "n_out": 48,
             "decode_tps": tps} for a, tps in (("baseline", 10.0), ("k4", 9.0), ("ngram", 11.0))
            ]  # fmt: skip
    inputs = {"baseline": TheoryInputs(target), "ngram": TheoryInputs(target, spec=record),
              "k4": TheoryInputs(target, spec=record, draft_architecture=draft)}  # fmt: skip
    theory = theory_section(facts, rows, "baseline", inputs)
    k4, ngram = theory.arms["k4"], theory.arms["ngram"]
    assert isinstance(k4, ArmPrediction) and k4.spec is not None
    assert isinstance(ngram, ArmPrediction) and ngram.spec is not None
    assert ngram.spec.assumes == ASSUMES and ngram.spec.draft_cost is None  # as before
    s = k4.spec
    assert s.assumes == ASSUMES_DRAFT and s.draft_cost is not None and 0.25 < s.draft_cost < 0.45
    assert (s.mean_draft_length, s.tokens_per_verify_step) == (4, 4.0)
    assert s.tokens_per_verify_step_iid == pytest.approx(expected_tokens(0.75, 4))
    assert s.predicted_speedup == pytest.approx(4.0 / (s.verify_cost + 4 * s.draft_cost))
    assert s.predicted_speedup < ngram.spec.predicted_speedup  # drafting is not free
    assert s.measured_speedup == pytest.approx(0.9)


# ------------------------------------------------------------------------------ the draft model


def test_a_draft_model_path_stays_as_written() -> None:
    flags = ("--spec-type", "draft-simple", "--spec-draft-model", "synth/draft.gguf", "-md=x.gguf")
    assert draft_model_paths(flags) == flags


def test_a_draft_model_named_but_not_pulled_says_how_to_pull_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SERVELAB_CACHE_DIR", str(tmp_path / "empty"))
    for flags in (("--spec-draft-model", DEFAULT_MODEL), (f"-md={DEFAULT_MODEL}",)):
        with pytest.raises(ModelNotFoundError, match=f"servelab models pull {DEFAULT_MODEL}"):
            draft_model_paths(flags)
