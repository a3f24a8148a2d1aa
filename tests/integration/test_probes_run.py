"""Issue 10's probes, run as a user would: the CLI in a child process, the real llama-server.

Each probe feeds one bad input or one fault and checks the contract of docs/errors.md: the
documented exit code, exactly one ``servelab: error:`` line and it comes first on stderr, no
traceback, and nothing already measured lost. Probes that need the engine are marked ``engine``
and kept tiny (2 blocks of 2 requests, a few tokens); the others fail before any engine starts.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from servelab.store.jsonl import read_jsonl
from tests.conftest import Immutable
from tests.integration.conftest import error_lines, run_cli
from tests.models import DEFAULT_MODEL, listed_model


def spec_text(
    *, workload: str = "structured", max_tokens: object = 8, ctx_per_slot: int = 4096,
    requests_per_block: int = 2, warmup: int = 0,
) -> str:  # fmt: skip
    """A tiny two-arm spec: flash attention on vs off, written as YAML's `on` / `off`."""
    return (
        "name: probe\n"
        "base:\n"
        f"  engine: {{model: {listed_model(DEFAULT_MODEL)}, ctx_per_slot: {ctx_per_slot}, "
        "flags: ['--cache-ram', '0']}\n"
        f"  workload: {workload}\n"
        f"  max_tokens: {max_tokens}\n"
        "arms:\n"
        "  fa-on: {flash_attn: on}\n"
        "  fa-off: {flash_attn: off}\n"
        f"blocks: 2\nrequests_per_block: {requests_per_block}\nwarmup: {warmup}\n"
        "restart: arm_change\nkv_probe: false\nhardware: none\n"
    )


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def one_error_first(done: subprocess.CompletedProcess[str], code: int) -> str:
    """The contract of every failure: its code, one error line, first, and no traceback."""
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines and lines[0].startswith("servelab: error: "), done.stderr
    assert len(error_lines(done.stderr)) == 1, done.stderr
    return lines[0]


def trial_ids(run: Path) -> list[str]:
    rows = read_jsonl(run / "requests.jsonl").rows
    return [str(r["request_id"]) for r in rows if r["phase"] == "trial"]


# --- bad input: refused before anything starts -------------------------------------------------


def test_a_latin1_spec_is_one_line_exit_2(tmp_path: Path) -> None:
    spec = tmp_path / "latin1.yaml"
    spec.write_bytes(("description: caf\xe9 cr\xe8me\n" + spec_text()).encode("latin-1"))
    line = one_error_first(run_cli("run", str(spec)), 2)
    assert "not UTF-8" in line and "0xe9" in line


def test_duplicate_keys_in_a_spec_are_one_line_exit_2(tmp_path: Path) -> None:
    spec = write(tmp_path / "dup.yaml", spec_text() + "blocks: 6\n")
    line = one_error_first(run_cli("run", str(spec)), 2)
    assert "duplicate key 'blocks'" in line


def test_bad_roles_registries_are_one_line_exit_2(tmp_path: Path) -> None:
    dup = write(tmp_path / "dup.yaml", "roles:\n  fast: {}\n  fast: {}\n")
    assert "duplicate key 'fast'" in one_error_first(run_cli("roles", "--registry", str(dup)), 2)
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("roles: {fast: {description: caf\xe9}}\n".encode("latin-1"))
    assert "not UTF-8" in one_error_first(run_cli("roles", "--registry", str(latin1)), 2)


def test_an_absurd_max_tokens_is_refused_before_anything_starts(tmp_path: Path) -> None:
    spec = write(tmp_path / "big.yaml", spec_text(max_tokens=99999999999999999999))
    line = one_error_first(run_cli("run", str(spec), "--out", str(tmp_path / "run")), 2)
    assert "base.max_tokens: 99999999999999999999 is more than" in line
    assert not (tmp_path / "run").exists()  # nothing was started or written
    line = one_error_first(run_cli("bench", "--max-tokens", "5000"), 2)
    assert "--max-tokens: 5000 does not fit the engine's context per slot (4096" in line


# --- faults with the real engine ---------------------------------------------------------------


@pytest.mark.engine
def test_a_run_where_every_request_fails_exits_8_and_keeps_everything(
    engine_ready: None, tmp_path: Path
) -> None:
    # A real failure: long-prefill's 2,000-token prompts do not fit a 256-token slot, so
    # llama-server refuses every request (HTTP 400) and the engine itself stays healthy.
    spec = write(tmp_path / "fail.yaml", spec_text(workload="long-prefill", ctx_per_slot=256))
    out = tmp_path / "run"
    done = run_cli("run", str(spec), "--out", str(out), "--quiet", "--force")
    line = one_error_first(done, 8)
    assert "no trial request succeeded" in line and "http_error: 4" in line, line
    rows = read_jsonl(out / "requests.jsonl").rows
    assert len(rows) == 8 and {r["outcome"] for r in rows} == {"http_error"}
    assert (out / "summary.json").exists() and (out / "report.md").exists()
    assert "report:" in done.stdout  # the verdicts were printed before the error


@pytest.mark.engine
def test_bench_where_every_request_fails_exits_8(engine_ready: None, tmp_path: Path) -> None:
    out = tmp_path / "bench"
    done = run_cli(
        "bench", "--model", listed_model(DEFAULT_MODEL), "--workload", "long-prefill",
        "--flags", "-c 256", "-n", "2", "--warmup", "0", "--max-tokens", "8", "-q",
        "--out", str(out),
    )  # fmt: skip
    line = one_error_first(done, 8)
    assert line.startswith("servelab: error: bench: 2 of 2 trial requests failed"), line
    assert len(read_jsonl(out / "requests.jsonl").rows) == 2


def _wait_for_rows(path: Path, proc: subprocess.Popen[str], timeout_s: float = 120) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end and proc.poll() is None:
        if path.exists() and path.stat().st_size > 0:
            return
        time.sleep(0.02)
    raise AssertionError(f"no row reached {path} while the run was going")


@pytest.mark.engine
def test_requests_jsonl_made_unwritable_mid_run_is_exit_6_and_resume_completes(
    engine_ready: None, tmp_path: Path, immutable: Immutable
) -> None:
    spec = write(tmp_path / "s.yaml", spec_text(requests_per_block=3, warmup=1))
    out = tmp_path / "run"
    requests = out / "requests.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "servelab", "run", str(spec), "--out", str(out), "-q", "--force"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    _wait_for_rows(requests, proc)
    immutable.make(requests)
    stdout, stderr = proc.communicate(timeout=300)
    done = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    line = one_error_first(done, 6)
    assert f"cannot write to {requests}" in line
    kept = read_jsonl(requests).rows
    assert kept, "rows written before the failure are kept"
    assert json.loads((out / "manifest.json").read_text())["status"] == "failed"

    line = one_error_first(run_cli("resume", str(out), "-q", "--force"), 6)  # still immutable
    assert f"cannot open {requests}" in line

    immutable.release(requests)
    logs = sorted(out.glob("engine-*.log"))
    assert logs, "each arm that started has its engine log"
    for log in logs:
        immutable.make(log)
    line = one_error_first(run_cli("resume", str(out), "-q", "--force"), 6)  # engine log
    assert "cannot write the engine log" in line and "engine-" in line, line
    for log in logs:
        immutable.release(log)

    done = run_cli("resume", str(out), "-q", "--force")
    assert done.returncode == 0, done.stderr
    ids = trial_ids(out)
    assert len(ids) == len(set(ids)) == 2 * 2 * 3  # none lost, none twice
