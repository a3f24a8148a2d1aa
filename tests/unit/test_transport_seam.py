"""The client's transport seam: a plain function in place of the network (issue 11).

A ``StreamSession`` given a transport sends every request through it and reads the answer with
the same code as a real socket's (httpx reader, SSE parser, assembler). What a dead server
causes arrives as httpx's own errors, translated to outcomes in the one place they always are
(``client/stream.py``). Timestamps come from the injected fake clock.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from servelab.client.clock import FakeClock
from servelab.client.session import StreamSession
from servelab.client.stream import HttpRequest, observe_blocking
from servelab.client.transport import (
    Answer,
    Handler,
    Refused,
    Reset,
    SentRequest,
    function_transport,
)
from servelab.records import Observation, Outcome

SSE = (Path(__file__).parents[1] / "fixtures" / "streams" / "llamacpp_chat_length.sse").read_bytes()
REQUEST = HttpRequest(url="http://seam.invalid/v1/chat/completions", payload={"messages": []})


def events(clock: FakeClock, gap_s: float, cut: int | None = None) -> Iterator[bytes]:
    for i, event in enumerate(e + b"\n\n" for e in SSE.split(b"\n\n") if e.strip()):
        if i == cut:
            raise Reset("the server died")
        clock.advance(gap_s)
        yield event


def observe(handler: Handler, clock: FakeClock, keepalive: bool = False) -> Observation:
    with StreamSession(1, keepalive, function_transport(handler)) as session:
        assert session.threaded_for(REQUEST.url)  # the injected transport sees every request
        return observe_blocking(session, REQUEST, clock)


def test_a_replayed_stream_is_observed_like_a_real_one() -> None:
    clock = FakeClock()
    sent: list[SentRequest] = []

    def handler(request: SentRequest) -> Answer:
        sent.append(request)
        return Answer(200, events(clock, 0.01))

    obs = observe(handler, clock)
    assert obs.outcome is Outcome.OK and obs.finish_reason == "length"
    assert obs.first_byte_s == 0.01 and obs.end_s == 0.16  # 16 events, 10 ms apart
    assert obs.usage is not None and obs.usage.completion_tokens == 12
    assert sent[0].path == "/v1/chat/completions" and json.loads(sent[0].body) == {"messages": []}


def test_a_refused_connection_is_a_connection_error() -> None:
    def handler(request: SentRequest) -> Answer:
        raise Refused("connection refused")

    obs = observe(handler, FakeClock(), keepalive=True)
    assert obs.outcome is Outcome.CONNECTION_ERROR and "ConnectError" in (obs.error or "")


def test_a_reset_mid_stream_is_a_truncated_stream() -> None:
    clock = FakeClock()
    obs = observe(lambda request: Answer(200, events(clock, 0.01, cut=5)), clock)
    assert obs.outcome is Outcome.TRUNCATED_STREAM and "ReadError" in (obs.error or "")
    assert obs.text  # what arrived before the reset is kept


def test_an_error_status_is_an_http_error() -> None:
    obs = observe(lambda request: Answer(503, [b'{"error": "busy"}']), FakeClock())
    assert obs.outcome is Outcome.HTTP_ERROR and obs.http_status == 503
    assert obs.error == 'HTTP 503: {"error": "busy"}'
