"""Every block starts with an empty prefix cache, and the hits it then shows are recorded
(issue 14, item 4).

The run loop is the real one (``run_experiment`` through the executor seam, replay engine on a
fake clock, ``tests/unit/replay_harness.py``): a block that reuses a running engine asks it to
reset its prefix cache; the replay engine has no reset (``NoLocalProcess``), so an arm that
caches prompts is restarted instead, and one that does not is recorded as "caching off". An
engine with a reset (the replay engine answering as vLLM's ``POST /reset_prefix_cache`` does)
keeps its process. The prefix-cache record and the ``cache_hits_with_caching_off`` warning are
checked on counter deltas in vLLM's format and on llama.cpp rows.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from servelab.analysis.analyze import with_sections
from servelab.analysis.engine_facts import counter_names
from servelab.analysis.run_warnings import WARNING_KINDS, cache_warnings
from servelab.analysis.spec_decode import CounterInputs, prefix_cache_record, prefix_cache_section
from servelab.engines.replay import ReplayEngine, ReplayLab
from servelab.report.build import build_report
from servelab.report.html import render_html
from servelab.runner.experiment import run_experiment
from servelab.spec.engine import EngineConfig
from servelab.store import read_run
from servelab.store.metrics_files import BlockCache, BlockDeltas, read_block_caches
from servelab.store.rundir import RunDir
from tests.unit.replay_harness import STREAMS, make_seam, manifest, write_spec

RELEASE = Path(__file__).parents[1] / "fixtures" / "runs" / "release-0.1.0"
RESET = "POST /reset_prefix_cache"
VLLM = counter_names("vllm")
LABELS = '{engine="0",model_name="smollm2"}'


class ResettingReplay(ReplayEngine):
    """The replay engine with a prefix-cache reset, as vLLM's dev-mode endpoint answers."""

    resets = 0

    def reset_prefix_cache(self) -> str | None:
        ResettingReplay.resets += 1
        return RESET


def run_spec(tmp_path: Path, *, prefix_cache: bool, engine: type[ReplayEngine] = ReplayEngine
             ) -> Path:  # fmt: skip
    spec = write_spec(tmp_path, extra="restart: arm_change\n")
    text = spec.read_text().replace("blocks: 2", "blocks: 3")
    if prefix_cache:
        text = text.replace(f'model: "{STREAMS}"}}', f'model: "{STREAMS}", prefix_cache: true}}')
    spec.write_text(text)
    lab = ReplayLab()

    def create(config: EngineConfig, log: Path) -> ReplayEngine:
        made = engine(config, log, lab=lab)
        lab.engines.append(made)
        return made

    out = tmp_path / "run"
    run_experiment(spec, out, seam=dataclasses.replace(make_seam(lab), engine_factory=create))
    return out


def starts(out: Path) -> dict[str, list[int]]:
    arms = manifest(out)["arms"]
    assert isinstance(arms, dict)
    return {a: [s["block"] for s in e["starts"]] for a, e in arms.items()}


def emptied(out: Path) -> dict[tuple[str, int], tuple[bool, str]]:
    return {(c.arm, c.block): (c.restarted, c.emptied) for c in read_block_caches(RunDir(out))}


def test_a_reused_engine_without_a_reset_is_recorded_when_caching_is_off(tmp_path: Path) -> None:
    out = run_spec(tmp_path, prefix_cache=False)
    # the plan is a0 b0 b1 a1 a2 b2: b1 and a2 follow their own arm and keep its engine
    assert starts(out) == {"a": [0, 1], "b": [0, 2]}
    assert emptied(out) == {
        ("a", 0): (True, "restart"), ("b", 0): (True, "restart"),
        ("b", 1): (False, "caching off"), ("a", 1): (True, "restart"),
        ("a", 2): (False, "caching off"), ("b", 2): (True, "restart"),
    }  # fmt: skip
    files = sorted(p.name for p in (out / "metrics" / "cache").iterdir())
    assert files[0] == "a-b0-c1.json"
    data = json.loads((out / "metrics" / "cache" / "b-b1-c1.json").read_text(encoding="utf-8"))
    assert data == {"schema_version": data["schema_version"], "arm": "b", "block": 1,
                    "level": "c1", "restarted": False, "emptied": "caching off"}  # fmt: skip


def test_a_caching_arm_is_restarted_when_its_engine_cannot_reset(tmp_path: Path) -> None:
    out = run_spec(tmp_path, prefix_cache=True)
    assert starts(out) == {"a": [0, 1, 2], "b": [0, 1, 2]}  # every block its own start
    assert set(emptied(out).values()) == {(True, "restart")}
    rows = [json.loads(line) for line in (out / "requests.jsonl").read_text().splitlines()]
    assert sum(r["phase"] == "warmup" for r in rows) == 6  # a warm-up after every start


def test_an_engine_with_a_reset_keeps_running_and_resets_before_each_block(
    tmp_path: Path,
) -> None:
    ResettingReplay.resets = 0
    out = run_spec(tmp_path, prefix_cache=True, engine=ResettingReplay)
    assert starts(out) == {"a": [0, 1], "b": [0, 2]}  # no restart needed
    assert emptied(out) == {
        ("a", 0): (True, RESET), ("b", 0): (True, RESET), ("b", 1): (False, RESET),
        ("a", 1): (True, RESET), ("a", 2): (False, RESET), ("b", 2): (True, RESET),
    }  # fmt: skip
    assert ResettingReplay.resets == 6  # after each start's warm-up, before each reused block
    summary = build_report(out).summary
    assert summary.prefix_cache is not None  # caching on: recorded even with no hit
    record = summary.prefix_cache["a"]
    assert record.caching is True and record.hit_tokens == 0
    assert [(b.block, b.emptied) for b in record.blocks] == [(0, RESET), (1, RESET), (2, RESET)]
    assert not [w for w in summary.warnings if w.kind == "cache_hits_with_caching_off"]


def test_a_run_without_cache_records_reads_as_none() -> None:
    assert read_block_caches(RunDir(RELEASE / "demo")) == []


def _vllm_block(block: int, queries: float, hits: float) -> BlockDeltas:
    deltas = {f"vllm:prefix_cache_queries_total{LABELS}": queries,
              f"vllm:prefix_cache_hits_total{LABELS}": hits,
              f"vllm:prompt_tokens_total{LABELS}": queries}  # fmt: skip
    return BlockDeltas("mtp", block, "c4", deltas)


def test_vllm_hits_come_from_its_counters_per_block() -> None:
    blocks = (_vllm_block(0, 2048, 0), _vllm_block(1, 2048, 1536))
    caches = (BlockCache("mtp", 0, "c4", True, "restart"),
              BlockCache("mtp", 1, "c4", False, RESET))  # fmt: skip
    record = prefix_cache_record([], CounterInputs(VLLM, blocks, caches, caching=True))
    assert record is not None and record.source == "metrics"
    assert (record.hit_tokens, record.queried_tokens) == (1536, 4096)
    assert record.hit_rate == pytest.approx(0.375)
    assert [(b.block, b.level, b.hit_rate, b.emptied) for b in record.blocks] == [
        (0, "c4", 0.0, "restart"), (1, "c4", 0.75, RESET)]  # fmt: skip


def test_caching_off_with_hits_is_a_warning_naming_arm_and_hits() -> None:
    blocks = (_vllm_block(0, 2048, 0), _vllm_block(1, 2048, 512))
    section = prefix_cache_section([], {
        "off": CounterInputs(VLLM, blocks, caching=False),
        "quiet": CounterInputs(VLLM, (_vllm_block(0, 2048, 0),), caching=False),
    })  # fmt: skip
    assert section is not None and list(section) == ["off"]  # no hit, caching off: left out
    (warning,) = cache_warnings(section)
    assert warning.kind == "cache_hits_with_caching_off" and warning.arm == "off"
    assert "arm off" in warning.detail and "512 prompt tokens" in warning.detail
    assert "1 of 2 blocks" in warning.detail and "--enable-prefix-caching" in warning.advice
    assert "cache_hits_with_caching_off" in WARNING_KINDS
    assert cache_warnings(None) == []


def test_llamacpp_hits_come_from_rows_cache_n_over_n_in() -> None:
    rows = [
        {"arm": "chat", "phase": phase, "block": b, "concurrency": 1, "cache_n": c, "n_in": n}
        for phase, b, c, n in [("trial", 0, 0, 300), ("trial", 0, 280, 350), ("trial", 1, 0, 300),
                               ("warmup", 1, 300, 300)]
    ]  # fmt: skip
    record = prefix_cache_record(rows, CounterInputs(counter_names("llamacpp"), caching=False))
    assert record is not None and record.source == "requests"
    assert (record.hit_tokens, record.queried_tokens) == (280, 950)  # warm-ups never count
    assert [b.hit_rate for b in record.blocks] == [pytest.approx(280 / 650), 0.0]
    assert [w.arm for w in cache_warnings({"chat": record})] == ["chat"]


def test_released_runs_have_no_prefix_cache_key_and_the_warning_renders(tmp_path: Path) -> None:
    run = read_run(RELEASE / "demo")  # caching off and cache_n 0 everywhere
    counters = {
        a: CounterInputs(counter_names("llamacpp"), caching=False) for a in run.manifest.arms
    }
    assert prefix_cache_section(run.rows, counters) is None
    report = build_report(_copy(tmp_path))
    assert report.summary.prefix_cache is None
    section = prefix_cache_section([], {"<i>off</i>": CounterInputs(
        VLLM, (_vllm_block(0, 100, 40),), caching=False)})  # fmt: skip
    summary = with_sections(report.summary, prefix_cache=section,
                            more_warnings=cache_warnings(section))  # fmt: skip
    html = render_html(summary, report.manifest, [])
    assert "Prefix cache" in html and "&lt;i&gt;off&lt;/i&gt;" in html and "<i>off</i>" not in html
    assert "cache_hits_with_caching_off" in html


def _copy(tmp_path: Path) -> Path:
    out = tmp_path / "demo"
    shutil.copytree(RELEASE / "demo", out)
    return out
