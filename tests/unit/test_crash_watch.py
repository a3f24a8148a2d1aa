"""The engine watch of ``runner.drive``: a request left waiting on a dead engine's connection
ends the block as the engine's crash, after the other requests had their chance to fail and be
recorded. The engine here is a stand-in whose ``check_alive`` reports a crash once told to (the
real llama-server case is ``tests/integration/test_bench_cli.py::test_engine_killed_mid_run``)."""

from __future__ import annotations

import asyncio
import time

import pytest

from servelab.errors import EngineCrashedError
from servelab.records import ClientLoad
from servelab.runner import drive


class Dying:
    """An engine process that exits when ``dead`` is set."""

    def __init__(self) -> None:
        self.dead = False
        self.checks = 0

    def check_alive(self, grace_s: float = 0.0) -> None:
        self.checks += 1
        if self.dead:
            raise EngineCrashedError("llama-server exited with code -9 while requests were running")


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(drive, "CRASH_WATCH_S", 0.01)
    monkeypatch.setattr(drive, "CRASH_SETTLE_S", 0.2)


def _run(engine: Dying, body: object) -> object:
    async def main() -> object:
        loop = asyncio.ensure_future(body)  # type: ignore[arg-type]
        return await drive._CrashWatch(engine).run(loop)  # type: ignore[arg-type]

    return asyncio.run(main())


def test_a_request_hanging_on_a_dead_engine_ends_as_its_crash() -> None:
    engine = Dying()

    async def hangs() -> ClientLoad:
        engine.dead = True  # the engine dies; this request's connection never ends
        await asyncio.sleep(3600)
        raise AssertionError("not reached")

    t0 = time.monotonic()
    with pytest.raises(EngineCrashedError, match="exited with code -9"):
        _run(engine, hangs())
    assert time.monotonic() - t0 < 5  # the settle time, not the request's 300 s timeout


def test_requests_that_fail_on_their_own_keep_their_own_error() -> None:
    engine = Dying()

    async def fails_soon() -> ClientLoad:
        engine.dead = True
        await asyncio.sleep(0.05)  # inside the settle time: the usual path reports it
        raise EngineCrashedError("llama-server exited with code -9; requests recorded so far")

    with pytest.raises(EngineCrashedError, match="requests recorded so far"):
        _run(engine, fails_soon())


def test_a_live_engine_is_only_watched() -> None:
    engine = Dying()

    async def works() -> str:
        await asyncio.sleep(0.1)
        return "load"

    assert _run(engine, works()) == "load"
    assert engine.checks >= 2
