"""Readiness end to end: a role promoted from a real llama-server run is ready on a free
machine, and is refused (by `ready` and by `verify`) with one line naming the port while a
socket holds the promoted port; `verify --force` goes past it and records the finding."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from servelab.engines.process import free_port
from servelab.runner.readiness import COMPUTE_MARGIN_BYTES, memory_need
from tests.integration.conftest import error_lines, run_cli

pytestmark = pytest.mark.engine

SPEC = """
name: ready
base:
  engine: {model: smollm2-135m-instruct, ctx_per_slot: 2048, flags: ["--cache-ram", "0"]}
  workload: chat-tools
  max_tokens: 16
arms: {t2: {threads: 2}, t1: {threads: 1}}
blocks: 2
requests_per_block: 2
warmup: 1
"""

CHECKS = ("machine_lock", "port", "resident_engine", "gpu_memory", "model_file", "engine_binary")

ROLES = """
schema_version: 1
roles:
  fast: {description: replies for the agent loop, rules: ["decode_tps >= 5"]}
"""


def _promote(tmp_path: Path, port: int) -> Path:
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    done = run_cli("run", str(spec), "--out", str(tmp_path / "run"), "--quiet")
    assert done.returncode == 0, done.stderr
    registry = tmp_path / "roles.yaml"
    registry.write_text(ROLES)
    done = run_cli("promote", str(tmp_path / "run"), "--arm", "t1", "--role", "fast",
                   "--registry", str(registry), "--port", str(port))  # fmt: skip
    assert done.returncode == 0, done.stderr
    return registry


def test_ready_then_refused_while_the_promoted_port_is_held(
    engine_ready: None, tmp_path: Path
) -> None:
    port = free_port()
    registry = _promote(tmp_path, port)
    ready = run_cli("ready", "fast", "--registry", str(registry))
    assert ready.returncode == 0, ready.stdout + ready.stderr
    assert "role fast is ready to start" in ready.stdout
    shown = json.loads(run_cli("ready", "fast", "--registry", str(registry), "--json").stdout)
    kinds = {f["kind"]: f for f in shown["findings"]}
    assert shown["ready"] and tuple(kinds) == CHECKS
    assert kinds["port"]["detail"] == f"port {port} on 127.0.0.1 is free"
    assert "as promoted" in kinds["model_file"]["detail"]
    assert "as promoted" in kinds["engine_binary"]["detail"]

    # the theory's KV for the promoted command line is what the engine reported in the run
    record = json.loads((tmp_path / "promoted" / "fast.json").read_text())
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    need = memory_need(record["engine"]["model_path"], record["engine"]["argv"])
    kv_bytes = need.need_bytes - Path(record["engine"]["model_path"]).stat().st_size
    kv_bytes -= COMPUTE_MARGIN_BYTES
    assert abs(kv_bytes / 2**20 - manifest["arms"]["t1"]["kv_reported"]["kv_mib"]) < 0.01

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", port))
        held.listen()
        refused = run_cli("ready", "fast", "--registry", str(registry))
        assert refused.returncode == 3, refused.stderr
        assert f"servelab: not ready: port: port {port} on 127.0.0.1 is in use" in refused.stderr
        assert len(error_lines(refused.stderr)) == 1
        blocked = run_cli("verify", "fast", "--registry", str(registry), "-n", "2",
                          "--out", str(tmp_path / "v1"))  # fmt: skip
        assert blocked.returncode == 3 and not (tmp_path / "v1").exists()
        (line,) = error_lines(blocked.stderr)
        assert "role 'fast' is not ready to verify" in line and f"port {port}" in line
        forced = run_cli("verify", "fast", "--registry", str(registry), "-n", "3", "--force",
                         "--out", str(tmp_path / "v2"))  # fmt: skip
    assert forced.returncode in (0, 1), forced.stderr  # 1 only for a measured regression
    assert f"forced past: not ready: port: port {port} on 127.0.0.1" in forced.stdout
    bench = json.loads((tmp_path / "v2" / "bench" / "manifest.json").read_text())
    (recorded,) = [f for f in bench["preflight"] if f["kind"] == "port"]
    assert recorded["blocking"] and f"port {port}" in recorded["detail"]
    unknown = run_cli("ready", "nosuch", "--registry", str(registry))
    assert unknown.returncode == 2 and len(error_lines(unknown.stderr)) == 1
