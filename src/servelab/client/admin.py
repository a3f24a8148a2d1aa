"""Small synchronous HTTP calls for engine management: health, props, metrics text,
tokenizer calls.

Owns the non-streaming requests engines need while starting and describing themselves. It is in
``client/`` because only this package speaks HTTP; it translates httpx errors into ``None`` or
``AdminHttpError`` here so engines never see an httpx exception.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx


class AdminHttpError(Exception):
    """A management request failed; ``status`` is None when no response arrived."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def get(url: str, timeout_s: float = 5.0, headers: dict[str, str] | None = None) -> httpx.Response:
    try:
        return httpx.get(url, timeout=timeout_s, headers=headers or {})
    except httpx.HTTPError as exc:
        raise AdminHttpError(f"{type(exc).__name__}: {exc}") from exc


def get_json(url: str, timeout_s: float = 5.0, headers: dict[str, str] | None = None) -> Any:
    return _json_of(get(url, timeout_s, headers), "GET", url)


def post_json(
    url: str,
    body: Mapping[str, object],
    timeout_s: float = 10.0,
    headers: dict[str, str] | None = None,
) -> Any:
    """POST ``body`` as JSON and return the parsed JSON answer (a tokenizer call, say)."""
    try:
        response = httpx.post(url, json=body, timeout=timeout_s, headers=headers or {})
    except httpx.HTTPError as exc:
        raise AdminHttpError(f"{type(exc).__name__}: {exc}") from exc
    return _json_of(response, "POST", url)


def _json_of(response: httpx.Response, method: str, url: str) -> Any:
    """The parsed JSON of a 200 answer; any other status, or a body that is not JSON, is an
    ``AdminHttpError`` naming the request."""
    if response.status_code != 200:
        raise AdminHttpError(f"{method} {url} -> HTTP {response.status_code}", response.status_code)
    try:
        return response.json()
    except ValueError as exc:
        raise AdminHttpError(f"{method} {url} returned invalid JSON", response.status_code) from exc


def get_text(url: str, timeout_s: float = 5.0, headers: dict[str, str] | None = None) -> str:
    response = get(url, timeout_s, headers)
    if response.status_code != 200:
        raise AdminHttpError(f"GET {url} -> HTTP {response.status_code}", response.status_code)
    return response.text


def health_status(url: str, timeout_s: float = 2.0) -> int | None:
    """The HTTP status of ``url``, or None when nothing answered."""
    try:
        return get(url, timeout_s).status_code
    except AdminHttpError:
        return None
