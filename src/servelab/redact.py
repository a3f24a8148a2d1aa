"""Keeping secrets out of everything servelab records or prints.

Owns the set of secret values known to this process (an API key, registered by the engine that
reads it from the environment) and the one function that replaces them in text. It is applied
where server text enters a record (an error body before it is cut, in ``client/stream.py``; each
observation, in ``runner/drive.py``), where anything is written to a run directory
(``store/jsonl.py``) and where an error reaches the terminal (``cli/main.py``), so a server that
echoes the key back (``Incorrect API key provided: Bearer sk-...``) cannot put it on disk or on
screen. Pure: no I/O; the registry is process state.
"""

from __future__ import annotations

import threading
from typing import Any, TypeVar

REDACTED = "[redacted]"
# Shorter values are not treated as secrets: replacing them would mangle ordinary text.
MIN_SECRET_CHARS = 6

T = TypeVar("T")
_secrets: set[str] = set()
_lock = threading.Lock()


def register_secret(value: str) -> None:
    """Redact ``value`` (without surrounding whitespace) from now on."""
    value = value.strip()
    if len(value) >= MIN_SECRET_CHARS:
        with _lock:
            _secrets.add(value)


def forget_secrets() -> None:
    """Drop every registered secret (tests)."""
    with _lock:
        _secrets.clear()


def has_secrets() -> bool:
    return bool(_secrets)


def redact(text: str) -> str:
    """``text`` with every registered secret replaced by ``[redacted]``, longest first."""
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def redact_data(data: T) -> T:
    """A copy of JSON-like ``data`` (dicts, lists, tuples, strings) with secrets redacted;
    ``data`` itself when no secret is registered."""
    if not _secrets:
        return data
    return _walk(data)  # type: ignore[no-any-return]


def _walk(data: Any) -> Any:
    if isinstance(data, str):
        return redact(data)
    if isinstance(data, dict):
        return {_walk(k): _walk(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_walk(v) for v in data]
    if isinstance(data, tuple):
        return tuple(_walk(v) for v in data)
    return data
