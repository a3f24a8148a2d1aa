"""The asyncio reader at the edge: a scripted loopback server, plain or TLS (issue 13).

Each test starts a small server in a thread of the test process that answers each request with
bytes the test chose (a recorded llama.cpp stream, a cut, an error, a close) and counts the
connections it saw, so keep-alive reuse, the resend of a request whose kept-alive connection
was closed, TLS and many streams at once are checked against real sockets.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from servelab.client import session as session_module
from servelab.client.clock import FakeClock, MonotonicClock
from servelab.client.reading import StreamState
from servelab.client.session import DECODE_SLICE, StreamSession
from servelab.client.stream import Deadline, HttpRequest, stream_request
from servelab.records import Observation, Outcome
from tests.integration.hostile import _read_request

FIXTURES = Path(__file__).parents[1] / "fixtures"
SSE = (FIXTURES / "streams" / "llamacpp_chat_length.sse").read_bytes()
CERT, KEY = FIXTURES / "tls" / "localhost-cert.pem", FIXTURES / "tls" / "localhost-key.pem"
HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
BODY = {"model": "x", "messages": [{"role": "user", "content": "hi"}], "stream": True}


def chunked(body: bytes, piece: int = 300) -> bytes:
    out = b""
    for i in range(0, len(body), piece):
        part = body[i : i + piece]
        out += f"{len(part):x}\r\n".encode() + part + b"\r\n"
    return out + b"0\r\n\r\n"


STREAM = HEAD + chunked(SSE)
Answer = Callable[[int, int], bytes | None]  # (connection no., request no. on it) -> reply


@dataclass
class Server:
    answer: Answer
    split: int = 1 << 16
    tls: bool = False
    close_after: bool = False  # close each connection after its first reply
    connections: int = 0
    heads: list[bytes] = field(default_factory=list)

    def start(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=512)
        self.url = f"{'https' if self.tls else 'http'}://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(CERT, KEY)
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn, self.connections, context)).start()

    def _serve(self, conn: socket.socket, number: int, context: ssl.SSLContext) -> None:
        try:
            if self.tls:
                conn = context.wrap_socket(conn, server_side=True)
            for request in range(1_000):
                method, _ = _read_request(conn)
                reply = self.answer(number, request) if method else None
                if reply is None:
                    return
                for i in range(0, len(reply), self.split):
                    conn.sendall(reply[i : i + self.split])
                if self.close_after:
                    return
        except OSError:
            return
        finally:
            conn.close()


@contextmanager
def serving(
    answer: Answer, split: int = 1 << 16, tls: bool = False, close_after: bool = False
) -> Iterator[Server]:
    server = Server(answer, split, tls, close_after)
    server.start()
    try:
        yield server
    finally:
        server.listener.close()


def observe(
    url: str, n: int = 1, keepalive: bool = False, parallel: bool = False, **session: object
) -> list[Observation]:
    async def go() -> list[Observation]:
        with StreamSession(n, keepalive, **session) as s:  # type: ignore[arg-type]

            def one() -> asyncio.Future[Observation]:
                request = HttpRequest(url + "/v1/chat/completions", BODY)
                return asyncio.ensure_future(
                    stream_request(s, request, MonotonicClock(), Deadline(total_s=10))
                )

            if parallel:
                return list(await asyncio.gather(*(one() for _ in range(n))))
            return [await one() for _ in range(n)]

    return asyncio.run(go())


def _check_ok(obs: Observation) -> None:
    assert obs.outcome is Outcome.OK, obs.error
    assert obs.finish_reason == "length" and obs.usage is not None
    assert obs.usage.completion_tokens == 12 and len(obs.chunk_t_s) == 12


@pytest.mark.parametrize("split", [1, 7, 4096])
def test_a_stream_arrives_whole_however_it_is_split(split: int) -> None:
    with serving(lambda c, r: STREAM if r == 0 else None, split) as server:
        (obs,) = observe(server.url)
    _check_ok(obs)
    assert obs.first_byte_s is not None and obs.chunk_t_s[0] >= obs.first_byte_s
    assert list(obs.chunk_t_s) == sorted(obs.chunk_t_s)


def test_a_cut_mid_body_is_a_truncated_stream_that_keeps_what_came() -> None:
    with serving(lambda c, r: STREAM[:1500], close_after=True) as server:
        (obs,) = observe(server.url)
    assert obs.outcome is Outcome.TRUNCATED_STREAM and obs.text
    assert "cut or malformed" in (obs.error or "")


def test_an_error_status_keeps_only_the_head_of_a_huge_body() -> None:
    body = b'{"error":{"message":"bad"}}' + b" " * 10_000_000
    response = b"HTTP/1.1 400 Bad Request\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    with serving(lambda c, r: response if r == 0 else None) as server:
        (obs,) = observe(server.url)
    assert obs.outcome is Outcome.HTTP_ERROR and obs.http_status == 400
    assert obs.error == 'HTTP 400: {"error":{"message":"bad"}}'


def test_nothing_listening_and_a_bad_scheme_are_connection_errors() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        (refused,) = observe(f"http://127.0.0.1:{s.getsockname()[1]}")
    (ftp,) = observe("ftp://127.0.0.1:1")
    assert refused.outcome is Outcome.CONNECTION_ERROR and "cannot connect" in (refused.error or "")
    assert ftp.outcome is Outcome.CONNECTION_ERROR and "https://" in (ftp.error or "")


@pytest.mark.parametrize("keepalive", [True, False])
def test_keepalive_reuses_one_connection_and_fresh_mode_closes_each(keepalive: bool) -> None:
    with serving(lambda c, r: STREAM) as server:
        observations = observe(server.url, n=3, keepalive=keepalive)
    for obs in observations:
        _check_ok(obs)
        assert "retries" not in obs.extra
    assert server.connections == (1 if keepalive else 3)


def test_a_kept_alive_connection_closed_before_answering_is_resent_once() -> None:
    # the server answers one request per connection, then closes when the next one comes
    with serving(lambda c, r: STREAM if r == 0 else None) as server:
        first, second = observe(server.url, n=2, keepalive=True)
    _check_ok(first)
    _check_ok(second)
    assert second.extra["retries"] == 1 and server.connections == 2


def test_tls_with_a_trusted_certificate_and_a_refused_one() -> None:
    trusted = ssl.create_default_context(cafile=str(CERT))
    with serving(lambda c, r: STREAM, tls=True) as server:
        ok = observe(server.url, n=2, keepalive=True, ssl_context=trusted)
        (refused,) = observe(server.url)  # the system's store does not know this certificate
    for obs in ok:
        _check_ok(obs)
    assert server.connections == 2  # one kept alive for both, one refused
    assert refused.outcome is Outcome.CONNECTION_ERROR
    assert "CERTIFICATE_VERIFY_FAILED" in (refused.error or "")


def test_many_streams_at_once_on_one_loop() -> None:
    with serving(lambda c, r: STREAM if r == 0 else None) as server:
        observations = observe(server.url, n=200, parallel=True)
    for obs in observations:
        _check_ok(obs)
    assert server.connections == 200


def test_streams_ending_together_are_parsed_a_slice_at_a_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events = [e + b"\n\n" for e in SSE.split(b"\n\n") if e.strip()]
    monkeypatch.setattr(session_module, "DECODE_BUDGET_S", 0.0)  # one slice per turn

    def state() -> StreamState:
        st = StreamState(FakeClock(), 0, Deadline())
        for i, event in enumerate(events * 4):
            st.arrive(i, event)
        return st

    async def go() -> list[int]:
        with StreamSession(3, keepalive=False) as session:
            states = [state() for _ in range(3)]
            tasks = [asyncio.ensure_future(session.decoder.decode(st)) for st in states]
            await asyncio.sleep(0)  # the tasks queue their streams
            parsed = []
            while not all(t.done() for t in tasks):
                await asyncio.sleep(0)
                parsed.append(sum(len(st.acc.chunk_t_s) for st in states))
            assert all(len(st.acc.chunk_t_s) == 48 for st in states)  # 12 tokens x 4, all parsed
            return parsed

    parsed = asyncio.run(go())
    steps = [b - a for a, b in zip([0, *parsed], parsed, strict=False)]
    assert max(steps) <= DECODE_SLICE and len(parsed) >= 3 * 64 // DECODE_SLICE


def test_a_proxy_in_the_environment_takes_remote_urls_through_httpx_never_loopback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    monkeypatch.setenv("NO_PROXY", "internal.example")
    session = StreamSession(1, keepalive=True)
    assert session.threaded_for("https://api.example.com/v1/chat/completions")
    assert not session.threaded_for("https://internal.example/v1/chat/completions")
    assert not session.threaded_for("https://127.0.0.1:8443/v1/chat/completions")
    assert not session.threaded_for("http://api.example.com/v1")  # no HTTP_PROXY
    session.close()
