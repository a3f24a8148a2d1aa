"""Promotion end to end: a promoted llama-server command line, run as written, starts a server
that matches the promoted configuration; roles list it; verify re-runs it."""

from __future__ import annotations

import json
import shlex
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from servelab.engines.llamacpp import binary_text
from servelab.engines.process import free_port
from servelab.models import file_sha256
from servelab.spec.llamaargs import canonicalize, parse_help
from tests.integration.conftest import error_lines, run_cli

pytestmark = pytest.mark.engine

SPEC = """
name: promote
base:
  engine: {model: smollm2-135m-instruct, flags: ["--cache-ram", "0"]}
  workload: chat-tools
  max_tokens: 32
arms: {t2: {threads: 2}, t1: {threads: 1}}
blocks: 2
requests_per_block: 3
warmup: 1
"""

ROLES = """
schema_version: 1
roles:
  fast: {description: replies for the agent loop, rules: ["decode_tps >= 20"]}
  impossible: {rules: ["decode_tps >= 100000"]}
"""


def test_promoted_command_line_starts_the_promoted_configuration(
    engine_ready: None, tmp_path: Path
) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    run = tmp_path / "run"
    done = run_cli("run", str(spec), "--out", str(run), "--quiet")
    assert done.returncode == 0, done.stderr
    registry = tmp_path / "roles.yaml"
    registry.write_text(ROLES)
    refused = run_cli("promote", str(run), "--arm", "t1", "--role", "impossible",
                      "--registry", str(registry))  # fmt: skip
    assert refused.returncode == 7 and "does not meet role 'impossible'" in refused.stderr
    assert len(error_lines(refused.stderr)) == 1
    port = free_port()
    done = run_cli("promote", str(run), "--arm", "t1", "--role", "fast", "--registry",
                   str(registry), "--port", str(port))  # fmt: skip
    assert done.returncode == 0, done.stderr
    record = json.loads((tmp_path / "promoted" / "fast.json").read_text())
    assert record["arm"] == "t1" and record["evidence"]["role_rules"]["decode_tps >= 20"]["passed"]
    line = (tmp_path / "promoted" / "fast.cmd").read_text().strip()
    argv = shlex.split(line)  # run as written: an argument list, no shell
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    log = (tmp_path / "promoted.log").open("wb")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(base + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        props = httpx.get(base + "/props", timeout=5).json()
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
    engine = record["engine"]
    assert props["build_info"] == engine["build_info"]
    assert file_sha256(Path(argv[0])) == engine["binary_sha256"]
    assert file_sha256(Path(argv[argv.index("--model") + 1])) == engine["model_sha256"]
    table = parse_help(binary_text(argv[0], "--help"))
    running = canonicalize(argv[1:], table).values
    promoted = {k.removeprefix("llama."): v for k, v in record["effective"].items()
                if k.startswith("llama.")}  # fmt: skip
    assert {k: v for k, v in running.items() if k != "port"} == promoted
    assert running["threads"] == "1"
    listed = run_cli("roles", "--registry", str(registry))
    assert listed.returncode == 0 and "t1" in listed.stdout and "impossible" in listed.stdout
    checked = run_cli("verify", "fast", "--registry", str(registry), "-n", "4",
                      "--out", str(tmp_path / "verify"))  # fmt: skip
    assert checked.returncode in (0, 1), checked.stderr  # 1 only for a measured regression
    assert "decode_tps (pooled):" in checked.stdout and (tmp_path / "verify" / "compare" /
                                                         "summary.json").exists()  # fmt: skip
