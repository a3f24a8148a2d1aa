"""Quirks detected in imported rows, recorded as notes so the report warns about them.

Owns the checks that look at the data itself: a cold first request, a tok/s column that is
really n_out / e2e, tool-call rows whose TTFT times a tool-call name, arms that differ in more
than their name. ``RowChecks`` takes the finished rows one at a time and keeps only what the
checks need (per arm: the first request, two float arrays and the source columns still
constant: unmapped ones and those mapped to ``prompt_id`` or ``concurrency``), so a million-row
import never holds its rows. Pure: rows in, notes out.
"""

from __future__ import annotations

import json
import statistics
from array import array
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeGuard

from servelab.importers.common import note
from servelab.importers.imported_row import ImportedRow
from servelab.store.manifest_records import Scalar

COLD_FACTOR = 3.0
COLD_METRICS = ("ttft_s", "e2e_s")
# Mapped targets that describe what an arm was asked, not what came back: a source column
# mapped to one of them and constant within each arm is a setting, like an unmapped one.
CONTEXT_SETTINGS = ("prompt_id", "concurrency")


@dataclass
class _Arm:
    """What the checks keep of one arm."""

    n_rows: int = 0
    first_seq: int | None = None  # the seq of the first ok trial row
    first_values: dict[str, float | None] = field(default_factory=dict)  # its cold metrics
    values: dict[str, array[float]] = field(
        default_factory=lambda: {m: array("d") for m in COLD_METRICS}
    )
    constants: dict[str, Scalar] | None = None  # raw scalar columns equal in every row so far
    context: dict[str, Scalar] | None = None  # mapped CONTEXT_SETTINGS columns, the same way


@dataclass
class RowChecks:
    """Running state of every check; feed finished rows with ``add``."""

    arms: dict[str, _Arm] = field(default_factory=dict)
    prefill_pairs: int = 0  # ok rows with decode_tps, n_out and e2e_s
    prefill_close: int = 0  # ... whose decode_tps is within 2 % of n_out / e2e_s
    tool_rows: int = 0
    text_rows: int = 0
    present: set[str] = field(default_factory=set)  # metrics the source gave in some row
    # source column -> the target it is mapped to, for mapped CONTEXT_SETTINGS
    context_maps: dict[str, str] = field(default_factory=dict)
    columns: set[str] = field(default_factory=set)  # every unmapped source column seen

    def add_source(self, partial: Mapping[str, object]) -> None:
        """Note which metrics a reader's row gave itself (before any were derived), and the
        values of the source columns mapped to a context setting."""
        self.present.update(m for m in _DECISION_CANDIDATES if partial.get(m) is not None)
        if self.context_maps:
            arm = self.arms.setdefault(str(partial.get("arm")), _Arm())
            values = {col: partial.get(target) for col, target in self.context_maps.items()}
            arm.context = _still_constant(arm.context, values)

    def add(self, row: ImportedRow) -> None:
        """Count one finished row."""
        arm = self.arms.setdefault(row.arm, _Arm())
        arm.n_rows += 1
        self._constants(arm, row.raw)
        if row.outcome != "ok":
            return
        self._prefill(row)
        self.tool_rows += row.metric("ttft_tool_s") is not None
        self.text_rows += row.metric("ttft_content_s") is not None
        if row.phase == "trial":
            if arm.first_seq is None:
                arm.first_seq = row.seq
                arm.first_values = {m: row.metric(m) for m in COLD_METRICS}
            for metric in COLD_METRICS:
                value = row.metric(metric)
                if value is not None:
                    arm.values[metric].append(value)

    def _constants(self, arm: _Arm, raw: Mapping[str, object]) -> None:
        self.columns.update(raw)
        arm.constants = _still_constant(arm.constants, raw)

    def _prefill(self, row: ImportedRow) -> None:
        got, n_out, e2e = row.metric("decode_tps"), row.metric("n_out"), row.metric("e2e_s")
        if got and n_out and e2e:
            self.prefill_pairs += 1
            self.prefill_close += abs(got - n_out / e2e) <= 0.02 * (n_out / e2e)

    def cold_start(self) -> list[dict[str, str]]:
        """The first trial request of an arm taking COLD_FACTOR x the median of the rest."""
        notes = []
        for name, arm in self.arms.items():
            for metric in COLD_METRICS:
                values = arm.values[metric]
                if len(values) < 4 or arm.first_seq is None or arm.first_values[metric] is None:
                    continue
                median = statistics.median(values[1:])
                if median > 0 and values[0] > COLD_FACTOR * median:
                    detail = (
                        f"arm {name}: the first request (seq {arm.first_seq}) has {metric} "
                        f"{values[0]:.3g} s, {values[0] / median:.1f}x the median of the rest; "
                        "likely a cold start (import with --warmup-first 1 to leave it out)"
                    )
                    notes.append(note("cold_start", detail))
                break
        return notes

    def rate_includes_prefill(self, mapped: set[str]) -> list[dict[str, str]]:
        """A column mapped to decode_tps that equals n_out / e2e_s includes prefill."""
        pairs, close = self.prefill_pairs, self.prefill_close
        if "decode_tps" not in mapped or pairs < 3 or close < 0.9 * pairs:
            return []
        detail = (
            f"the column mapped to decode_tps equals n_out / e2e_s in {close} of {pairs} "
            "rows: it includes prefill; map it to e2e_tps instead"
        )
        return [note("rate_includes_prefill", detail)]

    def tool_call_ttft(self) -> list[dict[str, str]]:
        if not self.tool_rows:
            return []
        detail = (
            f"{self.tool_rows} rows replied with tool calls only ({self.text_rows} with text "
            "only): their ttft_s times the first tool-call name, not a text token; compare "
            "ttft_tool_s and ttft_content_s apart"
        )
        return [note("ttft_definition", detail)]

    def arm_constants(self) -> dict[str, dict[str, Scalar]]:
        """Per arm, the source's scalar columns whose value is the same in every row of that
        arm (unmapped ones, and those mapped to a context setting, by source column)."""
        return {
            name: {**(arm.constants or {}), **(arm.context or {})}
            for name, arm in self.arms.items()
        }

    def decision_metrics(self) -> list[str]:
        """The usual decision metrics the source measured: an import decides only on what it
        has (llama-bench has no TTFT), so a report never says "inconclusive" for a missing one."""
        present = [m for m in _DECISION_CANDIDATES[:3] if m in self.present]
        return present or [m for m in _DECISION_CANDIDATES[3:] if m in self.present]


_DECISION_CANDIDATES = ("decode_tps", "ttft_s", "e2e_s", "prefill_tps", "e2e_tps")


def _is_scalar(value: object) -> TypeGuard[Scalar]:
    """A raw column value that can be a constant (JSON text, number, boolean or null)."""
    return value is None or isinstance(value, str | int | float | bool)


def _still_constant(
    constants: dict[str, Scalar] | None, values: Mapping[str, object]
) -> dict[str, Scalar]:
    """The columns of ``constants`` (all scalar ``values`` at the first row) still equal."""
    if constants is None:
        return {k: v for k, v in values.items() if _is_scalar(v)}
    for key in [k for k, v in constants.items() if values.get(k) != v]:
        del constants[key]
    return constants


def config_diff(constants: dict[str, dict[str, Scalar]]) -> dict[str, dict[str, Scalar]]:
    """``{column: {arm: value}}`` for columns constant within two or more arms that differ
    between them (listing the arms where the column is constant), but labels: a column whose
    value is different in each arm and names it (``ngram-mod.json`` for ``ngram-mod-n24``)."""
    diff = {}
    for key in sorted({k for c in constants.values() for k in c}):
        values = {arm: c[key] for arm, c in constants.items() if key in c}
        distinct = {json.dumps(v) for v in values.values()}
        is_label = len(distinct) == len(values) and all(_names(v, a) for a, v in values.items())
        if len(values) > 1 and len(distinct) > 1 and not is_label:
            diff[key] = values
    return diff


_BOOLEAN_TEXT = frozenset({"true", "false", "yes", "no", "on", "off"})


def _names(value: Scalar, arm: str) -> bool:
    """Whether a text value names the arm: one contains the other (a file extension off)."""
    if not isinstance(value, str) or _numeric(value) or value.strip().lower() in _BOOLEAN_TEXT:
        return False
    text, name = value.strip().lower(), arm.lower()
    stem, dot, ext = text.rpartition(".")
    if dot and stem and ext.isalpha():
        text = stem
    return bool(text) and (text in name or name in text)


def _numeric(value: Scalar) -> bool:
    if value is None or isinstance(value, bool):
        return False
    try:
        float(value)
    except ValueError:
        return False
    return True


def config_notes(
    diff: dict[str, dict[str, Scalar]], how: Mapping[str, str] | None = None
) -> list[dict[str, str]]:
    """One ``arm_config_differs`` note per column, with ``how[column]`` (what the comparisons
    make of it) when given."""
    notes = []
    for key, values in diff.items():
        groups: dict[str, list[str]] = defaultdict(list)
        for arm, value in values.items():
            groups[str(value)].append(arm)
        shown = "; ".join(
            f"{v}: {', '.join(a[:4])}{' ...' if len(a) > 4 else ''}" for v, a in groups.items()
        )
        words = f"; {how[key]}" if how and key in how else ""
        notes.append(note("arm_config_differs", f"arms differ in {key} ({shown}){words}"))
    return notes
