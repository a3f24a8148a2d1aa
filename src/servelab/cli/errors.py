"""Turning errors into one line and an exit code: the only place the CLI catches them.

Owns the CLI's error contract: a ``ServelabError`` prints ``servelab: error: <message>`` and
exits with its kind's code; a pydantic validation error in user input becomes one line naming
the field; Ctrl-C exits 130. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from pydantic import ValidationError

from servelab.errors import UsageError


def validation_to_usage(
    exc: ValidationError, what: str, flags: dict[str, str] | None = None
) -> UsageError:
    """One line naming the bad field (as its command-line flag when ``flags`` maps it)."""
    first = exc.errors()[0]
    field = ".".join(str(p) for p in first["loc"])
    if flags is not None and field:
        field = flags.get(field, "--" + field.replace("_", "-"))
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    msg = str(first["msg"]).removeprefix("Value error, ")
    return UsageError(f"{what}: {field + ': ' if field else ''}{msg}{more}")
