"""Security probes, run as a user would, through the CLI in a child process (issue 10).

A tiny endpoint that echoes the ``Authorization`` header back (in a 401 for every POST, in the
model list, in 404s) must not get the API key into any file of the run directory or onto the
terminal. Listening beyond loopback must be asked for with ``--bind`` / ``engine.bind``, and
every other spelling refused with one line and exit 2, before anything is launched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from tests.integration.conftest import DEFAULT_MODEL, listed_model, run_cli

KEY = "sk-probe-5f0e1d2c3b4a69788796a5b4"
KEY_ENV = "SERVELAB_PROBE_KEY"


class _EchoKey(BaseHTTPRequestHandler):
    """Answers like a provider that quotes the credentials it was given."""

    def _send(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _auth(self) -> str:
        return self.headers.get("Authorization", "")

    def do_GET(self) -> None:
        if self.path.rstrip("/").endswith("/v1/models"):
            self._send(200, {"object": "list", "data": [{"id": "m", "owned_by": self._auth()}]})
        else:
            self._send(404, {"error": f"not found (you sent {self._auth()})"})

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        message = f"Incorrect API key provided: {self._auth()}"
        self._send(401, {"error": {"message": message, "type": "invalid_request_error"}})

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the test reads what servelab wrote, not the server's access log."""


@pytest.fixture
def echo_endpoint() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EchoKey)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def _cli_with_key(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "servelab", *args],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "COLUMNS": "200", KEY_ENV: KEY},
    )  # fmt: skip


def _files_holding(root: Path, needle: bytes) -> list[str]:
    return [str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()
            and needle in p.read_bytes()]  # fmt: skip


def test_an_echoed_api_key_reaches_no_file_and_no_terminal(
    echo_endpoint: str, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    bench = _cli_with_key(
        "bench", "--engine", "openai", "--endpoint", echo_endpoint, "--model", "m",
        "--api-key-env", KEY_ENV, "-n", "3", "--warmup", "1", "--max-tokens", "4",
        "--out", str(out),
    )  # fmt: skip
    report = _cli_with_key("report", str(out))
    rows = [json.loads(line) for line in (out / "requests.jsonl").read_text().splitlines()]
    assert [r["http_status"] for r in rows] == [401] * 4, bench.stderr
    assert all("[redacted]" in r["error"] for r in rows)  # the message itself is kept
    assert bench.returncode != 0  # every request failed, and says so
    assert (out / "report.md").exists(), report.stderr
    assert _files_holding(out, KEY.encode()) == []
    for res in (bench, report):
        assert KEY not in res.stdout + res.stderr


def _spec(tmp_path: Path, engine: dict[str, object], arm: dict[str, object]) -> Path:
    path = tmp_path / "spec.yaml"
    data = {
        "name": "probe",
        "base": {"engine": {"model": "smollm2-135m-instruct", **engine}},
        "arms": {"a": {}, "b": arm},
    }
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


BENCH_SPELLINGS = [
    ["--flags", "--host 0.0.0.0"],
    ["--flags", "--host=0.0.0.0"],
    ["--flags", "-t 2 LLAMA_ARG_HOST=0.0.0.0"],
    ["--host", "0.0.0.0"],
    ["--flags", "--port 8080"],
]
SPEC_SPELLINGS = [
    ({"env": {"LLAMA_ARG_HOST": "0.0.0.0"}}, {}),
    ({}, {"env": {"LLAMA_ARG_HOST": "0.0.0.0"}}),
    ({"flags": ["--host", "0.0.0.0"]}, {}),
    ({}, {"flags": ["--host=0.0.0.0"]}),
    ({"host": "0.0.0.0"}, {}),
]


@pytest.mark.parametrize("argv", BENCH_SPELLINGS, ids=" ".join)
def test_bench_refuses_every_other_bind_spelling(argv: list[str], tmp_path: Path) -> None:
    res = run_cli("bench", *argv, "-n", "1", "--out", str(tmp_path / "run"), timeout=60)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1, res.stderr
    assert lines[0].startswith("servelab: error: ")
    assert ("--bind" if "host" in " ".join(argv).lower() else "--port PORT") in lines[0]
    assert not (tmp_path / "run").exists()  # refused before anything was launched


@pytest.mark.parametrize(("engine", "arm"), SPEC_SPELLINGS, ids=str)
def test_a_spec_refuses_every_other_bind_spelling(
    engine: dict[str, object], arm: dict[str, object], tmp_path: Path
) -> None:
    res = run_cli("run", str(_spec(tmp_path, engine, arm)), "--out", str(tmp_path / "run"),
                  timeout=60)  # fmt: skip
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1, res.stderr
    assert "engine.bind" in lines[0] and not (tmp_path / "run").exists()


@pytest.mark.engine
def test_binding_all_interfaces_is_said_recorded_and_reported(
    engine_ready: None, tmp_path: Path
) -> None:
    out = tmp_path / "bind"
    res = run_cli(
        "bench", "--model", listed_model(DEFAULT_MODEL), "--bind", "0.0.0.0", "-n", "1",
        "--warmup", "0", "--max-tokens", "4", "-q", "--out", str(out),
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    warning = [ln for ln in res.stderr.splitlines() if ln.startswith("servelab: warning: ")]
    assert len(warning) == 1 and "0.0.0.0" in warning[0]
    arm = json.loads((out / "manifest.json").read_text())["arms"]["bench"]
    assert arm["engine_config"]["bind"] == "0.0.0.0" and arm["describe"]["bind"] == "0.0.0.0"
    assert arm["describe"]["base_url"].startswith("http://127.0.0.1:")  # traffic stayed local
    report = run_cli("report", str(out))
    assert report.returncode == 0, report.stderr
    assert "0.0.0.0" in report.stdout and "0.0.0.0" in (out / "report.md").read_text()
    kinds = [w["kind"] for w in json.loads((out / "summary.json").read_text())["warnings"]]
    assert "exposed_bind" in kinds
