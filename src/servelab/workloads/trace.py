"""Request traces: arrival times, prompts and output lengths to replay, and prompt synthesis.

Owns the trace format (JSONL, one request per line), its validation with line numbers, the
arrival schedule with time scaling, and the synthesis of a prompt of an exact token count from
a deterministic filler vocabulary through a tokenizer the caller passes in.

A line: ``{"t_s": 1.5, "prompt": "..." | "prompt_tokens": 512, "output_tokens": 128,
"session_id": "a"}``. ``t_s`` (seconds) or ``timestamp`` (seconds, such as Unix time, or an ISO
8601 date-time) is the arrival; only differences matter: the first request goes at 0. Every
line uses the same one of the two. Times never go back. ``session_id`` is optional and only
labels rows.

Time scale: ``time_scale`` is a speed-up. A request at offset t from the first is sent at
``t / time_scale``: 2 replays twice as fast (half the gaps, twice the rate), 0.5 half as fast.

Must not: read files (``loader.load_trace`` does), speak HTTP, or sleep. The tokenizer is a
plain function, so this module stays pure and its tests need no engine.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeGuard

from servelab.errors import WorkloadError

Tokenize = Callable[[str], Sequence[int]]
Detokenize = Callable[[Sequence[int]], str]

_KEYS = ("t_s", "timestamp", "prompt", "prompt_tokens", "output_tokens", "session_id")


@dataclass(frozen=True, slots=True)
class TraceRequest:
    """One line of a trace: its arrival (seconds after the first request, unscaled), its prompt
    as text or as a token count, and the number of tokens to generate."""

    line: int
    t_s: float
    prompt: str | None
    prompt_tokens: int | None
    output_tokens: int
    session_id: str | None = None


@dataclass(frozen=True, slots=True)
class Trace:
    """A validated trace, in arrival order."""

    source: str
    requests: tuple[TraceRequest, ...]

    def offsets_s(self, time_scale: float = 1.0) -> list[float]:
        """Send times in seconds from the start: each arrival divided by ``time_scale``."""
        check_time_scale(time_scale)
        return [r.t_s / time_scale for r in self.requests]

    @property
    def content_hash(self) -> str:
        """``sha256:`` of the requests as canonical JSON (blind to key order and spacing)."""
        rows = [[r.t_s, r.prompt, r.prompt_tokens, r.output_tokens, r.session_id]
                for r in self.requests]  # fmt: skip
        text = json.dumps(rows, separators=(",", ":"), ensure_ascii=False)
        return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def check_time_scale(time_scale: float) -> None:
    """Refuse a speed-up that is not a positive, finite number."""
    if not time_scale > 0 or time_scale == float("inf"):
        raise WorkloadError(
            f"time scale {time_scale!r} must be a positive number: 2 replays twice as fast, "
            "0.5 half as fast"
        )


def parse_trace(text: str, *, source: str) -> Trace:
    """Parse and validate trace ``text``; ``source`` names it in one-line errors."""
    raw: list[tuple[int, Mapping[str, object]]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            raw.append((number, _object(line, source, number)))
    if not raw:
        raise WorkloadError(f"trace {source}: no requests; write one JSON object per line")
    time_key = "t_s" if "t_s" in raw[0][1] else "timestamp"
    times = [_time(data, time_key, source, number) for number, data in raw]
    requests: list[TraceRequest] = []
    for (number, data), t in zip(raw, times, strict=True):
        if requests and t < times[len(requests) - 1]:
            raise WorkloadError(
                f"trace {source}: line {number}: {time_key} goes back in time (earlier than the "
                "line before); sort the trace by arrival"
            )
        requests.append(_request(data, t - times[0], source, number))
    return Trace(source=source, requests=tuple(requests))


def _object(line: str, source: str, number: int) -> Mapping[str, object]:  # JSON boundary
    where = f"trace {source}: line {number}"
    try:
        data: object = json.loads(line)
    except json.JSONDecodeError as exc:
        raise WorkloadError(f"{where}: JSON syntax error: {exc.msg}") from exc
    if not isinstance(data, dict):
        raise WorkloadError(f"{where}: expected one JSON object per line")
    unknown = [key for key in data if key not in _KEYS]
    if unknown:
        raise WorkloadError(
            f"{where}: unknown key '{unknown[0]}'; remove it or fix its spelling "
            f"(allowed: {', '.join(_KEYS)})"
        )
    return data


def _time(data: Mapping[str, object], key: str, source: str, number: int) -> float:
    where = f"trace {source}: line {number}"
    other = "timestamp" if key == "t_s" else "t_s"
    if other in data:
        raise WorkloadError(
            f"{where}: has {other} but the trace's first line uses {key}; use one of them "
            "throughout"
        )
    if key not in data:
        raise WorkloadError(f"{where}: no arrival time; add t_s (seconds) or timestamp")
    value = data[key]
    if isinstance(value, str) and key == "timestamp":
        try:
            return datetime.fromisoformat(value).timestamp()
        except ValueError as exc:
            raise WorkloadError(f"{where}: timestamp {value!r} is not ISO 8601") from exc
    if not _is_number(value) or (key == "t_s" and value < 0):
        raise WorkloadError(f"{where}: {key} must be a number of seconds >= 0 (got {value!r})")
    return float(value)


def _request(data: Mapping[str, object], t_s: float, source: str, number: int) -> TraceRequest:
    where = f"trace {source}: line {number}"
    if ("prompt" in data) == ("prompt_tokens" in data):
        raise WorkloadError(f"{where}: give exactly one of prompt (text) or prompt_tokens")
    prompt, count, output = data.get("prompt"), data.get("prompt_tokens"), data.get("output_tokens")
    if prompt is not None and (not isinstance(prompt, str) or not prompt):
        raise WorkloadError(f"{where}: prompt must be non-empty text")
    if count is not None and not _is_count(count):
        raise WorkloadError(f"{where}: prompt_tokens must be a whole number >= 1 (got {count!r})")
    if not _is_count(output):
        raise WorkloadError(f"{where}: output_tokens must be a whole number >= 1 (got {output!r})")
    session = data.get("session_id")
    if session is not None and (not isinstance(session, str) or not session):
        raise WorkloadError(f"{where}: session_id must be non-empty text")
    return TraceRequest(line=number, t_s=t_s, prompt=prompt, prompt_tokens=count,
                        output_tokens=output, session_id=session)  # fmt: skip


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value


def _is_count(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


# --- prompts of an exact token count ------------------------------------------------------------

FILLER_WORDS: tuple[str, ...] = tuple(
    " ".join(
        [
            "time year people way day man thing woman life child world school state family",
            "student group country problem hand part place case week company system program",
            "question work government number night point home water room mother area money",
            "story fact month lot right study book eye job word business issue side kind head",
            "house service friend father power hour game line end member law car city",
            "community name president team minute idea kid body information back parent face",
            "others level office door health person art war history party result change",
            "morning reason research girl guy moment air teacher force education foot boy age",
            "policy music market sense nation plan college interest death experience effect",
            "use class control care field development role effort rate heart drug show leader",
            "light voice wife police mind price report decision son view relationship town",
            "road arm difference value building action model season society tax director",
            "position player record paper space ground form event official matter center",
            "couple site project activity star table need court oil situation cost industry",
            "figure street image phone data picture practice piece land product doctor wall",
            "patient worker news test movie north love support technology step baby computer",
            "type attention film tree source organization hair window evidence population",
        ]
    ).split()
)
"""Common English nouns, most of them one token in every BPE vocabulary servelab has met."""

MAX_ADJUST = 12


def filler_text(n_words: int, seed: int) -> str:
    """``n_words`` filler words drawn by a generator seeded with ``seed``, in sentences."""
    rng = random.Random(seed)
    words = [rng.choice(FILLER_WORDS) for _ in range(n_words)]
    for at in range(11, n_words, 12):
        words[at] += "."
    return " ".join(words)


def synthesize_prompt(n_tokens: int, tokenize: Tokenize, detokenize: Detokenize, seed: int) -> str:
    """Text that ``tokenize`` turns into exactly ``n_tokens`` tokens (filler seeded by ``seed``).

    Tokenize filler longer than needed, keep the first ``n_tokens``, detokenize, and re-tokenize
    to check: a cut inside a word can tokenize differently, so the cut moves by the difference
    until the count is exact. Raises ``ValueError`` when it does not converge.
    """
    if n_tokens < 1:
        raise ValueError(f"a prompt needs at least 1 token (asked for {n_tokens})")
    ids = list(tokenize(filler_text(n_tokens + 16, seed)))
    while len(ids) < n_tokens + 8:  # a tokenizer that splits words finely
        ids = list(tokenize(filler_text(2 * len(ids) + 16, seed)))
    cut = n_tokens
    for _ in range(MAX_ADJUST):
        text = detokenize(ids[:cut]).strip()
        got = len(tokenize(text))
        if got == n_tokens:
            return text
        cut += n_tokens - got
    raise ValueError(f"could not synthesise a prompt of exactly {n_tokens} tokens")
