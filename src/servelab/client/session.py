"""The session a run's requests go through: one HTTP client and one reader thread per slot.

Owns connection and thread policy. Each request in flight is read by a blocking reader in its
own thread, while asyncio schedules them. Why not httpx's async client: on a 2-core machine
shared with the engine, its per-chunk CPU cost (async generators through httpcore and h11, about
0.35 ms a chunk here) cut the engine's own decode rate by 3-5 %. Plain-HTTP requests on fresh
connections (local engines) go through ``plainhttp`` (a socket and h11); others (TLS,
keep-alive) through a blocking httpx client (benchmarks/client_overhead.py has the figures).
Local engines get a fresh loopback connection per request (microseconds), so no request ever
meets a kept-alive connection the server is closing.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType

import httpx

from servelab.client.plainhttp import PlainHttpStream


class StreamSession:
    """``concurrency`` reader threads over one connection pool; use as a context manager."""

    def __init__(self, concurrency: int, keepalive: bool) -> None:
        keep = concurrency if keepalive else 0
        limits = httpx.Limits(max_connections=concurrency + 2, max_keepalive_connections=keep)
        self.http = httpx.Client(limits=limits, timeout=None)
        self.executor = ThreadPoolExecutor(
            max_workers=max(1, concurrency), thread_name_prefix="servelab-reader"
        )
        self.keepalive = keepalive
        self._open: set[httpx.Response | PlainHttpStream] = set()
        self._lock = threading.Lock()

    def plain_for(self, url: str) -> bool:
        """Use the lean socket reader: plain HTTP and a fresh connection per request."""
        return not self.keepalive and url.startswith("http://")

    def track(self, response: httpx.Response | PlainHttpStream) -> None:
        with self._lock:
            self._open.add(response)

    def untrack(self, response: httpx.Response | PlainHttpStream) -> None:
        with self._lock:
            self._open.discard(response)

    def abort_all(self) -> None:
        """Close every response being read, so blocked reader threads return at once."""
        with self._lock:
            open_now = list(self._open)
        for response in open_now:
            if isinstance(response, PlainHttpStream):
                response.abort()
            else:
                _shutdown_socket(response)

    def close(self) -> None:
        self.abort_all()
        self.executor.shutdown(wait=True, cancel_futures=True)
        self.http.close()

    def __enter__(self) -> StreamSession:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _shutdown_socket(response: httpx.Response) -> None:
    """Wake a thread blocked in recv on this response (closing the fd alone may not)."""
    stream = response.extensions.get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
