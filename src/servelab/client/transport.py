"""The transport seam: what an engine may hand the client instead of the real network.

Owns the type ``Transport`` (an httpx transport: the session's readers are blocking, see
session.py) so that packages other than ``client/`` can name one without importing httpx, and
``function_transport``: httpx's ``MockTransport`` idea with servelab's own, httpx-free request
and response records, so an engine outside ``client/`` (the replay engine) can answer requests
with a plain function. A handler's ``Refused`` becomes httpx's ``ConnectError`` and a body's
``Reset`` its ``ReadError``, here and nowhere else, so the client's one error translation
(stream.py) sees exactly what a real dead server causes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import httpx

Transport = httpx.BaseTransport


class Refused(Exception):
    """Raised by a handler: the connection was refused (the server is not running)."""


class Reset(Exception):
    """Raised while a body streams: the connection was reset (the server died)."""


@dataclass(frozen=True, slots=True)
class SentRequest:
    method: str
    path: str
    body: bytes


@dataclass(frozen=True, slots=True)
class Answer:
    """A response: its status and its body, as the reads that deliver it."""

    status: int
    chunks: Iterable[bytes] = ()


Handler = Callable[[SentRequest], Answer]


class _Body(httpx.SyncByteStream):
    def __init__(self, chunks: Iterable[bytes]) -> None:
        self.chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self.chunks
        except Reset as exc:
            raise httpx.ReadError(str(exc)) from exc


class FunctionTransport(httpx.BaseTransport):
    """An httpx transport that answers every request with ``handler``."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        sent = SentRequest(request.method, request.url.path, request.read())
        try:
            answer = self.handler(sent)
        except Refused as exc:
            raise httpx.ConnectError(str(exc), request=request) from exc
        return httpx.Response(answer.status, stream=_Body(answer.chunks), request=request)


def function_transport(handler: Handler) -> Transport:
    return FunctionTransport(handler)


__all__ = [
    "Answer",
    "FunctionTransport",
    "Handler",
    "Refused",
    "Reset",
    "SentRequest",
    "Transport",
    "function_transport",
]
