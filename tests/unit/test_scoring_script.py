"""Chinese script purity: known answers, the character rules against OpenCC itself, the Taiwan
allowance, and properties over the built-in zh-TW prompts."""

# ruff: noqa: RUF001  (CJK punctuation and typographic quotes are the test data)

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from servelab.scoring.script import (
    TW_ALLOWANCE,
    after_s2tw,
    char_kinds,
    classify,
    convert,
    score_script,
    script_target,
)
from servelab.workloads import load_workload

ZH_TW_PROMPTS = [
    item.messages[0].content
    for item in load_workload("chat-tools").prompts
    if item.lang == "zh-TW" and item.messages
]


def _kinds(text: str) -> dict[str, str]:
    return {char: kind for char, kind, _ in char_kinds(text)}


def test_taiwan_standard_characters_are_never_simplified() -> None:
    # OpenCC's own Traditional standard writes 羣 牀 喫 峯 祕: judged with s2t/t2s alone,
    # these everyday zh-TW characters would look Simplified.
    assert convert("群床吃峰秘", "s2t") == "羣牀喫峯祕"
    kinds = _kinds("一群人在床邊吃東西，看山峰的祕密")
    assert {kinds[c] for c in "群床吃峰"} == {"neutral"}


def test_zhe_is_a_simplified_leak_and_zhu_is_traditional() -> None:
    # s2t/t2s both leave 着 alone; only the Taiwan round trip (s2tw writes 著) catches it.
    assert convert("着", "s2t") == "着" and convert("着", "t2s") == "着"
    assert _kinds("看着")["着"] == "simplified"
    assert _kinds("看著")["著"] == "traditional"
    assert _kinds("著名")["著"] == "neutral"  # 著名 is written the same in both scripts


def test_shared_characters_follow_their_context() -> None:
    assert _kinds("皇后")["后"] == "neutral"
    assert _kinds("之后")["后"] == "simplified"
    assert _kinds("干擾")["干"] == "neutral"
    assert _kinds("乾淨")["乾"] == "traditional"
    assert _kinds("這裡")["裡"] == "traditional"
    assert _kinds("这里")["里"] == "simplified"


def test_opencc_standard_forms_are_variants_not_simplified() -> None:
    verdict = classify("爲什麼裏面有衆人")
    assert verdict["class"] == "traditional"
    assert set(verdict["evidence"]["variant"]) == {"爲", "裏", "衆"}
    assert verdict["evidence"]["taiwan_form"] == {"爲": "為", "裏": "裡", "衆": "眾"}


@pytest.mark.parametrize("char", sorted(TW_ALLOWANCE))
def test_every_allowance_is_needed_and_applied(char: str) -> None:
    phrases = {"台": "台灣", "污": "污染", "泄": "排泄", "岳": "山岳"}
    text = phrases[char]
    # Without the allowance the round trip would call it Simplified...
    assert convert(convert(text, "t2s"), "s2tw") != text
    # ...with it, the character is listed as allowed and the reply stays Traditional-clean.
    verdict = classify(text + "很好")
    assert verdict["evidence"]["allowed"] == {char: 1}
    assert verdict["class"] in ("traditional", "neutral")


def test_tai_as_a_measure_word_in_zh_tw() -> None:
    verdict = classify("我想買一台新的筆電")
    assert verdict["class"] == "traditional"
    assert verdict["evidence"]["allowed"] == {"台": 1}
    assert verdict["evidence"]["simplified"] == {}


def test_evidence_counts_and_lists_only_characters_of_the_text() -> None:
    text = "我們说说話，谢谢"
    verdict = classify(text)
    assert verdict["class"] == "mixed"
    evidence = verdict["evidence"]
    assert evidence["simplified"] == {"说": 2, "谢": 2}
    assert evidence["traditional"] == {"們": 1, "話": 1}
    assert evidence["han"] == 7 and evidence["neutral"] == 1
    listed = {
        c for kind in ("traditional", "simplified", "variant", "allowed") for c in evidence[kind]
    }
    assert listed <= set(text)


def test_classes_at_the_edges() -> None:
    assert classify("")["class"] == "none"
    assert classify("Hello, 123!")["class"] == "none"
    assert classify("你好")["class"] == "neutral"
    assert classify("说话")["class"] == "simplified"
    assert classify("說話")["class"] == "traditional"


def test_after_s2tw_fixes_leaks_and_reports_over_conversion() -> None:
    assert after_s2tw("他們说话")["class"] == "traditional"
    fixed = after_s2tw("不要干擾别人")
    assert fixed["over_converted"] == {"干": "幹"}
    assert fixed["changed"] == 2


def test_score_script_applies_to_chinese_prompts_and_han_replies() -> None:
    assert score_script("Hello there", "en") is None
    assert score_script("", "zh-TW") is None  # a tool call alone has no script
    english = score_script("Hello there", "zh-TW")
    assert english is not None and english["class"] == "none"
    assert english["target"] == "traditional"
    chinese = score_script("你好", "en")
    assert chinese is not None and chinese["target"] is None


@pytest.mark.parametrize(
    ("lang", "target"),
    [
        ("zh-TW", "traditional"),
        ("zh-Hant", "traditional"),
        ("zh-Hant-HK", "traditional"),
        ("zh-CN", "simplified"),
        ("zh-Hans", "simplified"),
        ("zh", None),
        ("en", None),
        (None, None),
    ],
)
def test_script_target(lang: str | None, target: str | None) -> None:
    assert script_target(lang) == target


@pytest.mark.parametrize("prompt", ZH_TW_PROMPTS)
def test_genuine_zh_tw_reads_as_traditional(prompt: str) -> None:
    assert classify(prompt)["class"] in ("traditional", "neutral")
    simplified = convert(prompt, "t2s")
    assert classify(simplified)["class"] in ("simplified", "neutral")
    assert classify(convert(simplified, "s2tw"))["class"] in ("traditional", "neutral")


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(ZH_TW_PROMPTS), min_size=1, max_size=3), st.data())
def test_any_simplified_leak_into_zh_tw_makes_it_mixed(
    parts: list[str], data: st.DataObject
) -> None:
    text = "".join(parts)
    # Not 么: it is also Taiwan's form of yāo (s2tw writes 幺 -> 么), so next to 麼 OpenCC's
    # context may read it as Traditional.
    leak = data.draw(st.sampled_from("说们这为发过对时间开关"))
    position = data.draw(st.integers(0, len(text)))
    verdict = classify(text[:position] + leak + text[position:])
    assert verdict["class"] == "mixed"
    assert leak in verdict["evidence"]["simplified"]
    assert after_s2tw(text + leak)["class"] == "traditional"
