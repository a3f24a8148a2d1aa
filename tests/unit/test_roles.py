"""The roles registry and the artefacts of a promotion."""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

import pytest

from servelab.engines.registry import engine_class
from servelab.errors import GatesFailed, UsageError
from servelab.runner.promote import list_roles, load_promotion, load_registry, promote, systemd_unit

RELEASED = Path(__file__).parents[1] / "fixtures" / "runs" / "release-0.1.0"


def test_registry_is_validated_with_the_gate_grammar(tmp_path: Path) -> None:
    f = tmp_path / "roles.yaml"
    f.write_text("schema_version: 1\nroles:\n  fast: {rules: ['decode_tps >= 70']}\n")
    assert load_registry(f).roles["fast"].rules == ("decode_tps >= 70",)
    f.write_text("roles:\n  fast: {rules: ['speed >= 70']}\n")
    with pytest.raises(UsageError, match="unknown metric 'speed'"):
        load_registry(f)
    f.write_text("roles:\n  fast: {rulez: []}\n")
    with pytest.raises(UsageError, match=r"roles\.fast\.rulez: unknown key"):
        load_registry(f)
    with pytest.raises(UsageError, match="does not exist"):
        load_registry(tmp_path / "missing.yaml")


def test_command_line_and_unit_carry_the_exact_argv() -> None:
    argv = ["/opt/llama server/llama-server", "--model", "/m.gguf", "--host", "127.0.0.1",
            "--port", "<free port>", "--cache-ram", "0"]  # fmt: skip
    concrete = engine_class("llamacpp").launch_command(argv, 9000)
    assert concrete[concrete.index("--port") + 1] == "9000"
    assert shlex.split(shlex.join(concrete)) == concrete  # the .cmd line splits back exactly
    unit = systemd_unit("fast", concrete, {"GGML_X": "1 2"}, "quick")
    assert 'ExecStart="/opt/llama server/llama-server" --model /m.gguf' in unit
    assert 'Environment="GGML_X=1 2"' in unit and "--port 9000" in unit
    assert "Restart=on-failure" in unit and "WantedBy=multi-user.target" in unit


def test_a_released_run_promotes_with_its_evidence(tmp_path: Path) -> None:
    run = tmp_path / "demo"
    shutil.copytree(RELEASED / "demo", run)
    registry = tmp_path / "roles.yaml"
    registry.write_text(
        "roles:\n  any: {description: d, rules: ['decode_tps >= 0.1']}\n"
        "  never: {rules: ['decode_tps >= 100000']}\n",
        encoding="utf-8",
    )
    refused = (
        r"does not meet role 'never': decode_tps >= 100000 \(value [0-9.]+, interval "
        r"\[[0-9., ]+\], threshold 1e\+05\); a rule holds only when its whole interval"
    )
    with pytest.raises(GatesFailed, match=refused):
        promote(run, "none", "never", registry=registry)
    done = promote(run, "none", "any", registry=registry, port=9123)
    record = json.loads(done.record.read_text(encoding="utf-8"))
    manifest = json.loads((RELEASED / "demo" / "manifest.json").read_text(encoding="utf-8"))
    entry = manifest["arms"]["none"]
    assert list(record) == [
        "schema_version",
        "role",
        "arm",
        "promoted_utc",
        "run_id",
        "run_dir",
        "workload",
        "engine",
        "effective",
        "host",
        "hardware",
        "evidence",
    ]
    assert record["effective"] == entry["effective"] and record["host"] == manifest["host"]
    assert record["engine"]["build_info"] == entry["starts"][0]["describe"]["build_info"]
    assert record["engine"]["model_sha256"] == entry["effective"]["model.sha256"]
    assert record["engine"]["argv"][record["engine"]["argv"].index("--port") + 1] == "9123"
    assert record["evidence"]["role_rules"]["decode_tps >= 0.1"]["passed"] is True
    assert {c["candidate"] for c in record["evidence"]["comparisons"]} == {"ngram-simple"}
    assert done.command is not None and "--port 9123" in done.command.read_text(encoding="utf-8")
    assert load_promotion(registry, "any").arm == "none"
    held = {r.role: r.holder for r in list_roles(registry)}
    assert held["never"] is None and held["any"] is not None and held["any"].run_id == "demo"
