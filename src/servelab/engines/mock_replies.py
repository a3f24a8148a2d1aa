"""The mock server's replies: engine profiles (their schedules) and llama-server's SSE shapes.

Owns ``Profile`` and the named ``PROFILES`` (fast, slow, bursty), ``Call`` (a generation request
as the mock server reads it) and ``Reply`` (the bytes of one streamed or whole answer, shaped as
llama-server shapes them: docs/selftest.md). Pure: no I/O, no clock (times are passed in);
standard library only, like ``engines.mock_server``, which serves them.
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace

from pydantic import JsonValue

REQUEST_ID_HEADER = "x-mock-request-id"
PROFILE_HEADER = "x-mock-profile"
DEFAULT_MAX_TOKENS = 16
WORDS = (" lorem", " ipsum", " dolor", " sit", " amet", " consectetur", " adipiscing", " elit")
FINGERPRINT = "mock-0"


@dataclass(frozen=True, slots=True)
class Profile:
    """An engine's pace: first chunk after ``ttft_s``; chunk k (carrying ``chunk_tokens[k % n]``
    tokens) when its tokens are done at ``tokens_per_s``."""

    name: str
    ttft_s: float
    tokens_per_s: float
    chunk_tokens: tuple[int, ...] = (1,)

    def schedule_s(self, n_tokens: int) -> list[tuple[float, int]]:
        """(seconds after the request arrived, tokens) of each token-bearing chunk."""
        out: list[tuple[float, int]] = []
        done = 0
        for size in itertools.cycle(self.chunk_tokens):
            if done >= n_tokens:
                break
            size = min(size, n_tokens - done)
            at = self.ttft_s if not out else out[-1][0] + size / self.tokens_per_s
            out.append((at, size))
            done += size
        return out


PROFILES: dict[str, Profile] = {
    "fast": Profile("fast", ttft_s=0.002, tokens_per_s=2000.0),
    "slow": Profile("slow", ttft_s=0.1, tokens_per_s=20.0),
    # speculative decoding: accepted drafts arrive as groups of tokens, then a pause
    "bursty": Profile("bursty", ttft_s=0.02, tokens_per_s=200.0, chunk_tokens=(3, 1, 4, 2)),
}


@dataclass(frozen=True, slots=True)
class Call:
    """One generation request as the server reads it."""

    chat: bool
    stream: bool
    max_tokens: int
    include_usage: bool
    per_token_timings: bool
    prompt_n: int
    profile: Profile
    key: str | None

    @classmethod
    def read(
        cls, path: str, body: Mapping[str, JsonValue], headers: Mapping[str, str], default: Profile
    ) -> Call:
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        options = body.get("stream_options")
        prompt = json.dumps(body.get("messages", body.get("prompt", "")))
        return cls(
            chat=path.endswith("/chat/completions"),
            stream=body.get("stream") is True,
            max_tokens=limit if isinstance(limit, int) and limit > 0 else DEFAULT_MAX_TOKENS,
            include_usage=isinstance(options, dict) and options.get("include_usage") is True,
            per_token_timings=body.get("timings_per_token") is True,
            prompt_n=max(1, len(prompt.split())),
            profile=PROFILES.get(headers.get(PROFILE_HEADER, ""), default),
            key=headers.get(REQUEST_ID_HEADER),
        )


class Reply:
    """The SSE bytes of one reply, shaped as llama-server shapes them."""

    def __init__(self, call: Call) -> None:
        self.call = call
        self.id = ("chatcmpl-" if call.chat else "cmpl-") + uuid.uuid4().hex[:24]
        self.created = int(time.time())
        self.words = itertools.cycle(WORDS)
        self.n = 0
        self._template: tuple[bytes, bytes] | None = None

    def _obj(self, choices: list[JsonValue], **more: JsonValue) -> dict[str, JsonValue]:
        kind = "chat.completion.chunk" if self.call.chat else "text_completion"
        return {
            "choices": choices,
            "created": self.created,
            "id": self.id,
            "model": "mock",
            "system_fingerprint": FINGERPRINT,
            "object": kind,
            **more,
        }

    def _choice(
        self, text: str | None, finish: str | None, role: bool = False
    ) -> dict[str, JsonValue]:
        if not self.call.chat:
            return {"text": text or "", "index": 0, "logprobs": None, "finish_reason": finish}
        delta: dict[str, JsonValue] = {"role": "assistant", "content": None} if role else {}
        if text is not None:
            delta = {"content": text}
        return {"finish_reason": finish, "index": 0, "delta": delta}

    def timings(self, elapsed_s: float) -> dict[str, JsonValue]:
        p = self.call.profile
        decode_ms = max(elapsed_s - p.ttft_s, 1e-6) * 1000
        return {
            "cache_n": 0,
            "prompt_n": self.call.prompt_n,
            "prompt_ms": p.ttft_s * 1000,
            "prompt_per_token_ms": p.ttft_s * 1000 / self.call.prompt_n,
            "prompt_per_second": self.call.prompt_n / max(p.ttft_s, 1e-9),
            "predicted_n": self.n,
            "predicted_ms": decode_ms,
            "predicted_per_token_ms": decode_ms / max(self.n, 1),
            "predicted_per_second": self.n / decode_ms * 1000,
        }

    def role(self) -> bytes:
        return _sse(self._obj([self._choice(None, None, role=True)])) if self.call.chat else b""

    def tokens(self, count: int, elapsed_s: float) -> bytes:
        text = "".join(next(self.words) for _ in range(count))
        self.n += count
        if self.call.per_token_timings:
            more = {"timings": self.timings(elapsed_s)}
            return _sse(self._obj([self._choice(text, None)], **more))
        if self._template is None:  # the same bytes around every chunk's text: built once
            head, tail = _sse(self._obj([self._choice("\x00", None)])).split(b'"\\u0000"')
            self._template = (head, tail)
        return self._template[0] + json.dumps(text).encode() + self._template[1]

    def end(self, elapsed_s: float) -> bytes:
        timings = {"timings": self.timings(elapsed_s)}
        finish = self._obj(
            [self._choice(None, "length")], **({} if self.call.include_usage else timings)
        )
        out = _sse(finish)
        if self.call.include_usage:
            usage: dict[str, JsonValue] = {
                "completion_tokens": self.n,
                "prompt_tokens": self.call.prompt_n,
                "total_tokens": self.n + self.call.prompt_n,
            }
            out += _sse(self._obj([], usage=usage, **timings))
        return out + b"data: [DONE]\n\n"

    def whole(self, elapsed_s: float) -> dict[str, JsonValue]:
        """The non-streamed answer (``stream: false``)."""
        text = "".join(next(self.words) for _ in range(self.call.max_tokens))
        self.n = self.call.max_tokens
        message: dict[str, JsonValue] = {"role": "assistant", "content": text}
        choice: dict[str, JsonValue] = (
            {"message": message, "index": 0, "finish_reason": "length"}
            if self.call.chat
            else {"text": text, "index": 0, "logprobs": None, "finish_reason": "length"}
        )
        usage: dict[str, JsonValue] = {
            "completion_tokens": self.n,
            "prompt_tokens": self.call.prompt_n,
            "total_tokens": self.n + self.call.prompt_n,
        }
        obj = self._obj([choice], usage=usage, timings=self.timings(elapsed_s))
        obj["object"] = "chat.completion" if self.call.chat else "text_completion"
        return obj


def _sse(obj: Mapping[str, JsonValue]) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


def profile_from(
    name: str,
    ttft_ms: float | None = None,
    tokens_per_s: float | None = None,
    chunk_tokens: tuple[int, ...] | None = None,
) -> Profile:
    """A named profile with any of its figures replaced."""
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}")
    p = PROFILES[name]
    return replace(
        p,
        ttft_s=p.ttft_s if ttft_ms is None else ttft_ms / 1000,
        tokens_per_s=tokens_per_s or p.tokens_per_s,
        chunk_tokens=chunk_tokens or p.chunk_tokens,
    )
