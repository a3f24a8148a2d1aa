"""Chinese script purity: is a reply written in Taiwan Traditional, Simplified, or a mix?

Owns the per-character classification (docs/quality.md explains each rule with the evidence
behind it), the Taiwan-usage allowance table ``TW_ALLOWANCE``, the reply-level verdict
(``traditional``, ``simplified``, ``mixed``, ``neutral``, ``none``) with the characters behind
it, and the post-processing check: the verdict after an OpenCC ``s2tw`` conversion.

The classification is a round trip through OpenCC, never a hand-made character list: the text
is taken to Simplified with ``t2s`` (phrase-aware, keyed by Traditional) and back with ``s2tw``
(keyed by Simplified, then Taiwan variants). A character that ``s2tw`` writes differently from
the reply is not the Taiwan form *in this context*; whether it is a Simplified form or another
Traditional variant depends on whether ``t2s`` changed it. ``s2t``/``t2s`` alone would call
群, 床, 吃, 峰 Simplified (OpenCC's own standard writes 羣, 牀, 喫, 峯) and miss 着.

Pure: OpenCC reads its own dictionaries once per converter when first used (inside the opencc
package); this module opens no file itself, speaks no HTTP and aggregates nothing.
"""

from __future__ import annotations

import re
from collections import Counter
from functools import cache
from typing import Any, Literal, TypedDict

import opencc  # type: ignore[import-untyped,unused-ignore]

ScriptClass = Literal["traditional", "simplified", "mixed", "neutral", "none"]
CharKind = Literal["traditional", "simplified", "variant", "allowed", "neutral"]


class ScriptEvidence(TypedDict):
    """The characters behind a script verdict (``{char: count}`` per kind)."""

    han: int
    traditional: dict[str, int]
    simplified: dict[str, int]
    variant: dict[str, int]
    allowed: dict[str, int]
    neutral: int
    taiwan_form: dict[str, str]


# "class" is a Python keyword: these records use the functional TypedDict form.
Classification = TypedDict("Classification", {"class": ScriptClass, "evidence": ScriptEvidence})
AfterS2tw = TypedDict(
    "AfterS2tw", {"class": ScriptClass, "changed": int, "over_converted": dict[str, str]}
)
ScriptScore = TypedDict(
    "ScriptScore",
    {
        "target": Literal["traditional", "simplified"] | None,
        "class": ScriptClass,
        "evidence": ScriptEvidence,
        "after_s2t": AfterS2tw,
    },
)

_HAN = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]")

TW_ALLOWANCE: dict[str, str] = {
    "台": "the everyday and widely official zh-TW form of 臺 (台灣, 台北, 一台電腦); "
    "t2s/s2tw treat it as the Simplified form",
    "污": "standard in Taiwan law and usage (空氣污染防制法); s2tw prefers the variant 汙",
    "泄": "the Ministry of Education dictionary's form in 排泄; s2tw writes 洩 everywhere",
    "岳": "a standard zh-TW character (岳父, 山岳); s2tw's phrase table turns 山岳 into 山嶽",
}
"""Characters that are accepted zh-TW forms although the round trip flags them as Simplified.

Deliberately *not* allowed: 着. Taiwan writes 著 for zhe/zhuó/zháo (看著, 著急); 着 is the
mainland form and is not even encodable in Big5, so it counts as Simplified.
"""

TAIWAN_CONFIG = "s2tw"  # what users run to fix a leak: Simplified -> Taiwan Traditional


@cache
def _converter(config: str) -> Any:
    return opencc.OpenCC(config)


def convert(text: str, config: str) -> str:
    """``text`` through the OpenCC ``config`` (``t2s``, ``tw2s``, ``s2tw``...)."""
    return str(_converter(config).convert(text))


def _aligned(text: str, config: str) -> str:
    """The conversion, one output character per input character (per character if a phrase
    changed the length, which the character-level comparison cannot use)."""
    out = convert(text, config)
    if len(out) == len(text):
        return out
    singles = (convert(c, config) for c in text)
    return "".join(s if len(s) == 1 else c for s, c in zip(singles, text, strict=True))


def char_kinds(text: str) -> list[tuple[str, CharKind, str]]:
    """Every Han character of ``text`` as ``(char, kind, taiwan_form)``, in order.

    With S = t2s(text) and T = s2tw(S) at the same position: c == T and c == S is neutral;
    c == T != S is traditional; c != T and c == S is simplified (allowed if in
    ``TW_ALLOWANCE``); c != T and c != S is a non-Taiwan Traditional variant (爲, 裏, 衆).
    A neutral character is upgraded to traditional when the Taiwan-aware round trip
    (tw2s then s2tw) does tell it apart: 著 in 看著, which OpenCC's own t2s keeps.
    """
    simp, tw_simp = _aligned(text, "t2s"), _aligned(text, "tw2s")
    taiwan = _aligned(simp, TAIWAN_CONFIG)
    tw_taiwan = _aligned(tw_simp, TAIWAN_CONFIG)
    kinds: list[tuple[str, CharKind, str]] = []
    for i, char in enumerate(text):
        if _HAN.match(char):
            kind = _kind(char, simp[i], taiwan[i], tw_simp[i] != char == tw_taiwan[i])
            kinds.append((char, kind, taiwan[i]))
    return kinds


def _kind(char: str, simplified: str, taiwan: str, taiwan_aware_trad: bool) -> CharKind:
    if char != taiwan:
        if char != simplified:
            return "variant"
        return "allowed" if char in TW_ALLOWANCE else "simplified"
    if char != simplified or taiwan_aware_trad:
        return "traditional"
    return "neutral"


def classify(text: str) -> Classification:
    """The script verdict of ``text`` and its evidence.

    Evidence: ``han`` (Han characters seen), per kind a ``{char: count}`` map (traditional,
    simplified, variant, allowed; neutral characters are only counted) and ``taiwan_form``,
    what s2tw writes for every simplified, variant or allowed character.
    """
    kinds = char_kinds(text)
    by_kind: dict[str, Counter[str]] = {k: Counter() for k in ("traditional", "simplified")}
    by_kind |= {"variant": Counter(), "allowed": Counter()}
    taiwan_form: dict[str, str] = {}
    for char, kind, form in kinds:
        if kind != "neutral":
            by_kind[kind][char] += 1
        if kind in ("simplified", "variant", "allowed"):
            taiwan_form[char] = form
    evidence: ScriptEvidence = {
        "han": len(kinds),
        "traditional": dict(by_kind["traditional"]),
        "simplified": dict(by_kind["simplified"]),
        "variant": dict(by_kind["variant"]),
        "allowed": dict(by_kind["allowed"]),
        "neutral": sum(1 for _, kind, _ in kinds if kind == "neutral"),
        "taiwan_form": taiwan_form,
    }
    return {"class": _verdict(len(kinds), by_kind), "evidence": evidence}


def _verdict(han: int, by_kind: dict[str, Counter[str]]) -> ScriptClass:
    if han == 0:
        return "none"
    simplified = bool(by_kind["simplified"])
    traditional = bool(by_kind["traditional"] or by_kind["variant"])
    if simplified and traditional:
        return "mixed"
    if simplified:
        return "simplified"
    return "traditional" if traditional else "neutral"


def after_s2tw(text: str) -> AfterS2tw:
    """The verdict after the usual fix (an ``s2tw`` conversion), with what the fix broke:
    ``over_converted`` maps each traditional or neutral character the conversion rewrote
    (干擾 -> 幹擾) to what it became."""
    fixed = convert(text, TAIWAN_CONFIG)
    over: dict[str, str] = {}
    if len(fixed) == len(text):
        kinds = iter(char_kinds(text))
        for before, after in zip(text, fixed, strict=True):
            if _HAN.match(before):
                kind = next(kinds)[1]
                if before != after and kind in ("traditional", "neutral"):
                    over[before] = after
    verdict = classify(fixed)
    return {"class": verdict["class"], "changed": _changed(text, fixed), "over_converted": over}


def _changed(before: str, after: str) -> int:
    if len(before) != len(after):
        return len(after)  # cannot align: report the whole text as rewritten
    return sum(1 for a, b in zip(before, after, strict=True) if a != b)


def script_target(lang: str | None) -> Literal["traditional", "simplified"] | None:
    """The script a prompt's language asks for: zh-TW/HK/MO/Hant -> traditional,
    zh-CN/SG/Hans -> simplified, anything else (plain ``zh`` included) -> None."""
    if lang is None:
        return None
    parts = [p.lower() for p in lang.split("-")]
    if parts[0] != "zh":
        return None
    if {"hant", "tw", "hk", "mo"} & set(parts[1:]):
        return "traditional"
    if {"hans", "cn", "sg"} & set(parts[1:]):
        return "simplified"
    return None


def has_han(text: str) -> bool:
    """True when ``text`` holds at least one Han character."""
    return _HAN.search(text) is not None


def score_script(text: str, lang: str | None) -> ScriptScore | None:
    """The script verdict of a reply, or None when there is nothing to judge: an empty reply
    (a tool call alone has no script; emptiness is a coherence flag), or a reply without Han
    characters to a prompt that is not Chinese."""
    if not text.strip():
        return None
    is_zh = lang is not None and lang.lower().split("-")[0] == "zh"
    if not is_zh and not has_han(text):
        return None
    verdict = classify(text)
    return {
        "target": script_target(lang),
        "class": verdict["class"],
        "evidence": verdict["evidence"],
        "after_s2t": after_s2tw(text),
    }
