"""Request traces: parsing with line numbers, time scaling, and prompts of an exact token count
(here through a small deterministic tokenizer; tests/integration checks the real engine's)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from servelab.errors import WorkloadError
from servelab.workloads import load_trace
from servelab.workloads.trace import (
    check_time_scale,
    filler_text,
    parse_trace,
    synthesize_prompt,
)

TRACE = """\
{"t_s": 10.0, "prompt": "Hello there", "output_tokens": 8, "session_id": "a"}

{"t_s": 10.5, "prompt_tokens": 100, "output_tokens": 16}
{"t_s": 12.0, "prompt_tokens": 7, "output_tokens": 1, "session_id": "a"}
"""


class PieceTokenizer:
    """Words cut into pieces of up to ``width`` characters, a leading space on a word's first
    piece: cutting inside a word changes what the rest re-tokenizes into, as BPE does."""

    def __init__(self, width: int = 4) -> None:
        self.width = width
        self.ids: dict[str, int] = {}
        self.pieces: list[str] = []

    def tokenize(self, text: str) -> list[int]:
        out = []
        for n, word in enumerate(text.split(" ")):
            pieces = [word[i : i + self.width] for i in range(0, len(word), self.width)]
            for k, piece in enumerate(pieces):
                out.append(self._id((" " if n and not k else "") + piece))
        return out

    def detokenize(self, tokens: Sequence[int]) -> str:
        return "".join(self.pieces[t] for t in tokens)

    def _id(self, piece: str) -> int:
        if piece not in self.ids:
            self.ids[piece] = len(self.pieces)
            self.pieces.append(piece)
        return self.ids[piece]


def test_parse_keeps_order_lines_and_offsets_from_the_first_request() -> None:
    trace = parse_trace(TRACE, source="t.jsonl")
    assert [r.line for r in trace.requests] == [1, 3, 4]
    assert [r.t_s for r in trace.requests] == [0.0, 0.5, 2.0]
    first, second, _ = trace.requests
    assert (first.prompt, first.prompt_tokens, first.output_tokens) == ("Hello there", None, 8)
    assert (second.prompt, second.prompt_tokens, second.session_id) == (None, 100, None)


def test_time_scale_is_a_speed_up() -> None:
    trace = parse_trace(TRACE, source="t.jsonl")
    assert trace.offsets_s() == [0.0, 0.5, 2.0]
    assert trace.offsets_s(2.0) == [0.0, 0.25, 1.0]  # twice as fast
    assert trace.offsets_s(0.5) == [0.0, 1.0, 4.0]  # half as fast
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(WorkloadError, match="time scale"):
            check_time_scale(bad)


def test_timestamps_may_be_unix_seconds_or_iso_8601() -> None:
    iso = parse_trace(
        '{"timestamp": "2026-11-30T18:00:00+00:00", "prompt": "a", "output_tokens": 1}\n'
        '{"timestamp": "2026-11-30T18:00:01.5+00:00", "prompt": "b", "output_tokens": 1}\n',
        source="t",
    )
    unix = parse_trace(
        '{"timestamp": 1796061600, "prompt": "a", "output_tokens": 1}\n'
        '{"timestamp": 1796061601.5, "prompt": "b", "output_tokens": 1}\n',
        source="t",
    )
    assert iso.offsets_s() == unix.offsets_s() == [0.0, 1.5]


def test_content_hash_follows_the_requests_not_the_spelling() -> None:
    a = parse_trace(TRACE, source="a")
    spaced = TRACE.replace(", ", ",   ").replace('"t_s": 10.0', '"t_s": 10')
    assert parse_trace(spaced, source="b").content_hash == a.content_hash
    assert parse_trace(TRACE.replace("16", "17"), source="c").content_hash != a.content_hash


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "no requests; write one JSON object per line"),
        ('{"t_s": 0, "prompt": "a"', "line 1: JSON syntax error: Expecting ',' delimiter"),
        ("[1, 2]", "line 1: expected one JSON object per line"),
        ('{"t_s": 0, "prompt": "a", "output_tokens": 1, "model": "x"}',
         "line 1: unknown key 'model'; remove it or fix its spelling (allowed: t_s, "
         "timestamp, prompt, prompt_tokens, output_tokens, session_id)"),
        ('{"prompt": "a", "output_tokens": 1}',
         "line 1: no arrival time; add t_s (seconds) or timestamp"),
        ('{"t_s": -1, "prompt": "a", "output_tokens": 1}',
         "line 1: t_s must be a number of seconds >= 0 (got -1)"),
        ('{"t_s": "soon", "prompt": "a", "output_tokens": 1}',
         "line 1: t_s must be a number of seconds >= 0 (got 'soon')"),
        ('{"timestamp": "yesterday", "prompt": "a", "output_tokens": 1}',
         "line 1: timestamp 'yesterday' is not ISO 8601"),
        ('{"t_s": 0, "prompt": "a", "output_tokens": 1}\n'
         '{"timestamp": 3, "prompt": "a", "output_tokens": 1}',
         "line 2: has timestamp but the trace's first line uses t_s; use one of them "
         "throughout"),
        ('{"t_s": 5, "prompt": "a", "output_tokens": 1}\n\n'
         '{"t_s": 4, "prompt": "a", "output_tokens": 1}',
         "line 3: t_s goes back in time (earlier than the line before); sort the trace by "
         "arrival"),
        ('{"t_s": 0, "output_tokens": 1}',
         "line 1: give exactly one of prompt (text) or prompt_tokens"),
        ('{"t_s": 0, "prompt": "a", "prompt_tokens": 3, "output_tokens": 1}',
         "line 1: give exactly one of prompt (text) or prompt_tokens"),
        ('{"t_s": 0, "prompt": "", "output_tokens": 1}', "line 1: prompt must be non-empty text"),
        ('{"t_s": 0, "prompt_tokens": 0, "output_tokens": 1}',
         "line 1: prompt_tokens must be a whole number >= 1 (got 0)"),
        ('{"t_s": 0, "prompt": "a", "output_tokens": 2.5}',
         "line 1: output_tokens must be a whole number >= 1 (got 2.5)"),
        ('{"t_s": 0, "prompt": "a"}',
         "line 1: output_tokens must be a whole number >= 1 (got None)"),
        ('{"t_s": 0, "prompt": "a", "output_tokens": true}',
         "line 1: output_tokens must be a whole number >= 1 (got True)"),
        ('{"t_s": 0, "prompt": "a", "output_tokens": 1, "session_id": 3}',
         "line 1: session_id must be non-empty text"),
    ],
)  # fmt: skip
def test_bad_lines_fail_in_one_line_naming_the_line(text: str, expected: str) -> None:
    with pytest.raises(WorkloadError) as info:
        parse_trace(text, source="t.jsonl")
    assert str(info.value) == f"trace t.jsonl: {expected}"


def test_load_trace_reads_a_file_and_names_a_missing_one(tmp_path: Path) -> None:
    path = tmp_path / "trace.jsonl"
    path.write_text(TRACE, encoding="utf-8")
    assert len(load_trace(path).requests) == 3
    with pytest.raises(WorkloadError, match="file not found; check the path"):
        load_trace(tmp_path / "nope.jsonl")


def test_filler_is_seeded_and_differs_between_seeds() -> None:
    assert filler_text(50, seed=1) == filler_text(50, seed=1)
    assert filler_text(50, seed=1)[:40] != filler_text(50, seed=2)[:40]
    assert len(filler_text(50, seed=1).split()) == 50


@settings(max_examples=60, deadline=None)
@given(n=st.integers(min_value=1, max_value=400), seed=st.integers(0, 10_000),
       width=st.integers(2, 6))  # fmt: skip
def test_synthesised_prompts_have_exactly_the_asked_token_count(
    n: int, seed: int, width: int
) -> None:
    tok = PieceTokenizer(width)
    text = synthesize_prompt(n, tok.tokenize, tok.detokenize, seed)
    assert len(tok.tokenize(text)) == n


def test_synthesis_refuses_an_empty_prompt_and_a_tokenizer_it_cannot_satisfy() -> None:
    tok = PieceTokenizer()
    with pytest.raises(ValueError, match="at least 1 token"):
        synthesize_prompt(0, tok.tokenize, tok.detokenize, 0)

    def two_per_word(text: str) -> list[int]:  # never an odd count
        return [0, 1] * len(text.split())

    with pytest.raises(ValueError, match="exactly 3 tokens"):
        synthesize_prompt(3, two_per_word, lambda ids: " ".join(["w"] * (len(ids) // 2)), 0)
