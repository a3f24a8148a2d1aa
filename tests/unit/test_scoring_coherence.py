"""Coherence flags: mojibake never fires on real accented text and always on UTF-8 read as
Latin-1/cp1252, repetition thresholds, truncation, template leaks, language."""

# ruff: noqa: RUF001  (CJK punctuation and typographic quotes are the test data)

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from servelab.scoring.coherence import (
    _TOKEN,
    find_loop,
    mojibake,
    repair_mojibake,
    score_coherence,
)


def _kinds(text: str, lang: str | None = None, **row: Any) -> list[str]:
    limit = row.pop("limit", None)
    result = score_coherence({"text": text, **row}, lang=lang, max_tokens=limit)
    return [f["kind"] for f in result["flags"]]


def test_mojibake_repairs_what_it_finds() -> None:
    assert mojibake("cafÃ© au lait") == [("Ã©", "é")]
    assert repair_mojibake("ä»Šå¤©å¾ˆå¥½") == "今天很好"  # cp1252 reading of 今天很好
    assert mojibake("it’s “fine”, naïve, Größe, jalapeño, 50°C ± 2") == []


@settings(max_examples=200, deadline=None)
@given(
    st.text(
        st.characters(min_codepoint=0x80, max_codepoint=0x2FFFF, exclude_categories=("Cs",)),
        min_size=1,
        max_size=8,
    ),
    st.sampled_from(["latin-1", "cp1252"]),
)
def test_utf8_read_as_latin1_is_always_mojibake(original: str, codec: str) -> None:
    garbled = original.encode("utf-8").decode(codec, errors="ignore")
    if codec == "cp1252" and garbled.encode(codec) != original.encode("utf-8"):
        return  # cp1252 dropped undefined bytes: not a faithful reading, not this property
    assert mojibake("x " + garbled + " y"), garbled
    assert repair_mojibake(garbled) == original


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from(["é", "ü", "ñ", "ß", "ç", "’", "—", "°", "a", "b", " "]), max_size=30)
)
def test_single_accented_letters_between_ascii_are_not_mojibake(parts: list[str]) -> None:
    text = "".join(f"{p}a" for p in parts)  # an ASCII letter after every character
    assert mojibake(text) == []


def test_loops_need_more_repeats_for_shorter_units() -> None:
    assert find_loop(_TOKEN.findall("no " * 15)) is None
    assert find_loop(_TOKEN.findall("no " * 16)) == (["no"], 16)
    assert find_loop(_TOKEN.findall("I love you. " * 3)) is None
    assert find_loop(_TOKEN.findall("I love you. " * 4)) == (["I", "love", "you", "."], 4)
    assert find_loop(_TOKEN.findall("哈" * 12)) is None  # laughter, and "哈哈" is not a new unit


def test_a_loop_is_reported_from_its_start() -> None:
    tokens = _TOKEN.findall("Sure! " + "好的，" * 6)
    assert find_loop(tokens) == (["好", "的", "，"], 6)


def test_empty_unless_a_tool_was_called() -> None:
    assert _kinds("") == ["empty"]
    assert _kinds("", tool_calls=[{"name": "get_time", "arguments": "{}"}]) == []


def test_truncation_by_finish_reason_or_by_count() -> None:
    assert _kinds("cut", finish_reason="length") == ["truncated_max_tokens"]
    assert _kinds("cut", finish_reason=None, n_out=64, limit=64) == ["truncated_max_tokens"]
    assert _kinds("fine", finish_reason="stop", n_out=63, limit=64) == []
    assert _kinds("fine", finish_reason=None, n_out=64) == []  # no limit known


@pytest.mark.parametrize(
    "leak",
    ["<|im_start|>", "<|eot_id|>", "<|end|>", "<start_of_turn>", "</s>", "[INST]", "<<SYS>>"],
)
def test_template_tokens(leak: str) -> None:
    assert _kinds(f"Sure thing. {leak}") == ["leaked_template"]


def test_ordinary_angle_brackets_are_not_template_tokens() -> None:
    assert _kinds("Use <b>bold</b> or a < b > c.") == []


def test_reasoning_markers() -> None:
    assert _kinds("<think>hmm</think>Hi") == ["leaked_reasoning"]


@pytest.mark.parametrize(
    ("text", "lang", "flagged"),
    [
        ("今天天氣很好，適合出門走走。", "zh-TW", False),
        ("好的，為你播放 Taylor Swift 的歌。", "zh-TW", False),
        ("The weather is nice today.", "zh-TW", True),
        ("今日はいい天気ですね。", "zh-TW", True),
        ("今天天氣很好，適合出門走走。", "en", True),
        ("Погода сегодня хорошая.", "en", True),
        ("It is sunny and warm today.", "en", False),
        ("OK", "zh-TW", False),  # too short to judge
        ("Whatever the language.", "tlh", False),  # unknown language: no verdict
        ("Whatever the language.", None, False),
    ],
)
def test_language(text: str, lang: str | None, flagged: bool) -> None:
    assert ("wrong_language" in _kinds(text, lang)) is flagged
