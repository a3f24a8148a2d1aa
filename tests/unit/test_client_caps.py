"""What a hostile server can make the client keep is bounded: line length, stored text."""

from __future__ import annotations

from servelab.client.assemble import STORED_TEXT_LIMIT, ResponseAssembler
from servelab.client.sse import ContentDelta, LineSplitter, ToolCallDelta
from servelab.records import Observation, Outcome


def test_a_line_past_the_limit_stops_the_splitter_and_frees_its_buffer() -> None:
    s = LineSplitter(max_line_bytes=100)
    assert s.feed(b"data: ok\n" + b"x" * 60) == ["data: ok"]
    assert s.feed(b"x" * 60) == [] and s.overlong
    assert not s.pending  # nothing of the long line is kept
    assert s.feed(b"\ndata: later\n") == []  # the stream is invalid from here on


def test_a_long_line_inside_one_chunk_is_caught_too() -> None:
    for eol in (b"\n", b"\r\n", b"\r"):
        s = LineSplitter(max_line_bytes=100)
        assert s.feed(b"a" + eol + b"y" * 101 + eol + b"b" + eol) == ["a"]
        assert s.overlong


def test_lines_at_the_limit_pass() -> None:
    s = LineSplitter(max_line_bytes=100)
    assert s.feed(b"z" * 100 + b"\r\n") == ["z" * 100] and not s.overlong


def _reply(pieces: list[str]) -> ResponseAssembler:
    acc = ResponseAssembler()
    for i, piece in enumerate(pieces):
        acc.add([ContentDelta(piece)], 0.1 * i)
    return acc


def _observe(acc: ResponseAssembler) -> Observation:
    return acc.observation(
        outcome=Outcome.OK, wait_s=0, end_s=1, first_byte_s=0.1, http_status=200, error=None,
        invalid_utf8_bytes=0,
    )  # fmt: skip


def test_stored_text_is_capped_and_says_how_long_it_was() -> None:
    piece = "w" * 1000
    n = STORED_TEXT_LIMIT // 1000 + 5
    obs = _observe(_reply([piece] * n))
    assert obs.text == ("w" * (1000 * n))[:STORED_TEXT_LIMIT]
    assert obs.text_chars == 1000 * n and obs.text_truncated
    # every chunk is still timed: the cap is on what is stored, not on what is measured
    assert len(obs.chunk_t_s) == n


def test_text_under_the_cap_is_whole() -> None:
    obs = _observe(_reply(["ab", "cd"]))
    assert obs.text == "abcd" and obs.text_chars == 4
    assert not obs.text_truncated


def test_tool_arguments_are_capped_too() -> None:
    acc = ResponseAssembler()
    for i in range(STORED_TEXT_LIMIT // 1000 + 2):
        acc.add([ToolCallDelta(0, None, "f" if i == 0 else None, "a" * 1000)], 0.1 * i)
    (call,) = acc.tool_calls()
    assert len(call.arguments) == STORED_TEXT_LIMIT and acc.text_truncated
