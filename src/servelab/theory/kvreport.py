"""Reading llama-server's own account of its KV memory from its log text.

Owns parsing the start-up lines ``llama_kv_cache: size = 9.00 MiB (1536 cells, 3 layers, 2/2
seqs), K (f16): 4.50 MiB, V (f16): 4.50 MiB`` (one per cache: a sliding-window model has two)
and ``llama_memory_recurrent: size = ...``. They are INFO lines: llama-server prints them only
at ``-lv 4`` or above (its default, 3, hides them). Lines at DEBUG level come from memory-fit
probes, not real allocations, and are skipped. Each ``llama_context: constructing`` starts a
new context: the first is the target model, a later one a draft model. Pure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MIB = 1024 * 1024
# llama.cpp prints "%7.2f" of a float: 0.005 MiB of rounding plus float error
REPORT_TOLERANCE_MIB = 0.006

_NUM = r"([0-9]+(?:\.[0-9]+)?)"
_KV = re.compile(
    rf"llama_kv_cache: size = +{_NUM} MiB \( *(\d+) cells, +(\d+) layers, +(\d+)/(\d+) seqs\), "
    rf"K \(([^)]+)\): +{_NUM} MiB, V \(([^)]+)\): +{_NUM} MiB"
)
_RS = re.compile(
    rf"llama_memory_recurrent: size = +{_NUM} MiB \( *(\d+) cells, +(\d+) layers, +(\d+) seqs"
    rf" +(\d+) rs_seq\), R \(([^)]+)\): +{_NUM} MiB, S \(([^)]+)\): +{_NUM} MiB"
)
_CONTEXT = "llama_context: constructing llama_context"
_DEBUG = re.compile(r"(?:^|\s)D\s*$")


@dataclass(frozen=True, slots=True)
class KvReportLine:
    """One cache as llama-server reported it. For ``recurrent`` lines K is the rolling state R
    and V the recurrent state S; ``streams`` is 1 there."""

    kind: str
    size_mib: float
    cells: int
    layers: int
    seqs: int
    streams: int
    type_k: str
    k_mib: float
    type_v: str
    v_mib: float


@dataclass(frozen=True, slots=True)
class MeasuredKv:
    """Every cache line, grouped by llama_context in log order (target first, then drafts)."""

    contexts: tuple[tuple[KvReportLine, ...], ...]

    @property
    def target(self) -> tuple[KvReportLine, ...]:
        return self.contexts[0] if self.contexts else ()

    @property
    def kv_mib(self) -> float:
        """The target context's attention KV (all ``llama_kv_cache`` lines), in MiB."""
        return sum(x.size_mib for x in self.target if x.kind == "kv")

    @property
    def recurrent_mib(self) -> float:
        return sum(x.size_mib for x in self.target if x.kind == "recurrent")

    @property
    def kv_bytes(self) -> int:
        """``kv_mib`` in bytes (the log has 0.01 MiB resolution)."""
        return round(self.kv_mib * MIB)


def _line(text: str) -> KvReportLine | None:
    if m := _KV.search(text):
        size, cells, layers, seqs, streams, tk, k, tv, v = m.groups()
        return KvReportLine(
            "kv", float(size), int(cells), int(layers), int(seqs), int(streams),
            tk, float(k), tv, float(v),
        )  # fmt: skip
    if m := _RS.search(text):
        size, cells, layers, seqs, _rs, tr, r, ts, s = m.groups()
        return KvReportLine(
            "recurrent", float(size), int(cells), int(layers), int(seqs), 1,
            tr, float(r), ts, float(s),
        )  # fmt: skip
    return None


def _is_debug(line: str) -> bool:
    head = line.split("llama_", 1)[0]
    return bool(_DEBUG.search(head))


def measured_kv_from_log(text: str) -> MeasuredKv | None:
    """The KV memory llama-server reported in ``text`` (its log), or None when the log holds no
    report (llama-server ran below ``-lv 4``, or the log is from another engine)."""
    contexts: list[list[KvReportLine]] = []
    for raw in text.splitlines():
        if _is_debug(raw):
            continue
        if _CONTEXT in raw:
            contexts.append([])
            continue
        line = _line(raw)
        if line is None:
            continue
        if not contexts:
            contexts.append([])
        contexts[-1].append(line)
    kept = tuple(tuple(c) for c in contexts if c)
    return MeasuredKv(kept) if kept else None


def report_matches(predicted_bytes: int, reported_mib: float) -> bool:
    """Whether a byte prediction equals a reported ``%7.2f MiB`` figure to its precision."""
    return abs(predicted_bytes / MIB - reported_mib) <= REPORT_TOLERANCE_MIB
