"""``servelab predict`` through a tiny typer app: tables, the JSON form, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from servelab.cli.predict_cmd import predict
from servelab.errors import UsageError
from servelab.runner.hardware import resolve_hardware

ARCH = {
    "name": "toy-moe", "layers": 4, "embedding": 256, "vocab": 1000, "context_train": 8192,
    "attention": {"heads": 4, "kv_heads": 2, "head_dim": 64, "sliding_window": 128},
    "pattern": ["sliding", "full"], "ffn": 512,
    "moe": {"experts": 16, "active": 2, "expert_ffn": 128}, "weight_bits": 4,
}  # fmt: skip
JSON_KEYS = {
    "schema_version", "model", "settings", "hardware", "kv", "decode", "prefill", "batch", "spec",
    "profile",
}  # fmt: skip


@pytest.fixture
def arch_file(tmp_path: Path) -> Path:
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(ARCH), encoding="utf-8")
    return path


def app() -> typer.Typer:
    application = typer.Typer(pretty_exceptions_enable=False)
    application.command()(predict)
    return application


def test_json_form_is_stable(arch_file: Path) -> None:
    args = [str(arch_file), "--hw", "h100-sxm", "--ctx", "2048", "--parallel", "2",
            "--kv", "q8_0", "--spec-k", "3", "--accept", "0.7", "--json"]  # fmt: skip
    result = CliRunner().invoke(app(), args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data) == JSON_KEYS and data["schema_version"] == 1
    assert data["settings"]["n_ctx"] == 4096 and data["settings"]["kv_k"] == "q8_0"
    assert [g["kind"] for g in data["kv"]["groups"]] == ["full", "sliding"]
    assert data["hardware"]["name"] == "h100-sxm" and data["decode"]["ceiling_tps"] > 0
    assert data["spec"]["k"] == 3 and 2 in [b["batch"] for b in data["batch"]]


def test_tables_without_hardware(arch_file: Path) -> None:
    result = CliRunner().invoke(app(), [str(arch_file), "--hw", "none", "--kv-k", "q8_0"])
    assert result.exit_code == 0, result.output
    assert "KV cache" in result.stdout and "no hardware" in result.stdout


def test_kv_and_kv_k_together_is_an_error(arch_file: Path) -> None:
    result = CliRunner().invoke(app(), [str(arch_file), "--kv", "q8_0", "--kv-k", "q4_0"])
    assert isinstance(result.exception, UsageError)


def test_spec_k_without_acceptance_is_an_error(arch_file: Path) -> None:
    result = CliRunner().invoke(app(), [str(arch_file), "--hw", "none", "--spec-k", "4"])
    assert isinstance(result.exception, UsageError) and "--accept" in str(result.exception)


def test_auto_hardware_without_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("servelab.runner.hardware.gpus", lambda: [])
    assert resolve_hardware("auto") is None
    fake = [{"name": "NVIDIA GeForce RTX 4090", "driver": "x", "memory": "24564 MiB"}]
    monkeypatch.setattr("servelab.runner.hardware.gpus", lambda: fake)
    found = resolve_hardware("auto")
    assert found is not None and found.name == "rtx-4090"
    monkeypatch.setattr("servelab.runner.hardware.gpus", lambda: [])
    cpu = resolve_hardware("auto", measure_cpu=True)  # a run on a CPU measures this machine
    assert cpu is not None and cpu.source == "measured"
    assert 0.1 < cpu.bandwidth_gbs < 2000 and cpu.fp16_tflops > 0


def test_user_hardware_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = tmp_path / "hardware.yaml"
    entry = {"name": "my-box", "bandwidth_gbs": 50, "memory_gb": 64, "fp16_tflops": 1}
    file.write_text(yaml.safe_dump({"schema_version": 1, "hardware": [entry]}), "utf-8")
    monkeypatch.setenv("SERVELAB_HARDWARE_FILE", str(file))
    found = resolve_hardware("my-box")
    assert found is not None and found.source == str(file)


def test_the_library_function_is_what_the_command_prints(arch_file: Path) -> None:
    """``servelab.predict`` is the whole of ``servelab predict``: its JSON is the command's."""
    import servelab

    args = [str(arch_file), "--hw", "h100-sxm", "--ctx", "2048", "--parallel", "2",
            "--kv", "q8_0", "--spec-k", "3", "--accept", "0.7", "--json"]  # fmt: skip
    printed = CliRunner().invoke(app(), args).stdout
    inputs = servelab.PredictInput(
        ctx_per_slot=2048, parallel=2, kv_k="q8_0", kv_v="q8_0", spec_k=3, accept=0.7
    )
    prediction = servelab.predict(arch_file, inputs, hardware="h100-sxm")
    as_json = json.dumps(servelab.prediction_to_json(prediction), indent=2, sort_keys=True)
    assert printed == as_json + "\n"
    bare = servelab.predict(str(arch_file), hardware=None)
    assert bare.hardware is None and bare.inputs.ctx_per_slot == 4096 and bare.batch == ()
