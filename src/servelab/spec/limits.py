"""Limits shared by every input that asks for requests: the output limit and failure tolerance.

Owns the bound on ``max_tokens`` (checked when the input is read, so a typo of many digits never
reaches an engine: llama-server read 99999999999999999999 as -2147483648 and failed every
request), the check that it fits the context each engine slot will have, and the default share
of failed trial requests a run tolerates before it exits with ``RequestsFailed``. Pure.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field

from servelab.spec.engine import DEFAULT_CTX_PER_SLOT

MAX_TOKENS_LIMIT = 1_048_576  # more than any engine's context per slot; below int32's range
DEFAULT_MAX_FAILURE_RATE = 0.1


def _max_tokens_in_range(value: int) -> int:
    if value > MAX_TOKENS_LIMIT:
        raise ValueError(
            f"{value} is more than any engine's context (at most {MAX_TOKENS_LIMIT}); give the "
            f"tokens to generate per request, below the context per slot (default "
            f"{DEFAULT_CTX_PER_SLOT})"
        )
    return value


MaxTokens = Annotated[int, Field(ge=1), AfterValidator(_max_tokens_in_range)]
MaxFailureRate = Annotated[
    float,
    Field(
        ge=0.0,
        le=1.0,
        description="the share of an arm's trial requests that may fail before the run exits "
        "with code 8 (an arm with no successful trial request always does)",
    ),
]


def context_problem(max_tokens: int, slot_context: int | None) -> str | None:
    """Why ``max_tokens`` cannot fit a slot of ``slot_context`` tokens (which must also hold
    the prompt), or None when it fits or the context is unknown."""
    if slot_context is None or max_tokens < slot_context:
        return None
    return (
        f"{max_tokens} does not fit the engine's context per slot ({slot_context} tokens, "
        "which must also hold the prompt)"
    )
