"""Quirks detected in imported rows, recorded as notes so the report warns about them.

Owns the checks that look at the data itself: a cold first request, a tok/s column that is
really n_out / e2e, tool-call rows whose TTFT times a tool-call name, arms that differ in more
than their name, and rows that could not be mapped. Pure: rows in, notes out.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from typing import Any

from servelab.importers.common import note

COLD_FACTOR = 3.0


def _by_arm(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        out[row["arm"]].append(row)
    return out


def cold_start(rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The first trial request of an arm taking COLD_FACTOR x the median of the rest."""
    notes = []
    for arm, arm_rows in _by_arm(rows).items():
        ok = [r for r in arm_rows if r["phase"] == "trial" and r["outcome"] == "ok"]
        for metric in ("ttft_s", "e2e_s"):
            values = [r[metric] for r in ok if r.get(metric) is not None]
            if len(values) < 4 or ok[0].get(metric) is None:
                continue
            median = statistics.median(values[1:])
            if median > 0 and values[0] > COLD_FACTOR * median:
                detail = (
                    f"arm {arm}: the first request (seq {ok[0]['seq']}) has {metric} "
                    f"{values[0]:.3g} s, {values[0] / median:.1f}x the median of the rest; "
                    "likely a cold start (import with --warmup-first 1 to leave it out)"
                )
                notes.append(note("cold_start", detail))
            break
    return notes


def rate_includes_prefill(rows: list[dict[str, Any]], mapped: set[str]) -> list[dict[str, str]]:
    """A column mapped to decode_tps that equals n_out / e2e_s includes prefill."""
    if "decode_tps" not in mapped:
        return []
    pairs = [
        (r["decode_tps"], r["n_out"] / r["e2e_s"])
        for r in rows
        if r["outcome"] == "ok" and r.get("decode_tps") and r.get("n_out") and r.get("e2e_s")
    ]
    close = sum(1 for got, e2e_rate in pairs if abs(got - e2e_rate) <= 0.02 * e2e_rate)
    if len(pairs) >= 3 and close >= 0.9 * len(pairs):
        detail = (
            f"the column mapped to decode_tps equals n_out / e2e_s in {close} of {len(pairs)} "
            "rows: it includes prefill; map it to e2e_tps instead"
        )
        return [note("rate_includes_prefill", detail)]
    return []


def tool_call_ttft(rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    tool_rows = sum(1 for r in rows if r["outcome"] == "ok" and r.get("ttft_tool_s") is not None)
    text_rows = sum(1 for r in rows if r["outcome"] == "ok" and r.get("ttft_content_s") is not None)
    if not tool_rows:
        return []
    detail = (
        f"{tool_rows} rows replied with tool calls only ({text_rows} with text only): their "
        "ttft_s times the first tool-call name, not a text token; compare ttft_tool_s and "
        "ttft_content_s apart"
    )
    return [note("ttft_definition", detail)]


def arm_constants(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per arm, the raw scalar columns whose value is the same in every row of that arm."""
    out: dict[str, dict[str, Any]] = {}
    for arm, arm_rows in _by_arm(rows).items():
        first = arm_rows[0].get("raw") or {}
        out[arm] = {
            k: v
            for k, v in first.items()
            if not isinstance(v, dict | list)
            and all((r.get("raw") or {}).get(k) == v for r in arm_rows)
        }
    return out


def config_diff(constants: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Columns constant within every arm that differ between arms (one-to-one labels left out)."""
    arms = list(constants)
    if len(arms) < 2:
        return {}
    diff = {}
    for key in set.intersection(*(set(c) for c in constants.values())):
        values = {arm: constants[arm][key] for arm in arms}
        distinct = {json.dumps(v) for v in values.values()}
        is_label = len(distinct) == len(arms) and not all(_numeric(v) for v in values.values())
        if len(distinct) > 1 and not is_label:
            diff[key] = values
    return dict(sorted(diff.items()))


def _numeric(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return not isinstance(value, bool)


def config_notes(diff: dict[str, dict[str, Any]]) -> list[dict[str, str]]:
    notes = []
    for key, values in diff.items():
        groups: dict[str, list[str]] = defaultdict(list)
        for arm, value in values.items():
            groups[str(value)].append(arm)
        shown = "; ".join(
            f"{v}: {', '.join(a[:4])}{' ...' if len(a) > 4 else ''}" for v, a in groups.items()
        )
        notes.append(note("arm_config_differs", f"arms differ in {key} ({shown})"))
    return notes
