"""Turning errors into one line and an exit code: the only place the CLI catches them.

Owns the CLI's error contract: a ``ServelabError`` prints ``servelab: error: <message>`` and
exits with its kind's code; a pydantic validation error in user input becomes one line naming
the field; Ctrl-C exits 130. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from pydantic import ValidationError

from servelab.errors import UsageError


def validation_to_usage(exc: ValidationError, what: str) -> UsageError:
    first = exc.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or what
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    msg = str(first["msg"]).removeprefix("Value error, ")
    return UsageError(f"{what}: {loc}: {msg}{more}")
