"""Every reader keeps a request's deadline, and a stopped run wakes it, against stalling servers.

The asyncio reader, fresh and keep-alive (``wire``: local engines and remote endpoints) and the
httpx reader in a thread (``threaded``: what an injected transport or a proxy takes, here with
httpx's real transport) are each driven at servers from ``tests/integration/hostile.py`` that
send three tokens and stall, or never answer; every wait here is bounded to within a second of
the deadline.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from servelab.client.clock import MonotonicClock
from servelab.client.session import RequestGuard, StreamSession
from servelab.client.stream import Deadline, HttpRequest, stream_request
from servelab.records import Observation, Outcome
from tests.integration.hostile import HostileServer, hostile_server

BODY = {"model": "x", "messages": [{"role": "user", "content": "hi"}], "stream": True}
PATHS = ["fresh", "keep-alive", "httpx thread"]


def _request(server: HostileServer) -> HttpRequest:
    return HttpRequest(server.url + "/v1/chat/completions", BODY)


def _session(path: str, concurrency: int = 1) -> StreamSession:
    transport = httpx.HTTPTransport() if path == "httpx thread" else None
    return StreamSession(concurrency, path != "fresh", transport)


def _observe(server: HostileServer, path: str, deadline: Deadline) -> tuple[Observation, float]:
    async def go() -> Observation:
        with _session(path) as session:
            return await stream_request(session, _request(server), MonotonicClock(), deadline)

    started = time.monotonic()
    obs = asyncio.run(go())
    return obs, time.monotonic() - started


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("mode", ["stall", "silent"])
def test_a_stalled_request_is_a_timeout_at_its_deadline(mode: str, path: str) -> None:
    with hostile_server(mode) as server:
        obs, took = _observe(server, path, Deadline(total_s=1.0))
    assert obs.outcome is Outcome.TIMEOUT
    assert obs.error == "no complete response within 1 s"
    assert 0.9 < took < 1.8, f"{took:.2f} s for a 1 s deadline"
    if mode == "stall":
        assert obs.text == "one two three"  # what came before the stall is kept


@pytest.mark.parametrize("mode", ["stall", "silent"])
def test_no_byte_for_read_s_is_a_timeout_long_before_the_deadline(mode: str) -> None:
    with hostile_server(mode) as server:
        obs, took = _observe(server, "fresh", Deadline(total_s=30, read_s=0.5))
    assert obs.outcome is Outcome.TIMEOUT and obs.error == "no byte for 0.5 s"
    assert 0.45 < took < 1.2


def test_a_reused_keepalive_connection_keeps_the_deadline_too() -> None:
    with hostile_server("silent", good_posts=1) as server:

        async def go() -> tuple[Observation, Observation]:
            with StreamSession(1, keepalive=True) as session:
                clock, deadline = MonotonicClock(), Deadline(total_s=1.0)
                first = await stream_request(session, _request(server), clock, deadline)
                second = await stream_request(session, _request(server), clock, deadline)
                return first, second

        started = time.monotonic()
        first, second = asyncio.run(go())
        took = time.monotonic() - started
    assert first.outcome is Outcome.OK
    assert second.outcome is Outcome.TIMEOUT and took < 1.8


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("mode", ["stall", "silent"])
def test_cancelling_a_run_wakes_a_blocked_reader_at_once(mode: str, path: str) -> None:
    with hostile_server(mode, good_posts=1) as server:

        async def go() -> float:
            with _session(path, 2) as session:
                clock, deadline = MonotonicClock(), Deadline(total_s=60)
                await stream_request(session, _request(server), clock, deadline)  # reused
                task = asyncio.ensure_future(
                    stream_request(session, _request(server), clock, deadline)
                )
                await asyncio.sleep(0.3)
                task.cancel()
                cancelled = time.monotonic()
                with pytest.raises(asyncio.CancelledError):
                    await task
            return cancelled  # the session has closed: every request has ended

        cancelled = asyncio.run(go())
    assert time.monotonic() - cancelled < 1.0


def test_a_guard_fires_what_is_attached_later_and_nothing_once_released() -> None:
    fired: list[str] = []
    guard = RequestGuard()
    guard.attach(lambda: fired.append("a"))
    guard.expire()
    guard.attach(lambda: fired.append("b"))  # attached after the deadline: woken at once
    assert fired == ["a", "b"] and guard.expired
    late = RequestGuard()
    late.attach(lambda: fired.append("c"))
    late.release()
    late.expire()
    assert fired == ["a", "b"] and not late.expired
