"""A mock OpenAI-compatible streaming server that emits tokens on an exact schedule.

Owns the server behind ``servelab selftest`` (docs/selftest.md): ``POST /v1/chat/completions``
and ``POST /v1/completions`` (streamed as llama-server streams them: a role chunk, one chunk per
group of tokens, a finish chunk, a usage chunk with ``choices: []`` when
``stream_options.include_usage`` is set, ``timings``, ``data: [DONE]``; per-chunk ``timings``
with ``timings_per_token``), ``GET /v1/models``, ``GET /health`` and the side endpoint
``GET /emissions``. A ``Profile`` plays a fast, a slow or a bursty engine: the first chunk after
``ttft_s``, then chunk k when its tokens are done at ``tokens_per_s``, ``chunk_tokens`` cycling.

The server records when it actually wrote each token-bearing chunk (``time.perf_counter_ns``,
CLOCK_MONOTONIC, which every process on a Linux host shares) beside when it should have, so
the client's timestamps can be held against the real emissions and the server's own scheduling
jitter kept apart. ``GET /emissions`` returns (and forgets) them, keyed by the request's
``X-Mock-Request-Id`` header, else by the completion id.

Runs in its own process (``python -m servelab.engines.mock_server --port 0 --profile fast``
prints ``listening http://127.0.0.1:PORT``; ``MockServerProcess`` does that from Python), bound
to 127.0.0.1 only. The reply shapes and schedules are ``engines.mock_replies``. Standard library
and h11 only; it must not import the rest of servelab.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import h11
from pydantic import JsonValue

from servelab.engines.mock_replies import (
    PROFILE_HEADER,
    PROFILES,
    REQUEST_ID_HEADER,
    Call,
    Profile,
    Reply,
    profile_from,
)

__all__ = [
    "PROFILES",
    "PROFILE_HEADER",
    "REQUEST_ID_HEADER",
    "Emission",
    "MockServer",
    "MockServerProcess",
    "Profile",
    "main",
    "profile_from",
    "serve_forever",
]

HOST = "127.0.0.1"
KEPT_REQUESTS = 20_000  # emission records kept until read (oldest dropped first)


@dataclass
class Emission:
    """What the server did for one streamed request (monotonic nanoseconds)."""

    received_ns: int
    scheduled_ns: list[int] = field(default_factory=list)
    emitted_ns: list[int] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    done_ns: int | None = None

    def to_json(self) -> dict[str, JsonValue]:
        return {
            "received_ns": self.received_ns,
            "scheduled_ns": [*self.scheduled_ns],
            "emitted_ns": [*self.emitted_ns],
            "tokens": [*self.tokens],
            "done_ns": self.done_ns,
        }


def _sleep_until(t_ns: int) -> Any:
    return asyncio.sleep(max(0.0, (t_ns - time.perf_counter_ns()) / 1e9))


async def _next(conn: h11.Connection, reader: asyncio.StreamReader) -> Any:
    """The next h11 event, reading as needed (EOF: ``h11.ConnectionClosed``)."""
    while (event := conn.next_event()) is h11.NEED_DATA:
        conn.receive_data(await reader.read(65536))
    return event


class MockServer:
    """The server's state: its default profile and the emissions not yet read."""

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self.emissions: OrderedDict[str, Emission] = OrderedDict()

    async def serve(self, port: int) -> asyncio.Server:
        return await asyncio.start_server(self._connection, HOST, port, backlog=4096)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            while await self._one(conn, reader, writer):
                conn.start_next_cycle()
        except (h11.ProtocolError, ConnectionError):
            pass  # a client that hung up or spoke badly: drop the connection
        finally:
            writer.close()

    async def _one(
        self, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Serve one request; whether the connection stays open for another."""
        request = await _next(conn, reader)
        if not isinstance(request, h11.Request):
            return False
        body = bytearray()
        while not isinstance(event := await _next(conn, reader), h11.EndOfMessage):
            if isinstance(event, h11.ConnectionClosed):
                return False
            if isinstance(event, h11.Data):
                body += event.data
        await self._route(conn, writer, request, bytes(body), time.perf_counter_ns())
        return conn.our_state is h11.DONE and conn.their_state is h11.DONE

    async def _route(
        self,
        conn: h11.Connection,
        writer: asyncio.StreamWriter,
        request: h11.Request,
        body: bytes,
        received_ns: int,
    ) -> None:
        method, url = request.method.decode(), urlsplit(request.target.decode("latin-1"))
        headers = {k.decode().lower(): v.decode("latin-1") for k, v in request.headers}
        if method == "GET" and url.path == "/health":
            await _send_json(conn, writer, 200, {"status": "ok"})
        elif method == "GET" and url.path == "/v1/models":
            await _send_json(
                conn,
                writer,
                200,
                {
                    "object": "list",
                    "data": [
                        {"id": "mock", "object": "model", "owned_by": "servelab", "created": 0}
                    ],
                },
            )
        elif method == "GET" and url.path == "/emissions":
            await _send_json(conn, writer, 200, self.take(parse_qs(url.query)))
        elif method == "POST" and url.path in ("/v1/chat/completions", "/v1/completions"):
            await self._generate(conn, writer, url.path, body, headers, received_ns)
        else:
            await _send_error(conn, writer, 404, f"no route {method} {url.path}")

    async def _generate(
        self,
        conn: h11.Connection,
        writer: asyncio.StreamWriter,
        path: str,
        body: bytes,
        headers: Mapping[str, str],
        received_ns: int,
    ) -> None:
        try:
            payload = json.loads(body)
            call = Call.read(path, payload, headers, self.profile)
        except (ValueError, AttributeError):
            await _send_error(conn, writer, 400, "the body must be a JSON object")
            return
        reply = Reply(call)
        if not call.stream:
            last_s = call.profile.schedule_s(call.max_tokens)[-1][0]
            await _sleep_until(received_ns + round(last_s * 1e9))
            await _send_json(conn, writer, 200, reply.whole(_since(received_ns)))
            return
        record = Emission(received_ns)
        self._keep(call.key or reply.id, record)
        await _stream(conn, writer, reply, record)

    def _keep(self, key: str, record: Emission) -> None:
        self.emissions[key] = record
        while len(self.emissions) > KEPT_REQUESTS:
            self.emissions.popitem(last=False)

    def take(self, query: Mapping[str, list[str]]) -> dict[str, JsonValue]:
        """The finished requests' emissions (``id``: only those), forgotten unless ``keep``."""
        wanted = query.get("id") or [k for k, e in self.emissions.items() if e.done_ns]
        found = {k: self.emissions[k] for k in wanted if k in self.emissions}
        if "keep" not in query:
            for key in found:
                del self.emissions[key]
        return {
            "schema_version": 1,
            "clock": "CLOCK_MONOTONIC ns (time.perf_counter_ns)",
            "requests": {k: dict(e.to_json()) for k, e in found.items()},
        }


def _since(t_ns: int) -> float:
    return (time.perf_counter_ns() - t_ns) / 1e9


WRITE_BUFFER_HIGH = 256 * 1024  # bytes buffered for a slow reader before the stream waits


async def _stream(
    conn: h11.Connection, writer: asyncio.StreamWriter, reply: Reply, record: Emission
) -> None:
    """Write the reply's chunks at their scheduled times, recording each write's moment."""
    writer.write(
        conn.send(
            h11.Response(
                status_code=200,
                headers=[
                    (b"content-type", b"text/event-stream"),
                    (b"cache-control", b"no-cache"),
                    (b"server", b"servelab-mock"),
                ],
            )
        )
        or b""
    )
    pending = reply.role()  # llama-server sends the role chunk with the first token
    t0 = record.received_ns
    schedule = [
        (t0 + round(s * 1e9), n) for s, n in reply.call.profile.schedule_s(reply.call.max_tokens)
    ]
    i = 0
    while i < len(schedule):
        if schedule[i][0] > time.perf_counter_ns():
            await _sleep_until(schedule[i][0])
        if writer.is_closing():
            return
        now = time.perf_counter_ns()
        due = [i] + [j for j in range(i + 1, len(schedule)) if schedule[j][0] <= now]
        # chunks already due go out in one write (a server behind its schedule does the same)
        data = pending + b"".join(reply.tokens(schedule[j][1], _since(t0)) for j in due)
        pending = b""
        record.emitted_ns += [time.perf_counter_ns()] * len(due)
        writer.write(conn.send(h11.Data(data=data)) or b"")
        record.scheduled_ns += [schedule[j][0] for j in due]
        record.tokens += [schedule[j][1] for j in due]
        i = due[-1] + 1
        if writer.transport.get_write_buffer_size() > WRITE_BUFFER_HIGH:
            await writer.drain()
    end = conn.send(h11.Data(data=reply.end(_since(t0)))) or b""
    writer.write(end + (conn.send(h11.EndOfMessage()) or b""))
    record.done_ns = time.perf_counter_ns()
    await writer.drain()


async def _send_json(
    conn: h11.Connection, writer: asyncio.StreamWriter, status: int, obj: object
) -> None:
    data = json.dumps(obj, separators=(",", ":")).encode()
    head = h11.Response(
        status_code=status,
        headers=[
            (b"content-type", b"application/json"),
            (b"content-length", str(len(data)).encode()),
        ],
    )
    for event in (head, h11.Data(data=data), h11.EndOfMessage()):
        writer.write(conn.send(event) or b"")
    await writer.drain()


async def _send_error(
    conn: h11.Connection, writer: asyncio.StreamWriter, status: int, message: str
) -> None:
    await _send_json(
        conn,
        writer,
        status,
        {"error": {"code": status, "message": message, "type": "invalid_request_error"}},
    )


# ---------------------------------------------------------------------------- the process


async def serve_forever(profile: Profile, port: int = 0) -> None:
    """Serve until SIGTERM or SIGINT; prints ``listening http://127.0.0.1:PORT`` once bound."""
    server = await MockServer(profile).serve(port)
    bound = server.sockets[0].getsockname()[1]
    print(f"listening http://{HOST}:{bound}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


def _args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m servelab.engines.mock_server",
        description="servelab's mock OpenAI-compatible streaming server",
    )
    ap.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    ap.add_argument("--profile", choices=sorted(PROFILES), default="fast")
    ap.add_argument("--ttft-ms", type=float, default=None)
    ap.add_argument("--tokens-per-s", type=float, default=None)
    ap.add_argument("--chunk-tokens", default=None, help="tokens per chunk, cycled: 3,1,4,2")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    chunks = tuple(int(x) for x in args.chunk_tokens.split(",")) if args.chunk_tokens else None
    profile = profile_from(args.profile, args.ttft_ms, args.tokens_per_s, chunks)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_forever(profile, args.port))
    return 0


class MockServerProcess:
    """The mock server in a child process, for the length of a ``with`` block."""

    def __init__(
        self,
        profile: str = "fast",
        *,
        port: int = 0,
        ttft_ms: float | None = None,
        tokens_per_s: float | None = None,
        chunk_tokens: tuple[int, ...] | None = None,
        start_timeout_s: float = 15.0,
    ) -> None:
        profile_from(profile)  # an unknown name fails here, not in the child
        self.argv = [
            sys.executable,
            "-m",
            "servelab.engines.mock_server",
            "--profile",
            profile,
            "--port",
            str(port),
        ]
        for flag, value in (("--ttft-ms", ttft_ms), ("--tokens-per-s", tokens_per_s)):
            if value is not None:
                self.argv += [flag, str(value)]
        if chunk_tokens:
            self.argv += ["--chunk-tokens", ",".join(map(str, chunk_tokens))]
        self.start_timeout_s = start_timeout_s
        self.url = ""
        self._proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> MockServerProcess:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        self._proc = subprocess.Popen(
            self.argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
        )
        line = self._first_line(self._proc)
        if not line.startswith("listening "):
            self.stop()
            raise RuntimeError(f"the mock server did not start ({' '.join(self.argv)})")
        self.url = line.split()[1]
        return self

    def _first_line(self, proc: subprocess.Popen[str]) -> str:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], self.start_timeout_s)
        return proc.stdout.readline().strip() if ready else ""

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


if __name__ == "__main__":
    sys.exit(main())
