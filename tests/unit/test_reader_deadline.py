"""Both readers keep a request's deadline, and a stopped run wakes them, against stalling servers.

The socket+h11 reader (``plainhttp``, the managed engine's path) and the keep-alive httpx path
are each driven at servers from ``tests/integration/hostile.py`` that send three tokens and
stall, or never answer; every wait here is bounded to within a second of the deadline.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from servelab.client.clock import MonotonicClock
from servelab.client.plainhttp import PlainHttpError, PlainHttpStream
from servelab.client.session import RequestGuard, StreamSession
from servelab.client.stream import Deadline, HttpRequest, observe_blocking, stream_request
from servelab.records import Observation, Outcome
from tests.integration.hostile import HostileServer, hostile_server

BODY = {"model": "x", "messages": [{"role": "user", "content": "hi"}], "stream": True}
PATHS = {"socket": False, "keep-alive httpx": True}


def _request(server: HostileServer) -> HttpRequest:
    return HttpRequest(server.url + "/v1/chat/completions", BODY)


def _plain(server: HostileServer, total_s: float) -> PlainHttpStream:
    start = time.monotonic()
    return PlainHttpStream(
        server.url + "/v1/chat/completions", b"{}", {}, connect_s=10, read_s=120,
        remaining_s=lambda: total_s - (time.monotonic() - start),
    )  # fmt: skip


def test_socket_reader_keeps_the_deadline_after_three_tokens() -> None:
    with hostile_server("stall") as server:
        stream = _plain(server, 1.0)
        started = time.monotonic()
        assert stream.open() == 200
        with pytest.raises(PlainHttpError) as info:
            for _ in stream.chunks():
                pass
        took = time.monotonic() - started
        stream.close()
    assert info.value.kind == "deadline"
    assert 0.9 < took < 1.5


def test_socket_reader_keeps_the_deadline_when_no_answer_comes() -> None:
    with hostile_server("silent") as server:
        stream = _plain(server, 1.0)
        started = time.monotonic()
        with pytest.raises(PlainHttpError) as info:
            stream.open()
        took = time.monotonic() - started
        stream.close()
    assert info.value.kind == "deadline"
    assert 0.9 < took < 1.5


def _observe(server: HostileServer, keepalive: bool, total_s: float) -> tuple[Observation, float]:
    async def go() -> Observation:
        with StreamSession(1, keepalive) as session:
            deadline = Deadline(total_s=total_s)
            return await stream_request(session, _request(server), MonotonicClock(), deadline)

    started = time.monotonic()
    obs = asyncio.run(go())
    return obs, time.monotonic() - started


@pytest.mark.parametrize("keepalive", PATHS.values(), ids=PATHS.keys())
@pytest.mark.parametrize("mode", ["stall", "silent"])
def test_a_stalled_request_is_a_timeout_at_its_deadline(mode: str, keepalive: bool) -> None:
    with hostile_server(mode) as server:
        obs, took = _observe(server, keepalive, 1.0)
    assert obs.outcome is Outcome.TIMEOUT
    assert obs.error == "no complete response within 1 s"
    assert 0.9 < took < 1.8, f"{took:.2f} s for a 1 s deadline"
    if mode == "stall":
        assert obs.text == "one two three"  # what came before the stall is kept


@pytest.mark.parametrize("mode", ["stall", "silent"])
def test_socket_reader_keeps_the_deadline_without_a_timer(mode: str) -> None:
    with hostile_server(mode) as server, StreamSession(1, keepalive=False) as session:
        started = time.monotonic()
        obs = observe_blocking(session, _request(server), MonotonicClock(), Deadline(total_s=1))
        took = time.monotonic() - started
    assert obs.outcome is Outcome.TIMEOUT and 0.9 < took < 1.5


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


@pytest.mark.parametrize("keepalive", PATHS.values(), ids=PATHS.keys())
@pytest.mark.parametrize("mode", ["stall", "silent"])
def test_cancelling_a_run_wakes_a_blocked_reader_at_once(mode: str, keepalive: bool) -> None:
    with hostile_server(mode, good_posts=1) as server:

        async def go() -> float:
            with StreamSession(2, keepalive) as session:
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
            return cancelled  # the session has closed: every reader thread has ended

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
