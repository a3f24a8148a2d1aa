"""Coherence and integrity of one reply: the fixed set of things that make a reply unusable.

Owns the flag kinds (``FLAG_KINDS``) and one detector per kind: invalid UTF-8 the client had to
replace, replacement characters, mojibake (UTF-8 read as Latin-1/cp1252, like "Ã©"), degenerate
repetition (an n-gram loop), empty replies, replies cut at max_tokens, leaked reasoning or
chat-template tokens, and a reply in another language than the prompt's. Every flag keeps its
reason and the evidence text, so a reader can check it.

Pure: a stored row in, a JSON-able ``CoherenceScore`` out. Must not read files or aggregate
across rows.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal, TypedDict, get_args

FlagKind = Literal[
    "invalid_utf8",
    "replacement_char",
    "mojibake",
    "repetition",
    "empty",
    "truncated_max_tokens",
    "leaked_reasoning",
    "leaked_template",
    "wrong_language",
]
FLAG_KINDS: tuple[FlagKind, ...] = get_args(FlagKind)


class Flag(TypedDict):
    """One coherence flag as stored (quality/scores.jsonl)."""

    kind: FlagKind
    reason: str
    evidence: str | None


class CoherenceScore(TypedDict):
    """Every coherence flag of one reply; ``ok`` when there is none."""

    flags: list[Flag]
    ok: bool


# The 27 characters cp1252 puts at 0x80-0x9F (where Latin-1 has C1 controls).
_CP1252_EXTRA = bytes(range(0x80, 0xA0)).decode("cp1252", errors="ignore")
# Two or more characters a cp1252/Latin-1 decoder makes out of bytes >= 0x80.
_HIGH_RUN = re.compile(f"[\u0080-\u00ff{_CP1252_EXTRA}]{{2,}}")
_UTF8_SEQ = re.compile(
    rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3}"
)

_REASONING = ("<think>", "</think>", "<thinking>", "</thinking>", "<|channel|>analysis")
_TEMPLATE = re.compile(
    r"<\|[A-Za-z_]+(?:\|>|>)"  # <|im_start|>, <|eot_id|>, <|end|>, <|start_header_id|>
    r"|<(?:start|end)_of_turn>|</?s>|<bos>|<eos>|\[/?INST\]|<<SYS>>"
)

_TOKEN = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]|\w+|[^\w\s]")
_MIN_REPEAT_SPAN = 16  # tokens a loop must cover before it is a loop
_MAX_PERIOD = 40  # longest repeated unit looked for, in tokens

_SCRIPTS: dict[str, re.Pattern[str]] = {
    "han": re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]"),
    "kana": re.compile("[\u3040-\u30ff]"),
    "hangul": re.compile("[\uac00-\ud7af]"),
    "cyrillic": re.compile("[\u0400-\u04ff]"),
    "arabic": re.compile("[\u0600-\u06ff]"),
    "latin": re.compile(r"[A-Za-z\u00c0-\u024f]+"),  # counted per word, not per letter
}
_LANG_SCRIPT = {"zh": "han", "ja": "kana", "ko": "hangul", "ru": "cyrillic", "uk": "cyrillic"}
_LANG_SCRIPT |= {"ar": "arabic", "en": "latin", "fr": "latin", "de": "latin", "es": "latin"}
_LANG_SCRIPT |= {"it": "latin", "pt": "latin", "nl": "latin"}
_MIN_LANG_UNITS = 4  # too short a reply to judge its language


def flag(kind: FlagKind, reason: str, evidence: str | None = None) -> Flag:
    """One coherence flag: its kind, a sentence a reader can act on, the text behind it."""
    return {"kind": kind, "reason": reason, "evidence": evidence}


def score_coherence(
    row: Mapping[str, Any], *, lang: str | None, max_tokens: int | None
) -> CoherenceScore:
    """Every coherence flag of one row; ``ok`` is True when there is none."""
    text = str(row.get("text") or "")
    flags = [
        *_encoding(text, int(row.get("invalid_utf8_bytes") or 0)),
        *_repetition(text),
        *_empty(text, row),
        *_truncated(row, max_tokens),
        *_leaks(text),
        *_language(repair_mojibake(text), lang),  # mojibake is flagged once, above
    ]
    return {"flags": flags, "ok": not flags}


def _encoding(text: str, invalid_bytes: int) -> list[Flag]:
    flags: list[Flag] = []
    if invalid_bytes:
        flags.append(flag("invalid_utf8", f"{invalid_bytes} invalid UTF-8 bytes in the stream"))
    if "\ufffd" in text:
        at = text.index("\ufffd")
        flags.append(
            flag(
                "replacement_char",
                f"{text.count(chr(0xFFFD))} U+FFFD replacement characters (bytes lost in decoding)",
                text[max(0, at - 10) : at + 10],
            )
        )
    found = mojibake(text)
    if found:
        shown = ", ".join(f"{bad!r} -> {good!r}" for bad, good in found[:3])
        flags.append(flag("mojibake", f"UTF-8 read as Latin-1/cp1252: {shown}", found[0][0]))
    return flags


def mojibake(text: str) -> list[tuple[str, str]]:
    """Runs of ``text`` that are UTF-8 bytes decoded as cp1252 or Latin-1, with the repair.

    A run counts only when its bytes hold a complete multi-byte UTF-8 sequence, so real accented
    text ("café", "Größe", "naïve") never matches: one accented letter between ASCII ones is
    not a UTF-8 lead byte followed by continuation bytes.
    """
    found = []
    for run in _HIGH_RUN.findall(text):
        raw = _as_bytes(run)
        sequences = _UTF8_SEQ.findall(raw)
        if sequences:
            found.append((run, b"".join(sequences).decode("utf-8", errors="replace")))
    return found


def repair_mojibake(text: str) -> str:
    """``text`` with every mojibake run (see ``mojibake``) replaced by its UTF-8 reading."""
    for bad, good in mojibake(text):
        text = text.replace(bad, good)
    return text


def _as_bytes(run: str) -> bytes:
    # The cp1252-only characters back to their byte; the rest of U+0080-U+00FF (C1 controls
    # included, which cp1252 leaves undefined and Latin-1 decoders keep) is Latin-1.
    return b"".join(c.encode("cp1252" if c in _CP1252_EXTRA else "latin-1") for c in run)


def _repetition(text: str) -> list[Flag]:
    loop = find_loop(_TOKEN.findall(text))
    if loop is None:
        return []
    unit, repeats = loop
    shown = " ".join(unit) if any(len(t) > 1 for t in unit) else "".join(unit)
    return [flag("repetition", f"a {len(unit)}-token unit repeats {repeats} times", shown)]


def _min_repeats(period: int) -> int:
    # Short units need more repeats: "no no no" is speech, sixteen of them is a loop.
    return max(3, -(-_MIN_REPEAT_SPAN // period))


def find_loop(tokens: list[str]) -> tuple[list[str], int] | None:
    """The first repeated unit that loops: ``(unit, repeats)``, or None.

    For each period p (1 to ``_MAX_PERIOD`` tokens) a run where token i equals token i + p
    means the p-token unit repeats; it is a loop when it repeats at least ``_min_repeats(p)``
    times back to back (so the loop covers ``_MIN_REPEAT_SPAN`` tokens or more). Units that
    are themselves repeats of a shorter unit ("ha ha" for "ha") are left to that shorter
    period and its own, stricter threshold.
    """
    for period in range(1, min(_MAX_PERIOD, len(tokens) // 2) + 1):
        run = 0
        for i in range(len(tokens) - period):
            run = run + 1 if tokens[i] == tokens[i + period] else 0
            if run // period + 1 >= _min_repeats(period):
                start = i - run + 1
                unit = tokens[start : start + period]
                if _primitive(unit):
                    return unit, _count_repeats(tokens, start, period)
    return None


def _primitive(unit: list[str]) -> bool:
    n = len(unit)
    return all(unit != unit[d:] + unit[:d] for d in range(1, n) if n % d == 0)


def _count_repeats(tokens: list[str], start: int, period: int) -> int:
    unit, repeats = tokens[start : start + period], 1
    while tokens[start + repeats * period : start + (repeats + 1) * period] == unit:
        repeats += 1
    return repeats


def _empty(text: str, row: Mapping[str, Any]) -> list[Flag]:
    if text.strip() or row.get("tool_calls"):
        return []
    reasoning = str(row.get("reasoning") or "")
    why = "reasoning only, no reply" if reasoning.strip() else "no text and no tool call"
    return [flag("empty", why)]


def _truncated(row: Mapping[str, Any], max_tokens: int | None) -> list[Flag]:
    if row.get("finish_reason") == "length":
        return [flag("truncated_max_tokens", "finish_reason is 'length': cut at max_tokens")]
    n_out = row.get("n_out")
    if max_tokens is not None and isinstance(n_out, int) and n_out >= max_tokens:
        return [flag("truncated_max_tokens", f"n_out {n_out} reached max_tokens {max_tokens}")]
    return []


def _leaks(text: str) -> list[Flag]:
    flags: list[Flag] = []
    reasoning = [m for m in _REASONING if m in text]
    if reasoning:
        flags.append(flag("leaked_reasoning", "reasoning markers in the reply", reasoning[0]))
    template = _TEMPLATE.findall(text)
    if template:
        shown = ", ".join(dict.fromkeys(template))
        flags.append(
            flag("leaked_template", f"chat-template tokens in the reply: {shown}", template[0])
        )
    return flags


def script_counts(text: str) -> dict[str, int]:
    """Letters per writing system: Han, kana, Hangul, Cyrillic, Arabic characters one by one,
    Latin by word (a Chinese reply naming "Taylor Swift" is still Chinese)."""
    return {name: len(pattern.findall(text)) for name, pattern in _SCRIPTS.items()}


def _language(text: str, lang: str | None) -> list[Flag]:
    if lang is None:
        return []
    expected = _LANG_SCRIPT.get(lang.lower().split("-")[0])
    counts = script_counts(text)
    total = sum(counts.values())
    if expected is None or total < _MIN_LANG_UNITS:
        return []
    hits = counts[expected] + (counts["han"] if expected == "kana" else 0)
    share = hits / total
    japanese = expected == "han" and counts["kana"] >= 0.1 * total  # Han plus kana
    if share >= 0.5 and not japanese:
        return []
    main = max(counts, key=lambda k: counts[k])
    why = (
        f"prompt is {lang} ({expected} script); the reply is mostly {main} ({share:.0%} {expected})"
    )
    return [flag("wrong_language", why)]
