"""Pure construction of request bodies for OpenAI-compatible chat and completion endpoints.

Owns which fields servelab sends: streaming with usage requested, sampling, max_tokens, the
engine's own extras (llama.cpp's ``cache_prompt`` and ``timings_per_token``) and the optional
unique prefix that defeats prefix caches on engines without a switch for them.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

# A JSON request body as built here and sent by the client (httpx / json.dumps serialise it).
Body = dict[str, object]


@dataclass(frozen=True, slots=True)
class Sampling:
    max_tokens: int = 128
    temperature: float = 0.0
    seed: int | None = 0
    ignore_eos: bool = False


def _with_prefix(messages: Sequence[Mapping[str, object]], prefix: str) -> list[Body]:
    """Put ``prefix`` at the very start of the first message, so no two prompts share a prefix.

    (Templates may still render tool definitions before it; engines cache only exact prefixes,
    so those few template tokens are all that can be reused.)
    """
    out = [copy.deepcopy(dict(m)) for m in messages]
    if not out:
        return out
    first = out[0]
    content = first.get("content")
    if isinstance(content, str):
        first["content"] = prefix + content
    elif isinstance(content, list):
        first["content"] = [{"type": "text", "text": prefix}, *content]
    else:
        first["content"] = prefix
    return out


def build_payload(
    *,
    model: str,
    sampling: Sampling,
    messages: Sequence[Mapping[str, object]] | None = None,
    prompt: str | None = None,
    tools: Sequence[Mapping[str, object]] | None = None,
    extras: Mapping[str, object] | None = None,
    unique_prefix: str | None = None,
) -> tuple[Literal["chat", "completions"], Body]:
    """The endpoint kind and JSON body for one streamed request."""
    body: Body = {
        "model": model,
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": sampling.max_tokens,
        "temperature": sampling.temperature,
    }
    if sampling.seed is not None:
        body["seed"] = sampling.seed
    if sampling.ignore_eos:
        body["ignore_eos"] = True
    body.update(extras or {})
    if messages is not None:
        body["messages"] = (
            _with_prefix(messages, unique_prefix) if unique_prefix else list(messages)
        )
        if tools:
            body["tools"] = list(tools)
        return "chat", body
    if prompt is None:
        raise ValueError("a request needs messages or a prompt")
    body["prompt"] = (unique_prefix or "") + prompt
    return "completions", body
