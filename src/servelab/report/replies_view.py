"""The report's "Sample replies" section, from the request rows.

Owns which replies a reader sees: per arm up to three successful trial replies (distinct prompts
first, in run order) and up to two failed requests with their error, each cut after
``REPLY_CHARS`` characters, with reasoning and tool calls shortened. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from servelab.analysis.row_selection import Row, in_order, trials
from servelab.report.blocks import Block, Heading, Para, Reply

REPLY_CHARS = 600  # a sample reply is cut after this many characters
SAMPLES_OK = 3  # sample replies per arm
SAMPLES_FAILED = 2  # failed requests shown per arm, with their error


def truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]} ... [{len(text) - limit} more characters]"


def _d(x: Any) -> Mapping[str, Any]:
    return x if isinstance(x, Mapping) else {}


def _l(x: Any) -> list[Any]:
    return x if isinstance(x, list) else []


def _reply_body(row: Row) -> str:
    parts = []
    if row.get("outcome") not in (None, "ok"):
        parts.append(f"error: {row.get('error') or '(no message)'}")
    if row.get("reasoning"):
        parts.append("[reasoning] " + truncate(str(row["reasoning"]), REPLY_CHARS // 3))
    if row.get("text"):
        parts.append(truncate(str(row["text"]), REPLY_CHARS))
    for call in (_d(c) for c in _l(row.get("tool_calls"))):
        args = truncate(str(call.get("arguments", "")), REPLY_CHARS // 2)
        parts.append(f"[tool call] {call.get('name', '?')}({args})")
    return "\n".join(parts) or "(empty reply)"


def sample_rows(rows: Sequence[Row], arm: str) -> list[Row]:
    """A few successful trial replies (distinct prompts first) and a few failures, by seq."""
    trial = in_order(trials(rows, arm))
    ok = [r for r in trial if r.get("outcome") == "ok"]
    first = {r.get("prompt_id"): r for r in reversed(ok)}  # earliest row of each prompt
    distinct = [r for r in ok if first[r.get("prompt_id")] is r]
    ids = {id(r) for r in distinct}
    chosen = (distinct + [r for r in ok if id(r) not in ids])[:SAMPLES_OK]
    return chosen + [r for r in trial if r.get("outcome") != "ok"][:SAMPLES_FAILED]


def replies(rows: Sequence[Row], arms: Sequence[str]) -> list[Block]:
    blocks: list[Block] = []
    for arm in list(dict.fromkeys([*arms, *(str(r.get("arm")) for r in rows)])):
        chosen = sample_rows(rows, arm)
        blocks.append(Heading(arm))
        if not chosen:
            blocks.append(Para("No trial requests recorded."))
        for r in chosen:
            head = (f"{r.get('prompt_id', '?')} (block {r.get('block', '?')}, concurrency "
                    f"{r.get('concurrency', '?')}): {r.get('outcome', '?')}, {r.get('n_out', '?')}"
                    f" tokens, finish {r.get('finish_reason') or '-'}")  # fmt: skip
            blocks.append(Reply(head, _reply_body(r)))
    return blocks
