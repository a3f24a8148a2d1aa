"""servelab import: llama-bench, vllm bench serve and generic rows into a run directory.

Uses the real llama-bench output and the hand-built vLLM files in tests/fixtures/import, and
copies of published result files in tests/fixtures/reference (its README names their origin).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from servelab.analysis import summarize_arm
from servelab.cli.import_cmd import import_cmd
from servelab.errors import UsageError
from servelab.importers import ImportOptions, import_results
from servelab.importers.common import parse_map
from servelab.metrics import METRICS

FIXTURES = Path(__file__).parents[1] / "fixtures" / "import"
REFERENCE = Path(__file__).parents[1] / "fixtures" / "reference"
SUMMARY_CSV = REFERENCE / "qwen3.6-speculative-decoding-rtx3090" / "analysis" / "summary.csv"
V5 = REFERENCE / "qwen3.6-vllm-2x3090" / "v5_2026_05_17" / "data"
V4_PHASE_A = (
    REFERENCE / "qwen3.6-vllm-2x3090" / "v4_2026_05_07" / "data" / "phase_a_p220_k3_t0.0.json"
)
CONTEXT = ("schema_version", "run_id", "arm", "block", "phase", "seq", "prompt_id", "concurrency",
           "t_send_unix_s", "outcome", "error", "finish_reason", "source")  # fmt: skip


def _run(
    files: list[Path | str], tmp_path: Path, **kw: Any
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    result = import_results(files, ImportOptions(**kw), out=tmp_path / "run")
    manifest = json.loads(result.run_dir.manifest.read_text(encoding="utf-8"))
    lines = result.run_dir.requests.read_text(encoding="utf-8").splitlines()
    return manifest, [json.loads(line) for line in lines]


def _kinds(manifest: dict[str, Any]) -> set[str]:
    return {n.split(":")[0] for n in manifest["notes"]}


def _arm_rows(rows: list[dict[str, Any]], arm: str) -> list[dict[str, Any]]:
    return [r for r in rows if r["arm"] == arm]


def test_rows_look_like_servelab_rows(tmp_path: Path) -> None:
    manifest, rows = _run([FIXTURES / "llama-bench-smollm2-threads.json"], tmp_path)
    for row in rows:
        assert set(CONTEXT) <= set(row)
        assert {m.name for m in METRICS} <= set(row)
    assert [r["seq"] for r in rows] == list(range(len(rows)))
    assert manifest["kind"] == "import" and manifest["interleaved"] is False
    assert manifest["status"] == "complete"
    assert len(manifest["source"]["files"][0]["sha256"]) == 64
    summary = summarize_arm(_arm_rows(rows, "n_threads=2"))
    assert summary.n_ok == 6 and summary.metrics["decode_tps"].n == 3


def test_llama_bench_json_arms_from_differing_field(tmp_path: Path) -> None:
    path = FIXTURES / "llama-bench-smollm2-threads.json"
    manifest, rows = _run([path], tmp_path)
    assert list(manifest["arms"]) == ["n_threads=1", "n_threads=2"]
    assert manifest["baseline"] == "n_threads=1"
    entries = json.loads(path.read_text(encoding="utf-8"))
    tg = next(e for e in entries if e["n_gen"] and e["n_threads"] == 2)
    got = [r for r in rows if r["arm"] == "n_threads=2" and r["prompt_id"] == "tg32"]
    assert [r["decode_tps"] for r in got] == tg["samples_ts"]
    assert [r["block"] for r in got] == [0, 1, 2]
    pp = next(r for r in rows if r["prompt_id"] == "pp64")
    assert pp["prefill_tps"] > 0 and pp["decode_tps"] is None and pp["n_in"] == 64
    assert {"synthetic_load", "not_interleaved"} <= _kinds(manifest)


def test_llama_bench_jsonl_with_pg_test_and_arm_from(tmp_path: Path) -> None:
    path = FIXTURES / "llama-bench-smollm2-ctk.jsonl"
    manifest, rows = _run([path], tmp_path, arm_from="type_k")
    assert list(manifest["arms"]) == ["f16", "q8_0"]
    pg = [r for r in rows if r["prompt_id"] == "pp32+tg16"]
    assert len(pg) == 6
    assert pg[0]["e2e_tps"] == pytest.approx(16 / pg[0]["e2e_s"])
    assert pg[0]["source"]["line"] == 3


def test_llama_bench_unknown_arm_field_names_fields(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"--arm-from 'nope'.*fields: model"):
        _run([FIXTURES / "llama-bench-smollm2-ctk.jsonl"], tmp_path, arm_from="nope")


def test_vllm_bench_serve_two_files(tmp_path: Path) -> None:
    files = [FIXTURES / "vllm-bench-serve-baseline.json", FIXTURES / "vllm-bench-serve-mtp.json"]
    manifest, rows = _run(files, tmp_path)
    assert manifest["source"]["format"] == "vllm-bench-serve"
    assert list(manifest["arms"]) == ["baseline", "mtp"]
    base0 = rows[0]
    assert base0["chunk_tokens_source"] == "verified" and len(base0["itl_s"]) == 3
    assert base0["e2e_s"] == pytest.approx(0.051 + 0.060)  # ttft + sum(itls): reconstructed
    assert base0["decode_tps"] == pytest.approx(3 / 0.060)
    mtp = _arm_rows(rows, "mtp")
    assert mtp[0]["chunk_tokens_source"] == "estimated" and mtp[0]["itl_s"] == []
    assert mtp[0]["e2e_s"] == pytest.approx(0.053 + 0.048 + 0.002)  # from latencies
    assert mtp[2]["outcome"] == "connection_error" and mtp[2]["ttft_s"] is None
    assert manifest["arms"]["mtp"]["engine_counters"]["spec_decode_accepted_tokens"] == 15
    assert {"reconstructed", "ttft_definition"} <= _kinds(manifest)


def test_vllm_append_result_documents_become_arms(tmp_path: Path) -> None:
    docs = [
        json.loads((FIXTURES / f"vllm-bench-serve-{n}.json").read_text())
        for n in ("baseline", "mtp")
    ]
    path = tmp_path / "appended.json"
    path.write_text("\n".join(json.dumps(d) for d in docs), encoding="utf-8")
    manifest, rows = _run([path], tmp_path)
    assert list(manifest["arms"]) == ["baseline", "mtp"]
    assert rows[-1]["source"]["document"] == 1


def test_preset_summary_csv(tmp_path: Path) -> None:
    manifest, rows = _run([SUMMARY_CSV], tmp_path, preset="qwen36-llamacpp-summary")
    assert len(manifest["arms"]) == 19 and len(rows) == 190
    first = rows[0]
    assert first["arm"] == "baseline" and first["prompt_id"] == "short_greet"
    assert first["decode_tps"] == pytest.approx(136.16316704633496)
    assert first["e2e_s"] == pytest.approx(2.2888993489323184)
    assert first["raw"]["commit"] == "9789512"  # the last CRLF column has no stray \r
    assert set(manifest["config_diff"]) == {"kv_q8", "max_tokens"}
    assert {"decode_definition", "arm_config_differs"} <= _kinds(manifest)


def test_generic_mapping_matches_preset(tmp_path: Path) -> None:
    maps = ("prompt=prompt_id", "tok_s=decode_tps", "wall_ms=e2e_s", "predicted_n=n_out")
    references = str(SUMMARY_CSV.with_name("summary_by_config.csv"))  # columns config, reference
    _, rows = _run([SUMMARY_CSV], tmp_path, maps=maps, arm_column="config", references=references)
    assert rows[0]["e2e_s"] == pytest.approx(2.2888993489323184)  # unit inferred from _ms
    assert rows[0]["decode_tps"] == pytest.approx(136.16316704633496)
    assert rows[0]["raw"]["prompt_n"] == "25"  # unmapped columns are kept, not dropped


def test_preset_vllm_v5(tmp_path: Path) -> None:
    files = sorted(V5.glob("results_*.json"))
    manifest, rows = _run(files, tmp_path, preset="qwen36-vllm-v5", baseline="moe_35b_mtp_tp2")
    assert set(manifest["arms"]) == {"dense_27b_tp1", "moe_35b_mtp_tp2"}
    assert manifest["baseline"] == "moe_35b_mtp_tp2" and len(rows) == 60
    assert {r["block"] for r in rows} == {0, 1, 2}  # trial 1..3
    row = _arm_rows(rows, "moe_35b_mtp_tp2")[0]
    assert row["e2e_tps"] == 29.22 and row["ttft_s"] == 0.5748
    assert row["decode_tps"] == pytest.approx(25 / (0.8897 - 0.5748))
    tools = [r for r in rows if r["tool_calls"]]
    assert tools[0]["tool_calls"][0]["name"] and tools[0]["ttft_tool_s"] is not None
    assert {"no_warmup", "rate_includes_prefill", "ttft_definition", "cold_start"} <= _kinds(
        manifest
    )
    assert manifest["arms"]["dense_27b_tp1"]["source_meta"]["model"] == "qwen36-27b"


def test_warmup_first_marks_cold_start(tmp_path: Path) -> None:
    _, rows = _run(
        sorted(V5.glob("results_*.json")), tmp_path, preset="qwen36-vllm-v5", warmup_first=1
    )
    warm = [r for r in rows if r["phase"] == "warmup"]
    assert [(r["prompt_id"], r["block"]) for r in warm] == [("c1", 0), ("c1", 0)]


def test_tok_s_mapped_to_decode_is_detected(tmp_path: Path) -> None:
    maps = ("ttft_ms=ttft_s", "e2e_ms=e2e_s", "out_tok=n_out", "toks_per_sec=decode_tps")
    manifest, _ = _run([V5 / "results_dense_27b_tp1.json"], tmp_path, maps=maps, rows_key="rows")
    assert "rate_includes_prefill" in _kinds(manifest)


def test_preset_vllm_v4_phase_a(tmp_path: Path) -> None:
    manifest, rows = _run([V4_PHASE_A], tmp_path, preset="qwen36-vllm-v4")
    assert len(rows) == 25 and rows[0]["t_send_unix_s"] == pytest.approx(1778131356.5316017)
    assert rows[0]["draft_n"] == 57 and rows[0]["acceptance_rate"] == pytest.approx(36 / 57)
    assert rows[0]["decode_tps"] == pytest.approx(1 / rows[0]["tpot_s"])
    assert manifest["arms"]["phase_a_p220_k3_t0.0"]["source_meta"]["config_id"] == "p220_k3_t0.0"


def test_missing_column_names_it_and_the_columns(tmp_path: Path) -> None:
    with pytest.raises(
        UsageError,
        match=r"--map ttft=ttft_s: column 'ttft' not found .* columns: config, source_file",
    ):
        _run([SUMMARY_CSV], tmp_path, maps=("ttft=ttft_s",), arm_column="config")


def test_bad_values_are_counted_not_dropped(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_bytes(b"cfg,ttft_ms,out\r\na,12.5,10\r\na,n/a,10\r\nb,15,9\r\n,3,3\r\n")
    manifest, rows = _run([path], tmp_path, maps=("ttft_ms=ttft_s", "out=n_out"), arm_column="cfg")
    assert len(rows) == 2 and rows[0]["ttft_s"] == 0.0125
    skipped = manifest["source"]["skipped"]
    assert skipped["count"] == 2 and skipped["examples"][0]["line"] == 3
    assert "skipped_rows" in _kinds(manifest)


def test_json_rows_at_key_path_and_jsonl(tmp_path: Path) -> None:
    doc = {"meta": {"v": 1}, "data": {"rows": [{"t": 0.1, "ok": True}, {"t": 0.2, "ok": False}]}}
    (tmp_path / "a.json").write_text(json.dumps(doc), encoding="utf-8")
    (tmp_path / "b.jsonl").write_text('{"t": 0.3, "ok": true}\n', encoding="utf-8")
    files = [f"{tmp_path / 'a.json'}=first", tmp_path / "b.jsonl"]
    maps = ("t=ttft_s", "ok=outcome")
    _manifest, rows = _run(files, tmp_path, maps=maps, rows_key="data.rows")
    assert [r["arm"] for r in rows] == ["first", "first", "b"]
    assert [r["outcome"] for r in rows] == ["ok", "http_error", "ok"]
    assert rows[1]["ttft_s"] is None and rows[1]["raw"]["failed_request_latency"] == {"ttft_s": 0.2}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("a", "expected SRC=TARGET"),
        ("a=nope", "unknown target 'nope'"),
        ("a=ttft_s:h", "unknown unit"),
    ],
)
def test_bad_map_is_one_line(spec: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_map(spec)


def test_refuses_non_empty_out_and_unknown_names(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "x").write_text("x")
    with pytest.raises(UsageError, match="not empty"):
        _run([SUMMARY_CSV], tmp_path, preset="qwen36-llamacpp-summary")
    with pytest.raises(UsageError, match="--preset 'x': unknown"):
        import_results([SUMMARY_CSV], ImportOptions(preset="x"), out=tmp_path / "r2")
    with pytest.raises(UsageError, match="--baseline 'x': no such arm"):
        import_results(
            [SUMMARY_CSV],
            ImportOptions(preset="qwen36-llamacpp-summary", baseline="x"),
            out=tmp_path / "r3",
        )
    with pytest.raises(UsageError, match="nothing to import"):
        import_results([SUMMARY_CSV], out=tmp_path / "r4")


def test_cli_command(tmp_path: Path) -> None:
    app = typer.Typer()
    app.command()(import_cmd)
    out = tmp_path / "cli-run"
    args = [
        str(FIXTURES / "llama-bench-smollm2-threads.json"),
        "--out",
        str(out),
        "--baseline",
        "n_threads=2",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "n_threads=1: 6 rows" in result.output and "imported 12 rows" in result.output
    assert json.loads((out / "manifest.json").read_text())["baseline"] == "n_threads=2"
