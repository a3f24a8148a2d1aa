"""Readiness of a promoted configuration, on real machine state: a socket really bound to the
port, the machine lock really held with fcntl, a real process named like an engine, real files
with their sha256. Nothing under test is faked; the cache directory (where the machine lock
lives) is a temporary one."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from servelab.cli.main import main
from servelab.errors import UsageError
from servelab.runner.preflight import MachineLock
from servelab.runner.promote import Evidence, PromotedEngine, PromotionRecord
from servelab.runner.readiness import (
    GpuMemory,
    MemoryNeed,
    ReadyFinding,
    check_readiness,
    gpu_finding,
    listen_address,
    parse_gpu_memory,
    role_readiness,
    visible_gpus,
)

GIB = 2**30


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SERVELAB_CACHE_DIR", str(tmp_path / "cache"))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _files(tmp_path: Path) -> tuple[Path, Path]:
    binary, model = tmp_path / "bin" / "llama-server", tmp_path / "model.gguf"
    binary.parent.mkdir()
    binary.write_bytes(b"\x7fELF not really an engine")
    model.write_bytes(b"GGUF" + bytes(range(256)) * 8)
    return binary, model


def _record(tmp_path: Path, port: int, *, kind: str = "llamacpp") -> PromotionRecord:
    binary, model = _files(tmp_path)
    argv = (str(binary), "--model", str(model), "--host", "127.0.0.1", "--port", str(port),
            "--ctx-size", "512")  # fmt: skip
    return PromotionRecord(
        role="fast", arm="t1", promoted_utc="2026-12-01T05:00:00Z", run_id="run",
        run_dir=str(tmp_path / "run"), workload=None,
        engine=PromotedEngine(kind=kind, binary=str(binary), binary_sha256=_sha(binary),
                              model_path=str(model), model_sha256=_sha(model), argv=argv),
        effective=None, host=None, hardware=None, evidence=Evidence(),
    )  # fmt: skip


def _finding(findings: tuple[ReadyFinding, ...], kind: str) -> ReadyFinding:
    (found,) = [f for f in findings if f.kind == kind]
    return found


def _lock(tmp_path: Path) -> MachineLock:
    return MachineLock(path=tmp_path / "machine.lock")


@pytest.fixture
def listening() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    try:
        yield sock
    finally:
        sock.close()


def test_a_port_in_use_blocks_and_names_who_listens(
    tmp_path: Path, listening: socket.socket
) -> None:
    port = int(listening.getsockname()[1])
    record = _record(tmp_path, port)
    found = _finding(check_readiness(record, lock=_lock(tmp_path)).findings, "port")
    assert found.blocking and f"port {port} on 127.0.0.1 is in use" in found.detail
    assert f"pid {os.getpid()}" in found.detail and "--port" in found.advice
    listening.close()
    freed = _finding(check_readiness(record, lock=_lock(tmp_path)).findings, "port")
    assert not freed.blocking and freed.detail == f"port {port} on 127.0.0.1 is free"


def test_a_held_machine_lock_blocks_and_names_the_run_holding_it(tmp_path: Path) -> None:
    record = _record(tmp_path, 1)
    path = tmp_path / "machine.lock"
    with path.open("a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write(json.dumps({"pid": 4242, "run_dir": "/runs/sweep-1"}))
        held.flush()
        found = _finding(check_readiness(record, lock=_lock(tmp_path)).findings, "machine_lock")
        assert found.blocking and "pid 4242, run /runs/sweep-1" in found.detail
        fcntl.flock(held, fcntl.LOCK_UN)
    free = check_readiness(record, lock=_lock(tmp_path))
    assert not _finding(free.findings, "machine_lock").blocking
    with path.open("a+") as again:  # released at once without hold=True
        fcntl.flock(again, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(again, fcntl.LOCK_UN)


def test_hold_keeps_the_machine_lock_until_released(tmp_path: Path) -> None:
    lock = _lock(tmp_path)
    check_readiness(_record(tmp_path, 1), lock=lock, hold=True, holder=Path("/runs/verify"))
    try:
        with lock.path.open("a+") as other, pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert json.loads(lock.path.read_text())["run_dir"] == "/runs/verify"
    finally:
        lock.release()


def test_a_resident_engine_process_blocks_naming_pid_and_command(tmp_path: Path) -> None:
    fake = tmp_path / "engines" / "llama-server"
    fake.parent.mkdir()
    shutil.copy(shutil.which("sleep") or "sleep", fake)  # a real process named as an engine
    record = _record(tmp_path, 1)
    proc = subprocess.Popen([str(fake), "30"])
    try:
        deadline = time.monotonic() + 5
        while psutil.Process(proc.pid).name() != "llama-server" and time.monotonic() < deadline:
            time.sleep(0.02)
        found = _finding(check_readiness(record, lock=_lock(tmp_path)).findings,
                         "resident_engine")  # fmt: skip
        assert found.blocking and f"llama-server (pid {proc.pid}): {fake} 30" in found.detail
    finally:
        proc.kill()
        proc.wait(5)
    after = _finding(check_readiness(record, lock=_lock(tmp_path)).findings, "resident_engine")
    assert f"pid {proc.pid}" not in after.detail


def test_without_a_gpu_the_memory_check_is_skipped_not_failed(tmp_path: Path) -> None:
    found = _finding(check_readiness(_record(tmp_path, 1), lock=_lock(tmp_path)).findings,
                     "gpu_memory")  # fmt: skip
    if shutil.which("nvidia-smi") is None:
        assert not found.blocking and found.detail == "no GPU (no nvidia-smi answer): skipped"
    else:  # on a GPU machine the same check reads nvidia-smi
        assert "GPU " in found.detail


SMI = """0, NVIDIA H200, 143771, 143252
1, NVIDIA H200, 143771, 20480
garbage line
"""


def test_gpu_memory_is_compared_with_the_need_over_the_gpus_the_engine_sees() -> None:
    gpus = parse_gpu_memory(SMI)
    assert gpus == [GpuMemory("0", "NVIDIA H200", 143771.0, 143252.0),
                    GpuMemory("1", "NVIDIA H200", 143771.0, 20480.0)]  # fmt: skip
    need = MemoryNeed(150 * GIB, "weights 140.00 GiB + KV 10.00 GiB")
    both = gpu_finding(visible_gpus(gpus, {}), need)
    assert not both.blocking and "needs about 150.00 GiB" in both.detail
    second = gpu_finding(visible_gpus(gpus, {"CUDA_VISIBLE_DEVICES": "1"}), need)
    assert second.blocking and "GPU 1 NVIDIA H200: 20.00 GiB free of 140.40 GiB" in second.detail
    assert "needs about 150.00 GiB (weights 140.00 GiB + KV 10.00 GiB)" in second.detail
    hidden = gpu_finding(visible_gpus(gpus, {"CUDA_VISIBLE_DEVICES": ""}), need)
    assert not hidden.blocking and "skipped" in hidden.detail


def test_the_promoted_files_must_be_there_with_their_sha256(tmp_path: Path) -> None:
    record = _record(tmp_path, 1)
    ok = check_readiness(record, lock=_lock(tmp_path)).findings
    assert "as promoted" in _finding(ok, "model_file").detail
    assert not _finding(ok, "engine_binary").blocking
    Path(record.engine.model_path or "").write_bytes(b"GGUF another model")
    changed = _finding(check_readiness(record, lock=_lock(tmp_path)).findings, "model_file")
    assert changed.blocking and "is not the promoted one" in changed.detail
    Path(record.engine.binary or "").unlink()
    gone = _finding(check_readiness(record, lock=_lock(tmp_path)).findings, "engine_binary")
    assert gone.blocking and "is missing" in gone.detail


def test_an_endpoint_role_checks_only_the_lock(tmp_path: Path) -> None:
    found = check_readiness(_record(tmp_path, 1, kind="openai"), lock=_lock(tmp_path))
    assert [f.kind for f in found.findings] == ["machine_lock", "launch"] and found.ready


def test_listen_address_reads_the_recorded_command_line() -> None:
    assert listen_address(["srv", "--host", "0.0.0.0", "--port", "8080"]) == ("0.0.0.0", 8080)
    assert listen_address(["srv", "--port", "<free port>"]) is None
    assert listen_address(["srv", "--port"]) is None


def _registry(tmp_path: Path, record: PromotionRecord) -> Path:
    registry = tmp_path / "roles.yaml"
    registry.write_text("roles:\n  fast: {rules: ['decode_tps >= 1']}\n  deep: {}\n")
    (tmp_path / "promoted").mkdir()
    (tmp_path / "promoted" / "fast.json").write_text(record.model_dump_json())
    return registry


def test_ready_cli_exits_3_with_one_line_per_blocking_finding(
    tmp_path: Path, listening: socket.socket, capsys: pytest.CaptureFixture[str]
) -> None:
    port = int(listening.getsockname()[1])
    registry = _registry(tmp_path, _record(tmp_path, port))
    assert main(["ready", "fast", "--registry", str(registry)]) == 3
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert f"servelab: not ready: port: port {port} on 127.0.0.1 is in use" in lines[0]
    assert lines[-1].startswith("servelab: error: role 'fast' is not ready: ")
    assert sum(line.startswith("servelab: error:") for line in lines) == 1
    assert "BLOCKING" in captured.out and "readiness of fast" in captured.out
    assert main(["ready", "fast", "--registry", str(registry), "--json"]) == 3
    shown = json.loads(capsys.readouterr().out)
    assert shown["ready"] is False and {"kind": "port", "blocking": True}.items() <= next(
        f for f in shown["findings"] if f["kind"] == "port").items()  # fmt: skip


def test_ready_cli_exits_0_when_nothing_blocks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = _registry(tmp_path, _record(tmp_path, 1, kind="openai"))
    assert main(["ready", "fast", "--registry", str(registry)]) == 0
    assert "role fast is ready to start" in capsys.readouterr().out


@pytest.mark.parametrize(("role", "needle"), [
    ("nosuch", "no role 'nosuch' in"), ("deep", "has no promoted configuration yet"),
])  # fmt: skip
def test_an_unknown_or_unpromoted_role_is_one_line_exit_2(
    tmp_path: Path, role: str, needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = _registry(tmp_path, _record(tmp_path, 1))
    with pytest.raises(UsageError):
        role_readiness(registry, role)
    assert main(["ready", role, "--registry", str(registry)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("servelab: error: ") and needle in err[0]
