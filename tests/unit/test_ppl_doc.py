"""``quality/ppl.json`` records (servelab.store.perplexity) and how ``quality ppl`` picks arms."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from rich.console import Console

from servelab.cli.quality_cmd import ppl_table
from servelab.errors import UsageError
from servelab.runner.quality import _arms, _skip_reason, run_ppl, text_info
from servelab.store import Manifest
from servelab.store.perplexity import PerplexityArm, PerplexityDoc, read_perplexity

RELEASED = Path(__file__).parents[1] / "fixtures" / "runs" / "release-0.1.0"


def _arm(mode: str, kld: dict[str, float] | None) -> PerplexityArm:
    return PerplexityArm(
        ppl=float("nan") if kld is None else 9.5, ppl_err=0.1, chunks=15, ctx=256, kld=kld,
        mode=mode, argv=("llama-perplexity", "-c", "256"), log="quality/ppl-a.log",
        seconds=12.5, cache_type_k="f16", cache_type_v="f16", flash_attn="auto",
    )  # type: ignore[arg-type]  # fmt: skip


def test_the_document_round_trips_and_keeps_a_nan(tmp_path: Path) -> None:
    doc = PerplexityDoc(
        run_id="r", created_utc="2026-11-30T00:00:00+00:00", text=text_info(b"abc"), ctx=256,
        baseline="a", status="complete", skipped={"c": "not a llama.cpp arm"},
        arms={"a": _arm("save", None), "b": _arm("kld", {"mean": 0.01, "mean_err": 0.001})},
    )  # fmt: skip
    path = tmp_path / "ppl.json"
    path.write_text(json.dumps(doc.to_json()), encoding="utf-8")
    assert "NaN" in path.read_text(encoding="utf-8")
    back = read_perplexity(path)
    assert back is not None and math.isnan(back.arms["a"].ppl)
    assert list(doc.to_json()) == ["schema_version", "kind", "tool", "run_id", "created_utc",
                                   "text", "ctx", "baseline", "status", "arms", "skipped",
                                   "logits"]  # fmt: skip
    console = Console(width=200, record=True)
    console.print(ppl_table(doc))
    shown = console.export_text()
    assert "a (baseline)" in shown and "0.010000 ± 0.001000" in shown and "skipped" in shown
    assert read_perplexity(tmp_path / "missing.json") is None


def test_only_experiments_with_a_logits_baseline_are_measured(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="is a bench run, not an experiment"):
        run_ppl(RELEASED / "bench")
    remote = {"effective": {"engine.kind": "openai"}}
    local = {"effective": {"engine.kind": "llamacpp", "model.path": str(tmp_path / "m.gguf"),
                           "engine.binary": "/bin/llama-server"}}  # fmt: skip
    manifest = Manifest.from_json({"kind": "experiment", "baseline": "r",
                                   "arms": {"r": remote, "l": local}})  # fmt: skip
    with pytest.raises(UsageError, match=r"baseline arm 'r' of .* is not a llama\.cpp arm"):
        _arms(tmp_path, manifest)
    manifest = Manifest.from_json({"kind": "experiment", "arms": {"l": local, "r": remote}})
    baseline, arms = _arms(tmp_path, manifest)
    assert baseline == "l" and list(arms) == ["l", "r"]
    assert "not a llama.cpp arm (engine openai)" in str(_skip_reason(arms["r"]))
    assert "is missing" in str(_skip_reason(arms["l"]))
