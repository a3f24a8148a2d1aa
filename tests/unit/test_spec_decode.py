"""One spec-decode record per arm whichever engine ran (issue 14, item 3).

vLLM: the record comes from the per-block counter deltas the run stores, here taken exactly as
the run takes them: two ``/metrics`` bodies in vLLM 0.32's exposition (every sample labelled
``engine`` and ``model_name``, per-position acceptance labelled ``position``), parsed and
subtracted by ``engines.prom``, written by ``store.metrics_files`` and read back. llama.cpp: the
released demo run (ngram-simple against none, written by servelab 0.1.0 with llama-server
0c1e57098), whose rows carry ``draft_n`` / ``draft_accepted`` and whose block files carry
llama.cpp's draft and per-position counters. Also: theory's predicted-vs-measured line for a
vLLM arm, the omission rule, and the report section (escaped in HTML).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from servelab.analysis.engine_facts import counter_names
from servelab.analysis.predictions import TheoryInputs, theory_section
from servelab.analysis.settings import ArmFacts, RunFacts
from servelab.analysis.spec_decode import (
    CounterInputs,
    spec_decode_record,
    spec_decode_section,
)
from servelab.engines.prom import counter_deltas, parse_metrics
from servelab.report.build import build_report
from servelab.report.counter_inputs import counter_inputs, read_counter_inputs
from servelab.report.html import render_html
from servelab.report.markdown import render_markdown
from servelab.report.spec_decode_view import positions_text, spec_decode_blocks
from servelab.report.theory_inputs import decode_steps
from servelab.store import read_run
from servelab.store.engine_records import SpecDecodeRecord
from servelab.store.metrics_files import read_block_deltas, write_block_deltas
from servelab.store.rundir import RunDir
from servelab.store.summary import ArmPrediction, Summary, read_summary
from servelab.theory.arch_hf import architecture_from_hf_config
from servelab.theory.hardware import Hardware

RELEASE = Path(__file__).parents[1] / "fixtures" / "runs" / "release-0.1.0"
VLLM = counter_names("vllm")
LABELS = 'engine="0",model_name="smollm2"'


def vllm_metrics(
    drafts: int, draft_tokens: int, accepted: int, per_position: tuple[int, ...],
    queries: int = 0, hits: int = 0, generated: int = 0,
) -> str:  # fmt: skip
    """A ``/metrics`` body as vLLM 0.32 writes it (prometheus_client text, counters with
    ``_total`` and their ``_created`` gauges), with n-gram speculation configured."""
    lines: list[str] = []

    def counter(name: str, help_text: str, samples: list[tuple[str, float]]) -> None:
        lines.extend([f"# HELP vllm:{name}_total {help_text}",
                      f"# TYPE vllm:{name}_total counter"])  # fmt: skip
        lines.extend(f"vllm:{name}_total{{{labels}}} {value:.1f}" for labels, value in samples)
        lines.extend([f"# HELP vllm:{name}_created {help_text}",
                      f"# TYPE vllm:{name}_created gauge"])  # fmt: skip
        lines.extend(f"vllm:{name}_created{{{labels}}} 1.80e+09" for labels, _ in samples)

    lines += ["# HELP vllm:num_requests_running Number of requests in model execution batches.",
              "# TYPE vllm:num_requests_running gauge",
              f"vllm:num_requests_running{{{LABELS}}} 0.0"]  # fmt: skip
    counter("prefix_cache_queries", "Prefix cache queries, in terms of number of queried tokens.",
            [(LABELS, queries)])  # fmt: skip
    counter("prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens.",
            [(LABELS, hits)])  # fmt: skip
    counter("generation_tokens", "Number of generation tokens processed.", [(LABELS, generated)])
    counter("spec_decode_num_drafts", "Number of spec decoding drafts.", [(LABELS, drafts)])
    counter("spec_decode_num_draft_tokens", "Number of draft tokens.", [(LABELS, draft_tokens)])
    counter("spec_decode_num_accepted_tokens", "Number of accepted tokens.", [(LABELS, accepted)])
    counter("spec_decode_num_accepted_tokens_per_pos", "Accepted tokens per draft position.",
            [(f'{LABELS},position="{i}"', n) for i, n in enumerate(per_position)])  # fmt: skip
    return "\n".join(lines) + "\n"


def store_block(run: RunDir, arm: str, block: int, before: str, after: str) -> None:
    """What ``Experiment.write_counters`` does around a block."""
    deltas = counter_deltas(parse_metrics(before), parse_metrics(after))
    write_block_deltas(run, arm, block, 1, deltas)


@pytest.fixture
def vllm_run(tmp_path: Path) -> RunDir:
    """Two blocks of an ngram arm (K = 3) on one vLLM process: counters keep counting."""
    run = RunDir(tmp_path / "run")
    run.metrics_dir.mkdir(parents=True)
    zero = vllm_metrics(0, 0, 0, (0, 0, 0))
    first = vllm_metrics(40, 120, 54, (25, 17, 12), queries=900, hits=0, generated=500)
    second = vllm_metrics(70, 210, 99, (45, 31, 23), queries=1800, hits=0, generated=980)
    store_block(run, "ngram", 0, zero, first)
    store_block(run, "ngram", 1, first, second)
    return run


def test_a_vllm_record_comes_from_the_stored_counter_deltas(vllm_run: RunDir) -> None:
    blocks = read_block_deltas(vllm_run, "ngram")
    assert [b.block for b in blocks] == [0, 1] and [b.level for b in blocks] == ["c1", "c1"]
    key = f'vllm:spec_decode_num_accepted_tokens_per_pos_total{{{LABELS},position="2"}}'
    assert blocks[1].deltas[key] == 11.0  # the run stores the labelled samples as they were
    record = spec_decode_record([], CounterInputs(VLLM, tuple(blocks)))
    assert record == SpecDecodeRecord(
        source="metrics", drafts=70, draft_tokens=210, accepted_tokens=99,
        acceptance_rate=99 / 210, mean_accepted_length=99 / 70, tokens_per_step=99 / 70 + 1,
        per_position=(45 / 70, 31 / 70, 23 / 70), n_blocks=2,
    )  # fmt: skip
    # accepted tokens are the per-position counts summed: the two views agree
    assert sum(record.per_position) * 70 == pytest.approx(record.accepted_tokens)


def test_a_llamacpp_record_comes_from_the_rows_with_drafts_from_its_counters() -> None:
    run = read_run(RELEASE / "demo")
    facts_arms = {
        a: ArmFacts(effective={"engine.kind": "llamacpp"}) for a in ("none", "ngram-simple")
    }
    inputs = read_counter_inputs(run.dir, RunFacts(arms=facts_arms), facts_arms)
    section = spec_decode_section(run.rows, inputs)
    assert section is not None and list(section) == ["ngram-simple"]  # "none" drafted nothing
    r = section["ngram-simple"]
    # the rows' draft_n / draft_accepted over the 48 trials (4 of which drafted nothing) equal
    # the counters' 3260 / 964; the draft count (96) and positions are the counters'
    assert (r.source, r.draft_tokens, r.accepted_tokens, r.drafts) == ("requests", 3260, 964, 96)
    assert (r.n_blocks, r.n_requests) == (8, 44)
    assert r.acceptance_rate == pytest.approx(0.2957, abs=1e-4)
    assert r.mean_accepted_length == pytest.approx(964 / 96)
    assert r.per_position[0] == pytest.approx(88 / 96) and len(r.per_position) == 48
    assert list(r.per_position) == sorted(r.per_position, reverse=True)  # later is rarer


def test_rows_without_counters_give_a_record_without_per_draft_figures() -> None:
    rows = [
        {"arm": "ngram", "phase": "trial", "block": b, "concurrency": 1, "draft_n": d,
         "draft_accepted": a}
        for b, (d, a) in enumerate([(48, 20), (30, 9), (0, 0)])
    ]  # fmt: skip
    rows.append({"arm": "ngram", "phase": "warmup", "block": 0, "draft_n": 99, "draft_accepted": 9})
    record = spec_decode_record(rows, CounterInputs(counter_names("llamacpp")))
    assert record is not None
    assert (record.draft_tokens, record.accepted_tokens, record.n_requests) == (78, 29, 3)
    assert record.drafts is None and record.mean_accepted_length is None
    assert record.per_position == () and record.tokens_per_step is None


def test_no_record_for_an_arm_that_did_not_speculate(vllm_run: RunDir) -> None:
    plain = vllm_metrics(0, 0, 0, (), queries=500, generated=200)
    store_block(vllm_run, "plain", 0, vllm_metrics(0, 0, 0, ()), plain)
    inputs = {"plain": CounterInputs(VLLM, tuple(read_block_deltas(vllm_run, "plain")))}
    assert spec_decode_section([], inputs) is None
    rows = [{"arm": "plain", "phase": "trial", "draft_n": None, "draft_accepted": None}]
    assert spec_decode_section(rows, {"plain": CounterInputs(counter_names("llamacpp"))}) is None


def test_summaries_without_speculation_leave_the_key_out() -> None:
    for name in ("bench", "compare"):
        obj = json.loads((RELEASE / name / "summary.json").read_text(encoding="utf-8"))
        summary = read_summary(obj)
        assert summary.spec_decode is None and summary.prefix_cache is None
        assert summary.to_json() == obj  # read back and written again: the same bytes


def test_the_demo_report_gains_the_record_and_keeps_its_theory(tmp_path: Path) -> None:
    run = tmp_path / "demo"
    shutil.copytree(RELEASE / "demo", run)
    released = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    report = build_report(run)
    after = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    assert set(after) - set(released) == {"spec_decode"}
    assert after["spec_decode"]["ngram-simple"]["drafts"] == 96
    model = report.manifest.arm("none").effective.get("model.path")
    if isinstance(model, str) and Path(model).exists():  # theory reads the record: unchanged
        assert after["theory"] == released["theory"]
    md = report.markdown.read_text(encoding="utf-8")
    assert "## Speculative decoding" in md
    assert "| ngram-simple | per-request timings | 96 | 3260 | 964 | 29.6 % | 10.04 | 11.04 |" in md


SMOLLM2_CONFIG = {  # SmolLM2-135M-Instruct's config.json, as converted for vLLM
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "dtype": "bfloat16",
    "head_dim": 64, "hidden_size": 576, "intermediate_size": 1536,
    "max_position_embeddings": 8192, "num_attention_heads": 9, "num_hidden_layers": 30,
    "num_key_value_heads": 3, "tie_word_embeddings": True, "vocab_size": 49152,
}  # fmt: skip
NGRAM_CONFIG = '{"method":"ngram","num_speculative_tokens":3,"prompt_lookup_max":4}'


def _rows(arm: str, decode_tps: float) -> list[dict[str, object]]:
    return [
        {"arm": arm, "phase": "trial", "outcome": "ok", "block": b, "concurrency": 1,
         "n_in": 400, "n_out": 128, "decode_tps": decode_tps}
        for b in range(2)
    ]  # fmt: skip


def test_theory_gives_a_vllm_arm_the_predicted_and_measured_speedup(vllm_run: RunDir) -> None:
    arch = architecture_from_hf_config(SMOLLM2_CONFIG, name="smollm2")
    eff: dict[str, str | int] = {"engine.kind": "vllm", "model.path": "smollm2-hf",
                                 "ctx_per_slot": 4096, "parallel": 1}  # fmt: skip
    facts = RunFacts(
        arms={"none": ArmFacts(effective={**eff, "vllm.speculative_config": "none"}),
              "ngram": ArmFacts(effective={**eff, "vllm.speculative_config": NGRAM_CONFIG})},
        hardware=Hardware("host-cpu (measured)", 25.0, 32 * 2**30, 0.2),
    )  # fmt: skip
    record = spec_decode_record(
        [], CounterInputs(VLLM, tuple(read_block_deltas(vllm_run, "ngram")))
    )
    assert record is not None
    # vLLM has no decode-call counter: steps = generated - accepted (one token per step plus
    # the drafts it accepted), read from the same block files
    steps = decode_steps(vllm_run, "ngram", facts.arm("ngram"))
    assert steps == 980 - 99
    inputs = {
        "none": TheoryInputs(arch),
        "ngram": TheoryInputs(arch, spec=record, decode_calls=steps),
    }
    theory = theory_section(facts, _rows("none", 50.0) + _rows("ngram", 60.0), "none", inputs)
    plain, ngram = theory.arms["none"], theory.arms["ngram"]
    assert isinstance(plain, ArmPrediction) and plain.spec is None
    assert isinstance(ngram, ArmPrediction) and ngram.spec is not None
    spec = ngram.spec
    assert spec.spec_type == "ngram"  # the method of vLLM's speculative_config
    assert spec.mean_draft_length == 3 and spec.acceptance == pytest.approx(99 / 210)
    assert spec.tokens_per_verify_step == pytest.approx(99 / 70 + 1)
    assert spec.draft_step_fraction == pytest.approx(70 / 881)  # drafts / decode steps
    assert spec.measured_speedup == pytest.approx(60.0 / 50.0)
    assert spec.predicted_speedup > 0


def test_the_report_section_shows_each_arm_and_escapes_names() -> None:
    record = SpecDecodeRecord(
        source="metrics", drafts=70, draft_tokens=210, accepted_tokens=99,
        acceptance_rate=99 / 210, mean_accepted_length=99 / 70, tokens_per_step=99 / 70 + 1,
        per_position=(45 / 70, 31 / 70, 23 / 70), n_blocks=2,
    )  # fmt: skip
    obj = json.loads((RELEASE / "demo" / "summary.json").read_text(encoding="utf-8"))
    summary = Summary.from_json({**obj, "spec_decode": {"<b>ngram</b>": {
        "source": "metrics", "drafts": 70, "draft_tokens": 210, "accepted_tokens": 99,
        "acceptance_rate": 99 / 210, "mean_accepted_length": 99 / 70,
        "tokens_per_step": 99 / 70 + 1, "per_position": [45 / 70, 31 / 70, 23 / 70],
        "n_blocks": 2}}})  # fmt: skip
    assert summary.spec_decode is not None and summary.spec_decode["<b>ngram</b>"] == record
    manifest = read_run(RELEASE / "demo").manifest
    html = render_html(summary, manifest, [])
    assert "&lt;b&gt;ngram&lt;/b&gt;" in html and "<b>ngram</b>" not in html
    assert "Speculative decoding" in html and "47.1 %" in html
    md = render_markdown(summary, manifest)
    assert "1: 0.64, 2: 0.44, 3: 0.33" in md and "engine counters" in md


def test_long_position_lists_are_summarised() -> None:
    assert positions_text(()) == "-"
    text = positions_text(tuple(1 / (i + 1) for i in range(20)))
    assert text.startswith("1: 1.00, 2: 0.50") and text.endswith("... 20: 0.05")
    assert spec_decode_blocks(None)[0].__class__.__name__ == "Para"


def test_an_endpoint_identified_as_vllm_is_read_under_vllms_names(vllm_run: RunDir) -> None:
    endpoint = ArmFacts(effective={"engine.kind": "openai"}, identity_engine="vllm")
    record = spec_decode_record([], counter_inputs(vllm_run, "ngram", endpoint))
    assert record is not None and (record.source, record.drafts) == ("metrics", 70)
    unknown = ArmFacts(effective={"engine.kind": "openai"})  # not identified: nothing to read
    assert spec_decode_record([], counter_inputs(vllm_run, "ngram", unknown)) is None
