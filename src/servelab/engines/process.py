"""Engine processes: start from an argument list, stop the whole process group, leave no orphan.

Owns child processes. Every engine starts in its own session (so one signal reaches its whole
group), with Linux's parent-death signal set so it dies even if servelab is killed with SIGKILL,
and is registered so an interpreter exit or SIGTERM/SIGINT to servelab stops it first. Never
uses a shell.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import BinaryIO

from servelab.errors import EngineStartError, EnvironmentProblem, StoreError

TERM_GRACE_S = 5.0
_live: set[ManagedProcess] = set()
_lock = threading.Lock()


def _set_parent_death_signal() -> None:
    """Runs in the child before exec: die with SIGTERM when the parent dies (Linux only)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port the OS says is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise EnvironmentProblem(
                f"port {port} on {host} is already in use ({exc.strerror}); "
                "choose another with --port or leave it out to pick a free one"
            ) from exc


MASKED_PORT = "<free port>"  # what a recorded argv holds instead of the port


def with_port(argv: Sequence[str], port: str) -> list[str]:
    """``argv`` with the value after ``--port`` replaced by ``port`` (``MASKED_PORT`` in what is
    recorded, a real port when a recorded command is run again)."""
    out = list(argv)
    if "--port" in out:
        out[out.index("--port") + 1] = port
    return out


class ManagedProcess:
    """One child process with its output going to ``log_path``."""

    def __init__(
        self, argv: Sequence[str], log_path: Path, env: dict[str, str] | None = None
    ) -> None:
        self.argv = list(argv)
        self.log_path = log_path
        self.env = env
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self._open_log() as log:
            self._proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(self.env or {})},
                start_new_session=True,
                preexec_fn=_set_parent_death_signal,
            )
        _register(self)

    def _open_log(self) -> BinaryIO:
        """The engine log, opened for appending with a start line; one line if it cannot be."""
        try:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            log = self.log_path.open("ab")
            log.write(f"# servelab: starting {self.argv!r}\n".encode())
            log.flush()
        except OSError as exc:
            raise StoreError(
                f"cannot write the engine log {self.log_path} ({exc.strerror or exc}); "
                "free space or fix its permissions, then run again"
            ) from exc
        return log

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def poll(self, wait_s: float = 0.0) -> int | None:
        """The exit code if the process has ended (waiting up to ``wait_s`` for it), else None."""
        if self._proc is None:
            return None
        if wait_s <= 0:
            return self._proc.poll()
        try:
            return self._proc.wait(wait_s)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, grace_s: float = TERM_GRACE_S) -> int | None:
        """SIGTERM the group, wait up to ``grace_s``, then SIGKILL it. Returns the exit code."""
        proc = self._proc
        if proc is None:
            return None
        try:
            if proc.poll() is None:
                _signal_group(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(grace_s)
                except subprocess.TimeoutExpired:
                    _signal_group(proc.pid, signal.SIGKILL)
                    proc.wait(grace_s)
            else:
                _signal_group(proc.pid, signal.SIGKILL)  # stray children of a dead leader
            return proc.returncode
        finally:
            _unregister(self)

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(text.rstrip().splitlines()[-lines:])


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _register(proc: ManagedProcess) -> None:
    with _lock:
        _live.add(proc)
    _install_handlers()


def _unregister(proc: ManagedProcess) -> None:
    with _lock:
        _live.discard(proc)


def stop_all() -> None:
    """Stop every live child; called at exit and on SIGTERM."""
    with _lock:
        procs = list(_live)
    for proc in procs:
        proc.stop(grace_s=2.0)


_handlers_installed = False


def _install_handlers() -> None:
    global _handlers_installed
    if _handlers_installed or threading.current_thread() is not threading.main_thread():
        return
    _handlers_installed = True
    atexit.register(stop_all)
    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum: int, frame: FrameType | None) -> None:
        stop_all()
        if callable(previous):
            previous(signum, frame)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)


def wait_until(predicate: Callable[[], bool], timeout_s: float, interval_s: float = 0.1) -> bool:
    """Poll ``predicate`` until true or ``timeout_s`` passes (start-up only, never measuring)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return bool(predicate())


def wait_process_healthy(
    proc: ManagedProcess | None,
    health_url: str,
    timeout_s: float,
    *,
    who: str,
    exit_message: Callable[[int, str], str],
    advice: str,
    interval_s: float = 0.2,
) -> None:
    """Wait until ``health_url`` answers 200. A process that exits first raises its
    ``exit_message``; one still not healthy after ``timeout_s`` is stopped, and the error
    names its log and ``advice``."""
    from servelab.client import admin  # the engines' HTTP helpers; process.py stays light

    if proc is None:
        raise EngineStartError(f"{who} was not launched")

    def ready() -> bool:
        return proc.poll() is not None or admin.health_status(health_url) == 200

    ok = wait_until(ready, timeout_s, interval_s)
    code = proc.poll()
    if code is not None:
        raise EngineStartError(exit_message(code, "during start-up"))
    if not ok:
        proc.stop()
        raise EngineStartError(
            f"{who} did not become healthy within {timeout_s:g} s; it was stopped. "
            f"Log: {proc.log_path}; {advice}"
        )
