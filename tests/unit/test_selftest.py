"""``servelab selftest`` end to end (the real client against the mock server in its own
process), the ceiling rules on known steps, and the ``client_near_ceiling`` warning on
synthetic client loads (issue 13)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pytest

from servelab.analysis.run_warnings import (
    WARNING_KINDS,
    client_load_warnings,
)
from servelab.cli.main import main
from servelab.records import ClientLoad
from servelab.runner.selftest import error_bound, error_stats
from servelab.store.metrics_files import BlockClientLoad
from servelab.store.selftest_file import (
    Ceiling,
    ErrorStats,
    SavedCeiling,
    Step,
    read_selftest,
    selftest_path,
)


def _finite(spread: dict[str, Any]) -> bool:
    return all(isinstance(v, float) and math.isfinite(v) for v in spread.values())


def test_selftest_quick_json_end_to_end(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SERVELAB_CACHE_DIR", str(tmp_path))
    assert main(["selftest", "--quick", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["schema_version"] == 1 and result["host"]["cpu_count"] >= 1
    assert set(result["profiles"]) == {"slow", "bursty", "fast"}
    for name, p in result["profiles"].items():
        assert p["matched"] == p["requests"] > 0, name  # every chunk matched a server write
        assert p["exact_send_stamps"] == p["requests"], name  # SendStamps saw each send
    errors = result["timing_error"]
    for key in ("ttft_ms", "itl_ms", "arrival_ms"):
        assert _finite(errors[key]), key
    assert errors["itl_ms"]["p99"] < 50 and errors["ttft_ms"]["p99"] < 50
    assert errors["ttft_ms"]["p50"] > -0.05  # a chunk is never seen before it was written
    ceiling, steps = result["ceiling"], result["steps"]
    assert set(ceiling) == {"tokens_per_s", "streams", "cpu_ms_per_token", "limited_by"}
    assert steps and steps[0]["streams"] == 1 and steps[0]["tokens"] > 0
    assert steps[0]["cpu_ms_per_token"] > 0 and steps[0]["loop_lag_p99_ms"] is not None
    assert result["previous"] is None
    saved = read_selftest()  # saved in the cache, so the next run and reports can compare
    assert saved is not None and selftest_path().is_relative_to(tmp_path)
    assert saved["ceiling"] == ceiling and "previous" not in saved


def _step(
    streams: int, kept_up: bool, rate: float, behind: bool = False, p99: float | None = None
) -> Step:
    return Step(
        streams=streams, requests=streams, tokens=100, wall_s=1.0, tokens_per_s=rate,
        cpu_cores=0.1, cpu_ms_per_token=0.1, loop_lag_p99_ms=0.5,
        arrival_ms=ErrorStats(p99=p99), itl_ms=ErrorStats(), server_lag_ms=ErrorStats(),
        kept_up=kept_up, why_not=None if kept_up else "p99 arrival error 3.00 ms > 1.00 ms",
        server_behind=behind,
    )  # fmt: skip


def test_the_ceiling_is_the_last_step_that_kept_up() -> None:
    c = Ceiling.of([_step(1, True, 2000), _step(4, True, 7900), _step(16, False, 9000)])
    assert (c.tokens_per_s, c.streams) == (7900, 4)
    assert c.limited_by.startswith("16 streams: p99 arrival error")
    none = Ceiling.of([_step(1, False, 100)])
    assert none.tokens_per_s is None and none.streams is None
    behind = Ceiling.of([_step(1, True, 2000), _step(4, True, 5000, behind=True)])
    assert behind.streams == 4 and "mock server fell behind" in behind.limited_by


def test_the_error_bound_rises_to_twice_a_noisy_machines_floor() -> None:
    assert error_bound(1.0, _step(1, True, 2000, p99=0.2)) == 1.0
    assert error_bound(1.0, _step(1, True, 2000, p99=3.0)) == 6.0
    spread = error_stats([1e6, 2e6, 3e6])
    assert (spread.p50, spread.p99, spread.max) == (2.0, pytest.approx(2.98), 3.0)
    assert error_stats([]) == ErrorStats()


def test_a_saved_ceiling_reads_back_or_is_none() -> None:
    good = {"schema_version": 1, "created_unix_s": 5.0, "host": {"cpu_count": 2},
            "ceiling": {"tokens_per_s": 9000.0, "streams": 16}}  # fmt: skip
    assert SavedCeiling.from_result(good) == SavedCeiling(9000.0, 16, 5.0, 2)
    assert SavedCeiling.from_result({**good, "ceiling": {"tokens_per_s": None}}) is None
    assert SavedCeiling.from_result({**good, "schema_version": 9}) is None
    assert SavedCeiling.from_result(None) is None


# ------------------------------------------------------------------------------ the warning


def _load(cpu_s: float, lag_s: float | None = 0.001, wall_s: float = 10.0) -> ClientLoad:
    return ClientLoad(wall_s, cpu_s * 0.8, cpu_s * 0.2, lag_s, lag_s, streams_max=4)


def _rows(arm: str, block: int, n: int, n_out: int) -> list[dict[str, Any]]:
    return [{"arm": arm, "block": block, "phase": "trial", "outcome": "ok", "n_out": n_out,
             "concurrency": 4, "seq": i} for i in range(n)]  # fmt: skip


def test_a_busy_client_warns_once_per_arm_with_its_figures() -> None:
    loads = [BlockClientLoad("a", 0, "c4", _load(9.0)), BlockClientLoad("a", 1, "c4", _load(2.0)),
             BlockClientLoad("b", 0, "c4", _load(1.0))]  # fmt: skip
    found = client_load_warnings(loads, _rows("a", 0, 10, 100) + _rows("b", 0, 10, 100))
    assert [(w.kind, w.arm) for w in found] == [("client_near_ceiling", "a")]
    assert "in 1 of 2 blocks" in found[0].detail and "0.90 of a core" in found[0].detail
    assert "servelab selftest" in found[0].advice and "--concurrency" in found[0].advice
    assert "client_near_ceiling" in WARNING_KINDS


def test_loop_lag_or_a_rate_near_the_selftest_ceiling_warn_too() -> None:
    lagged = [BlockClientLoad("a", 0, "c4", _load(1.0, lag_s=0.02))]
    assert "lag p99 up to 20.0 ms" in client_load_warnings(lagged, [])[0].detail
    calm = [BlockClientLoad("a", 0, "c4", _load(1.0))]
    rows = _rows("a", 0, 80, 1000)  # 80,000 tokens in 10 s: 8,000 tok/s
    assert client_load_warnings(calm, rows, ceiling_tokens_per_s=20_000.0) == []
    near = client_load_warnings(calm, rows, ceiling_tokens_per_s=10_000.0)
    assert "80 % of this machine's selftest ceiling (10,000 tok/s)" in near[0].detail
    other_level = [BlockClientLoad("a", 0, "c8", _load(1.0))]  # rows are at c4: rate 0
    assert client_load_warnings(other_level, rows, ceiling_tokens_per_s=10_000.0) == []
    assert client_load_warnings([], rows, ceiling_tokens_per_s=1.0) == []
    blip = [BlockClientLoad("a", 0, "c4", _load(0.009, wall_s=0.01))]  # a replayed block
    assert client_load_warnings(blip, rows, ceiling_tokens_per_s=1.0) == []


def test_the_report_reads_the_runs_client_files_and_the_ceiling_the_run_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from servelab.report.build import client_warnings
    from servelab.runner.host import host_facts
    from servelab.store import Manifest
    from servelab.store.metrics_files import write_client_load
    from servelab.store.rundir import RunDir
    from servelab.store.selftest_file import selftest_path, write_selftest

    def manifest() -> Manifest:  # what a run records at its start
        return Manifest(kind="bench", host=host_facts())

    monkeypatch.setenv("SERVELAB_CACHE_DIR", str(tmp_path / "cache"))
    run = RunDir(tmp_path / "run")
    write_client_load(run, "a", 0, _load(1.0), "c4")
    rows = _rows("a", 0, 80, 1000)
    calm = manifest()
    assert calm.host is not None and calm.host.client_ceiling is None  # no selftest saved
    assert client_warnings(run, calm, rows) == []
    write_selftest({"schema_version": 1, "host": {"cpu_count": os.cpu_count()},
                    "ceiling": {"tokens_per_s": 10_000.0, "streams": 16}})  # fmt: skip
    recorded = manifest()
    assert recorded.host is not None and recorded.host.client_ceiling is not None
    assert recorded.host.client_ceiling.tokens_per_s == 10_000.0
    assert [w.kind for w in client_warnings(run, recorded, rows)] == ["client_near_ceiling"]
    selftest_path().unlink()  # the report needs the run's record only, not the cache
    assert [w.kind for w in client_warnings(run, recorded, rows)] == ["client_near_ceiling"]
    assert client_warnings(run, calm, rows) == []  # nor does a later selftest change a run
    write_selftest({"schema_version": 1, "host": {"cpu_count": 4096},  # another machine's
                    "ceiling": {"tokens_per_s": 10_000.0, "streams": 16}})  # fmt: skip
    other = manifest()
    assert other.host is not None and other.host.client_ceiling is None


def test_a_bound_that_is_not_positive_is_one_usage_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["selftest", "--max-error-ms", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["servelab: error: --max-error-ms and --max-cpu must be positive; "
                   "e.g. --max-error-ms 1"]  # fmt: skip


def test_a_mock_server_that_cannot_start_is_one_engine_error_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import functools
    import socket

    import servelab.runner.selftest as selftest_module
    from servelab.engines.mock_server import MockServerProcess

    monkeypatch.setenv("SERVELAB_CACHE_DIR", str(tmp_path))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        monkeypatch.setattr(selftest_module, "MockServerProcess",
                            functools.partial(MockServerProcess, port=port))  # fmt: skip
        assert main(["selftest", "--quick", "--no-save"]) == 5
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "mock server did not start" in err[0]


def test_a_run_holding_the_machine_stops_the_selftest_first(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from servelab.runner.preflight import MachineLock

    monkeypatch.setenv("SERVELAB_CACHE_DIR", str(tmp_path))
    lock = MachineLock()
    assert lock.acquire(tmp_path / "a-run") is None
    try:
        assert main(["selftest", "--quick", "--no-save"]) == 3
    finally:
        lock.release()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "a servelab run holds this machine" in err[0]
