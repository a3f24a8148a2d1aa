"""The shared async HTTP session a run's requests go through.

Owns connection-pool policy: at least one connection per request in flight, and keep-alive
only when asked for (a local engine gets a fresh loopback connection per request, which costs
microseconds and means no request ever meets a kept-alive connection the server is closing).
"""

from __future__ import annotations

import httpx


def async_session(concurrency: int, keepalive: bool) -> httpx.AsyncClient:
    limits = httpx.Limits(
        max_connections=concurrency + 2,
        max_keepalive_connections=concurrency if keepalive else 0,
    )
    return httpx.AsyncClient(limits=limits, timeout=None)
