"""Tests for the pure SSE decoding path: bytes -> lines -> typed events.

The recorded stream in tests/fixtures/streams/ is a golden file: real llama-server output with
``timings_per_token`` on. Every test feeds bytes through the real ``LineSplitter`` and
``SSEParser``; nothing here is faked.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from servelab.client.assemble import ResponseAssembler
from servelab.client.sse import (
    REPLACEMENT,
    ContentDelta,
    Done,
    Event,
    Finish,
    LineSplitter,
    Malformed,
    ReasoningDelta,
    SSEParser,
    StreamError,
    Timings,
    ToolCallDelta,
    UsageReport,
    chunk_events,
    decode_utf8,
)
from servelab.records import Outcome, ToolCall, Usage

FIXTURE = Path(__file__).parents[1] / "fixtures" / "streams" / "llamacpp_chat_length.sse"
RECORDED = FIXTURE.read_bytes()
RECORDED_TEXT = "The AI designed to facilitate conversations with a friendly and friendly tone"
RECORDED_PIECES = [
    "The", " AI", " designed", " to", " facilitate", " conversations",
    " with", " a", " friendly", " and", " friendly", " tone",
]  # fmt: skip


@dataclass
class Parsed:
    """Events grouped per SSE message (one group = one arrival), plus the decoders' state."""

    groups: list[list[Event]]
    splitter: LineSplitter
    parser: SSEParser

    @property
    def events(self) -> list[Event]:
        return [e for g in self.groups for e in g]


def parse(chunks: Iterable[bytes], *, end: bool = True) -> Parsed:
    """Feed ``chunks`` as a network would deliver them; ``end`` runs the end-of-stream path."""
    splitter, parser = LineSplitter(), SSEParser()
    groups: list[list[Event]] = []

    def line(text: str) -> None:
        events = parser.feed_line(text)
        if events:
            groups.append(events)

    for chunk in chunks:
        for text in splitter.feed(chunk):
            line(text)
    if end:
        for text in splitter.flush():
            line(text)
        if tail := parser.finish():
            groups.append(tail)
    return Parsed(groups, splitter, parser)


def split_at(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    points = [0, *sorted(set(cuts)), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(points)]


def sse(*objs: dict[str, Any] | str, done: bool = True) -> bytes:
    """An SSE body with one ``data:`` message per object (a str is sent verbatim)."""
    out = b""
    for obj in objs:
        data = obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False)
        out += b"data: " + data.encode("utf-8") + b"\n\n"
    return out + (b"data: [DONE]\n\n" if done else b"")


def content_chunk(text: str) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}


def assemble(groups: list[list[Event]]) -> ResponseAssembler:
    acc = ResponseAssembler()
    for i, group in enumerate(groups):
        acc.add(group, 0.01 * (i + 1))
    return acc


cut_lists = st.lists(st.integers(min_value=0, max_value=len(RECORDED)), max_size=40)


# --- the recorded stream (golden) -------------------------------------------------------------


def test_recorded_stream_known_events() -> None:
    parsed = parse([RECORDED])
    groups = parsed.groups
    # 12 token messages (content + per-token timings), finish, usage (+ final timings), [DONE];
    # the first message (role only, content null) carries no event.
    assert len(groups) == 15
    for piece, group in zip(RECORDED_PIECES, groups[:12], strict=True):
        assert group[0] == ContentDelta(piece)
        assert isinstance(group[1], Timings)
        assert len(group) == 2
    predicted = [g[1].timings["predicted_n"] for g in groups[:12] if isinstance(g[1], Timings)]
    assert predicted == list(range(1, 13))
    assert groups[12] == [Finish("length")]
    usage, timings = groups[13]
    assert usage == UsageReport(Usage(prompt_tokens=36, completion_tokens=12))
    assert isinstance(timings, Timings)
    assert timings.timings["predicted_n"] == 12
    assert timings.timings["prompt_ms"] == 141.897
    assert groups[14] == [Done()]
    assert "".join(e.text for e in parsed.events if isinstance(e, ContentDelta)) == RECORDED_TEXT
    assert parsed.parser.saw_done
    assert parsed.splitter.invalid_bytes == 0
    assert not parsed.splitter.pending
    assert not parsed.parser.in_message


def test_recorded_stream_one_byte_at_a_time() -> None:
    whole = parse([RECORDED]).groups
    assert parse([RECORDED[i : i + 1] for i in range(len(RECORDED))]).groups == whole


@settings(deadline=None)
@given(cuts=cut_lists)
def test_recorded_stream_split_anywhere_gives_same_events(cuts: list[int]) -> None:
    whole = parse([RECORDED])
    split = parse(split_at(RECORDED, cuts))
    assert split.groups == whole.groups
    assert split.parser.saw_done
    assert split.splitter.invalid_bytes == 0


@settings(deadline=None)
@given(ending=st.sampled_from([b"\r\n", b"\r"]), cuts=cut_lists)
def test_recorded_stream_with_crlf_or_cr_endings(ending: bytes, cuts: list[int]) -> None:
    converted = RECORDED.replace(b"\n", ending)
    cuts = [c * len(converted) // len(RECORDED) for c in cuts]
    assert parse(split_at(converted, cuts)).events == parse([RECORDED]).events


# --- multibyte UTF-8 split across chunks ------------------------------------------------------


@pytest.mark.parametrize(("char", "width"), [("é", 2), ("台", 3), ("😀", 4)])
def test_multibyte_char_survives_a_split_at_every_byte_offset(char: str, width: int) -> None:
    assert len(char.encode("utf-8")) == width
    body = sse(content_chunk(f"a{char}b"))
    start = body.index(char.encode("utf-8"))
    for cut in range(1, len(body)):
        parsed = parse([body[:cut], body[cut:]])
        assert parsed.events == [ContentDelta(f"a{char}b"), Done()], cut
        assert parsed.splitter.invalid_bytes == 0, cut
    # and cut inside the character into single bytes
    pieces = [body[:start], *(body[i : i + 1] for i in range(start, start + width))]
    pieces.append(body[start + width :])
    assert parse(pieces).events == [ContentDelta(f"a{char}b"), Done()]


@settings(deadline=None)
@given(
    text=st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=40),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=12),
)
def test_any_text_survives_any_split(text: str, cuts: list[int]) -> None:
    body = sse(content_chunk(text), {"choices": [{"delta": {}, "finish_reason": "stop"}]})
    parsed = parse(split_at(body, [c for c in cuts if c <= len(body)]))
    deltas = [e for e in parsed.events if isinstance(e, ContentDelta)]
    assert deltas == [ContentDelta(text)]
    assert parsed.splitter.invalid_bytes == 0
    assert parsed.events[-2:] == [Finish("stop"), Done()]


# --- line endings -----------------------------------------------------------------------------


def test_line_splitter_known_endings() -> None:
    s = LineSplitter()
    assert s.feed(b"a\r\nb\rc\n\n") == ["a", "b", "c", ""]
    assert not s.pending


def test_cr_at_end_of_chunk_then_lf_is_one_line_break() -> None:
    s = LineSplitter()
    assert s.feed(b"data: x\r") == ["data: x"]  # the line ends at once, stamped on time
    assert not s.pending
    assert s.feed(b"\ndata: y\r\n") == ["data: y"]  # the LF of that CRLF is skipped
    assert not s.pending


def test_cr_at_end_of_chunk_then_other_byte_ends_the_line() -> None:
    s = LineSplitter()
    assert s.feed(b"x\r") == ["x"]
    assert s.feed(b"y\n") == ["y"]
    assert s.feed(b"\r") == [""]
    assert s.feed(b"\r") == [""]  # CR CR is two line ends: two empty lines


def test_crlf_split_between_messages_dispatches_once() -> None:
    body = sse(content_chunk("hi"), done=False).replace(b"\n", b"\r\n")
    # cut between every CR and its LF
    pieces = body.split(b"\n")
    chunks = [pieces[0], *(b"\n" + p for p in pieces[1:])]
    assert b"".join(chunks) == body
    assert all(c.endswith(b"\r") for c in chunks[:-1])
    parsed = parse(chunks)
    assert parsed.groups == [[ContentDelta("hi")]]


@settings(deadline=None)
@given(
    lines=st.lists(
        st.tuples(
            st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=8),
            st.sampled_from(["\n", "\r\n", "\r"]),
        ),
        min_size=1,
        max_size=12,
    ),
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=10),
)
def test_line_splitter_returns_each_line_whatever_the_chunks(
    lines: list[tuple[str, str]], cuts: list[int]
) -> None:
    # The last line ends with LF so nothing is held back at the end. A CR followed by an empty
    # LF-terminated line is, by the SSE rule, a single CRLF: keep the input unambiguous.
    lines = [*lines[:-1], (lines[-1][0], "\n")]
    assume(
        not any(
            end == "\r" and nxt == "" and nxt_end.startswith("\n")
            for (_, end), (nxt, nxt_end) in itertools.pairwise(lines)
        )
    )
    data = "".join(text + end for text, end in lines).encode("utf-8")
    s = LineSplitter()
    out: list[str] = []
    for chunk in split_at(data, [c for c in cuts if c <= len(data)]):
        out.extend(s.feed(chunk))
    assert out == [text for text, _ in lines]
    assert s.flush() == []
    assert s.invalid_bytes == 0


def test_flush_returns_an_unterminated_last_line() -> None:
    s = LineSplitter()
    assert s.feed(b"a\nb") == ["a"]
    assert s.pending
    assert s.flush() == ["b"]
    assert not s.pending
    assert s.flush() == []
    assert s.feed(b"c\r") == ["c"]
    assert s.flush() == []


def test_cr_terminated_message_is_dispatched_when_its_chunk_arrives() -> None:
    s, parser = LineSplitter(), SSEParser()
    body = sse(content_chunk("x"), done=False).replace(b"\n", b"\r")
    events = [e for line in s.feed(body) for e in parser.feed_line(line)]
    assert events == [ContentDelta("x")]


# --- invalid UTF-8 ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "text", "invalid"),
    [
        (b"plain", "plain", 0),
        ("台😀".encode(), "台😀", 0),
        (b"a\xffb", f"a{REPLACEMENT}b", 1),
        (b"\xff\xfe", REPLACEMENT * 2, 2),
        (b"x\xe5\x8f", f"x{REPLACEMENT}", 2),  # a 3-byte character cut after two bytes
        (b"\xe5\x8fx", f"{REPLACEMENT}x", 2),
        (b"\xed\xa0\x80", REPLACEMENT * 3, 3),  # an encoded surrogate is not UTF-8
        (REPLACEMENT.encode(), REPLACEMENT, 0),  # a U+FFFD the server sent is not counted
        (b"", "", 0),
    ],
)
def test_decode_utf8_known_answers(raw: bytes, text: str, invalid: int) -> None:
    assert decode_utf8(raw) == (text, invalid)


@settings(deadline=None)
@given(st.binary(max_size=64))
def test_decode_utf8_matches_python_replace_and_counts_every_invalid_byte(raw: bytes) -> None:
    text, invalid = decode_utf8(raw)
    assert text == raw.decode("utf-8", "replace")
    valid = True
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        valid = False
    assert (invalid == 0) == valid
    if REPLACEMENT.encode() not in raw:
        # every byte is either decoded into a real character or counted as invalid
        assert len(text.replace(REPLACEMENT, "").encode("utf-8")) + invalid == len(raw)


def test_invalid_bytes_in_content_are_counted_and_replaced() -> None:
    body = b'data: {"choices":[{"delta":{"content":"a\xffb\xe5\x8f"}}]}\n\n'
    parsed = parse(split_at(body, [40, 41]))
    assert parsed.events == [ContentDelta(f"a{REPLACEMENT}b{REPLACEMENT}")]
    assert parsed.splitter.invalid_bytes == 3


def test_invalid_bytes_accumulate_over_lines() -> None:
    s = LineSplitter()
    s.feed(b"\xff\n")
    s.feed(b"ok\n\xc3")
    assert s.invalid_bytes == 1
    assert s.flush() == [REPLACEMENT]  # a lone lead byte at the end of the stream
    assert s.invalid_bytes == 2


# --- SSE framing ------------------------------------------------------------------------------


def test_comment_lines_and_unknown_fields_are_ignored() -> None:
    body = (
        b": keep-alive\n\n"
        b'id: 7\nretry: 100\n: a comment inside a message\ndata: {"choices":[{"delta":'
        b'{"content":"x"}}]}\nfoo: bar\n\n'
    )
    assert parse([body]).groups == [[ContentDelta("x")]]


def test_data_field_forms() -> None:
    parser = SSEParser()
    assert parser.feed_line('data:{"choices":[{"delta":{"content":"a"}}]}') == []
    assert parser.in_message
    assert parser.feed_line("") == [ContentDelta("a")]
    assert not parser.in_message
    # "data" with no colon is an empty data line; multi-line data is joined with LF
    for line in ['data: {"choices":', "data", 'data: [{"delta":{"content":"b"}}]}']:
        assert parser.feed_line(line) == []
    assert parser.feed_line("") == [ContentDelta("b")]


def test_blank_lines_without_data_dispatch_nothing() -> None:
    parser = SSEParser()
    assert parser.feed_line("") == []
    assert parser.feed_line("event: error") == []
    assert parser.feed_line("") == []  # no data: the event type is discarded too
    assert parser.feed_line('data: {"choices":[{"delta":{"content":"z"}}]}') == []
    assert parser.feed_line("") == [ContentDelta("z")]


def test_done_sentinel() -> None:
    parser = SSEParser()
    parser.feed_line("data: [DONE] ")
    assert parser.feed_line("") == [Done()]
    assert parser.saw_done


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ("not json", "not JSON"),
        ("{'single': 'quotes'}", "not JSON"),
        ('{"choices": [', "not JSON"),
        ("[1, 2]", "not an object"),
        ('"a string"', "not an object"),
        ("42", "not an object"),
        ("null", "not an object"),
        ('{"choices": {"0": {"delta": {"content": "x"}}}}', "'choices' is not a list"),
        ('{"choices": "abc"}', "'choices' is not a list"),
        ('{"choices": [1]}', "a choice is not an object"),
        ('{"choices": [{"delta": {"tool_calls": [7]}}]}', "tool_calls entry is not an object"),
        ('{"choices": [{"delta": {"tool_calls": [{"function": 3}]}}]}', "'function'"),
    ],
)
def test_malformed_messages(data: str, needle: str) -> None:
    parsed = parse([f"data: {data}\n\n".encode()])
    malformed = [e for e in parsed.events if isinstance(e, Malformed)]
    assert len(malformed) == 1
    assert needle in malformed[0].reason
    assert not any(isinstance(e, ContentDelta) for e in parsed.events)
    acc = assemble(parsed.groups)
    assert acc.failed
    assert acc.outcome(stream_closed_cleanly=True)[0] is Outcome.INVALID_STREAM


def test_empty_object_choices_is_malformed() -> None:
    assert chunk_events({"choices": {}}) == [Malformed("'choices' is not a list")]


@pytest.mark.parametrize(
    "obj",
    [
        {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": None}},
        {"choices": [], "usage": {"completion_tokens": "many"}},
        {"choices": [{"delta": {"tool_calls": 5}}]},
        {"choices": [{"delta": {"tool_calls": [{"index": None, "function": {"name": "f"}}]}}]},
    ],
)
def test_wrongly_typed_fields_are_malformed_not_exceptions(obj: dict[str, Any]) -> None:
    events = chunk_events(obj)
    assert any(isinstance(e, Malformed) for e in events)


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (["event: error", 'data: {"message": "slot unavailable"}'], "slot unavailable"),
        (['data: {"error": {"code": 500, "message": "context overflow"}}'], "context overflow"),
        (['data: {"error": "plain text error"}'], "plain text error"),
        (['data: {"error": {"code": 503}}'], '{"code": 503}'),
    ],
)
def test_error_events(lines: list[str], message: str) -> None:
    parser = SSEParser()
    for line in lines:
        assert parser.feed_line(line) == []
    assert parser.feed_line("") == [StreamError(message)]
    # the event type does not leak into the next message
    parser.feed_line('data: {"choices":[{"delta":{"content":"ok"}}]}')
    assert parser.feed_line("") == [ContentDelta("ok")]


def test_error_in_stream_makes_the_outcome_an_error() -> None:
    body = sse(content_chunk("par"), {"error": {"message": "boom"}}, done=False)
    acc = assemble(parse([body]).groups)
    outcome, detail = acc.outcome(stream_closed_cleanly=True)
    assert outcome is Outcome.HTTP_ERROR
    assert detail is not None
    assert "boom" in detail


# --- chunk objects ----------------------------------------------------------------------------


def test_chunk_events_known_answers() -> None:
    obj = {
        "choices": [
            {"delta": {"reasoning_content": "hmm", "content": "Hi"}, "finish_reason": "stop"},
            {"delta": {"content": "second choice is ignored"}},
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2},
        "timings": {"predicted_n": 2},
    }
    assert chunk_events(obj) == [
        ReasoningDelta("hmm"),
        ContentDelta("Hi"),
        Finish("stop"),
        UsageReport(Usage(prompt_tokens=5, completion_tokens=2)),
        Timings({"predicted_n": 2}),
    ]


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        ({"choices": [{"text": "abc", "finish_reason": None}]}, [ContentDelta("abc")]),
        ({"choices": [{"delta": {"reasoning": "r"}}]}, [ReasoningDelta("r")]),
        ({"choices": [{"delta": {"content": "", "role": "assistant"}}]}, []),
        ({"choices": [{"delta": {"content": None}, "finish_reason": ""}]}, []),
        ({"choices": []}, []),
        ({"choices": None}, []),
        ({}, []),
        ({"usage": {"prompt_tokens": 5}}, []),  # no completion count: not a usage report
        ({"usage": {"completion_tokens": 4}}, [UsageReport(Usage(0, 4))]),
        ({"timings": "nope"}, []),
    ],
)
def test_chunk_events_edge_shapes(obj: dict[str, Any], expected: list[Event]) -> None:
    assert chunk_events(obj) == expected


def test_tool_call_delta_fields() -> None:
    obj = {
        "choices": [
            {
                "delta": {
                    "tool_calls": [
                        {"index": 1, "id": "c1", "function": {"name": "f", "arguments": "{"}},
                        {"function": {"arguments": "}"}, "id": 9},
                    ]
                }
            }
        ]
    }
    assert chunk_events(obj) == [
        ToolCallDelta(index=1, id="c1", name="f", arguments="{"),
        ToolCallDelta(index=0, id=None, name=None, arguments="}"),
    ]


# --- end of stream ----------------------------------------------------------------------------


def test_missing_done_is_noted_but_the_response_is_ok() -> None:
    without_done = RECORDED.replace(b"data: [DONE]\n\n", b"")
    assert len(without_done) < len(RECORDED)
    parsed = parse([without_done])
    assert not parsed.parser.saw_done
    assert parsed.events == parse([RECORDED]).events[:-1]
    acc = assemble(parsed.groups)
    assert not acc.saw_done
    assert acc.outcome(stream_closed_cleanly=True) == (Outcome.OK, None)


def test_stream_cut_mid_event_is_recovered_by_flush_and_finish() -> None:
    body = sse(content_chunk("a"), done=False) + b'data: {"choices":[{"delta":{"content":"b"}}]}'
    parsed = parse([body], end=False)
    assert parsed.events == [ContentDelta("a")]
    assert parsed.splitter.pending
    lines = parsed.splitter.flush()
    assert lines == ['data: {"choices":[{"delta":{"content":"b"}}]}']
    assert parsed.parser.feed_line(lines[0]) == []
    assert parsed.parser.in_message
    assert parsed.parser.finish() == [ContentDelta("b")]
    assert parsed.parser.finish() == []


def test_stream_cut_after_a_data_line_without_blank_line() -> None:
    body = sse(content_chunk("a"), done=False) + b'data: {"choices":[{"delta":{"content":"b"}}]}\n'
    assert parse([body]).groups == [[ContentDelta("a")], [ContentDelta("b")]]


def test_stream_cut_before_finish_reason_is_truncated() -> None:
    cut = RECORDED[: RECORDED.index(b'"finish_reason":"length"')]
    cut = cut[: cut.rindex(b"\n\n") + 2]  # at a message boundary, before the finish message
    parsed = parse([cut])
    acc = assemble(parsed.groups)
    assert acc.finish_reason is None
    assert acc.text == RECORDED_PIECES
    for cleanly, word in [(True, "closed"), (False, "cut")]:
        outcome, detail = acc.outcome(stream_closed_cleanly=cleanly)
        assert outcome is Outcome.TRUNCATED_STREAM
        assert detail is not None
        assert word in detail


@settings(deadline=None)
@given(cut=st.integers(min_value=1, max_value=len(RECORDED) - 1))
def test_stream_cut_anywhere_before_finish_is_never_ok(cut: int) -> None:
    finish_at = RECORDED.index(b'"finish_reason":"length"')
    data = RECORDED[: min(cut, finish_at)]
    acc = assemble(parse([data]).groups)
    outcome, _ = acc.outcome(stream_closed_cleanly=True)
    assert outcome in (Outcome.TRUNCATED_STREAM, Outcome.INVALID_STREAM)


# --- tool calls -------------------------------------------------------------------------------


def tool_chunk(
    index: int, *, call_id: str | None = None, name: str | None = None, args: str = ""
) -> dict[str, Any]:
    fn: dict[str, Any] = {"arguments": args}
    if name is not None:
        fn["name"] = name
    call: dict[str, Any] = {"index": index, "type": "function", "function": fn}
    if call_id is not None:
        call["id"] = call_id
    return {"choices": [{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": None}]}


TOOL_STREAM = sse(
    {"choices": [{"delta": {"role": "assistant", "content": None}}]},
    tool_chunk(0, call_id="call_a", name="get_weather"),
    tool_chunk(0, args='{"loc'),
    tool_chunk(0, args='ation": "台'),
    tool_chunk(0, args='北", "unit": "celsius"}'),
    tool_chunk(1, call_id="call_b", name="set_timer", args='{"duration_'),
    tool_chunk(1, args='seconds": 300}'),
    {"choices": [{"delta": {}, "finish_reason": "tool_calls"}]},
)


@settings(deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=len(TOOL_STREAM)), max_size=30))
def test_tool_call_deltas_split_across_chunks_are_reassembled(cuts: list[int]) -> None:
    parsed = parse(split_at(TOOL_STREAM, cuts))
    acc = assemble(parsed.groups)
    calls = acc.tool_calls()
    assert calls == (
        ToolCall(0, "get_weather", '{"location": "台北", "unit": "celsius"}', "call_a"),
        ToolCall(1, "set_timer", '{"duration_seconds": 300}', "call_b"),
    )
    assert json.loads(calls[0].arguments) == {"location": "台北", "unit": "celsius"}
    assert acc.finish_reason == "tool_calls"
    assert acc.outcome(stream_closed_cleanly=True) == (Outcome.OK, None)
    assert parsed.splitter.invalid_bytes == 0
