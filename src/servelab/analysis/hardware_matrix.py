"""The cross-hardware matrix of a run spread over Ray nodes (``servelab run --ray``).

Owns the summary's ``hardware_matrix``: one row per (hardware label, arm) over the successful
trial rows of the nodes with that label (a row's ``node``, looked up in the manifest's
``ray.nodes``): the nodes and blocks it covers, n, the median and pooled decode rate (Σ tokens
/ Σ decode time, ``metrics.pooled_weight`` and ``stats.level``, as the summary pools rates),
the median TTFT, and the measured median decode rate over the decode ceiling of the arm's
model on the nodes' roofline hardware (``ray.nodes.LABEL.roofline``). The ceiling is the
theory section's own (``analysis.predictions.arm_theory``) with the node's hardware in place of
the run's and no hardware profile (a calibration belongs to the machine it ran on); nodes of
one label whose rooflines differ (measured CPU rooflines do) give the mean of their ceilings,
each weighted by the requests it served. Rows on different hardware are not paired: only the
arms within a round are, so the matrix describes and never decides.

Pure: the caller passes the manifest, the rows and the theory inputs it read from disk
(``report.theory_inputs``). A run without Ray nodes has no matrix (None), so its summary keeps
its bytes; a node without a roofline, or an arm without a model architecture, gets no ceiling.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import fields, replace

import numpy as np

from servelab.analysis.predictions import TheoryInputs, arm_theory
from servelab.analysis.row_selection import Row, ok_trials, positive
from servelab.analysis.settings import RunFacts, run_facts
from servelab.metrics import pooled_weight
from servelab.stats.level import level_of
from servelab.store.manifest import Manifest, RayNodeRecord
from servelab.store.summary import ArmPrediction, HardwareMatrixRow
from servelab.theory.hardware import Hardware

UNRECORDED = "(unrecorded)"  # the hardware label of a node the manifest does not describe
_HW_FIELDS = {f.name for f in fields(Hardware)}


def node_roofline(node: RayNodeRecord | None) -> Hardware | None:
    """The node's roofline hardware from its manifest record; None when not recorded or not
    readable as ``theory.hardware.Hardware`` (unknown keys are left out)."""
    if node is None or not node.roofline:
        return None
    given = {k: v for k, v in node.roofline.items() if k in _HW_FIELDS}
    try:
        hw = Hardware(**given)  # type: ignore[arg-type]
    except TypeError:
        return None
    ok = isinstance(hw.bandwidth_gbs, int | float) and hw.bandwidth_gbs > 0
    return hw if ok else None


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def pooled_decode(rows: Sequence[Row]) -> float | None:
    """Σ tokens / Σ decode time over the rows' positive ``decode_tps`` (``stats.level``)."""
    kept = [(v, pooled_weight("decode_tps", r)) for r in rows for v in positive([r], "decode_tps")]
    if not kept:
        return None
    values = np.asarray([v for v, _ in kept], dtype=float)
    weights = np.asarray([w for _, w in kept], dtype=float)
    return level_of(values, weights, "pooled")


def _ceiling(
    facts: RunFacts, group: Sequence[Row], arm: str, inputs: TheoryInputs | None,
    hw: Hardware,
) -> float | None:  # fmt: skip
    """The theory section's decode ceiling of ``arm`` on ``hw``, at the group's position."""
    t = arm_theory(replace(facts, hardware=hw), group, arm, inputs, None)
    return t.decode_ceiling_tps if isinstance(t, ArmPrediction) else None


def group_ceiling(
    facts: RunFacts, by_node: Mapping[str, Sequence[Row]], arm: str,
    inputs: TheoryInputs | None, rooflines: Mapping[str, Hardware | None],
) -> float | None:  # fmt: skip
    """The request-weighted mean of the nodes' ceilings (None when a node has none)."""
    group = [r for rows in by_node.values() for r in rows]
    per_node = {}
    for label, rows in by_node.items():
        hw = rooflines.get(label)
        ceiling = _ceiling(facts, group, arm, inputs, hw) if hw is not None else None
        if ceiling is None:
            return None
        per_node[label] = (ceiling, len(rows))
    distinct = {c for c, _ in per_node.values()}
    if len(distinct) == 1:
        return distinct.pop()
    return sum(c * n for c, n in per_node.values()) / sum(n for _, n in per_node.values())


def _row(
    hardware: str, arm: str, by_node: Mapping[str, Sequence[Row]], ceiling: float | None
) -> HardwareMatrixRow:
    rows = [r for node_rows in by_node.values() for r in node_rows]
    decode = _median(positive(rows, "decode_tps"))
    return HardwareMatrixRow(
        hardware=hardware, arm=arm, nodes=tuple(by_node),
        blocks=tuple(sorted({int(r.get("block") or 0) for r in rows})), n_requests=len(rows),
        decode_tps_median=decode, decode_tps_pooled=pooled_decode(rows),
        ttft_s_median=_median(positive(rows, "ttft_s")), ceiling_tps=ceiling,
        roofline_pct=decode / ceiling if decode and ceiling else None,
    )  # fmt: skip


def _groups(manifest: Manifest, rows: Sequence[Row]) -> dict[tuple[str, str], dict[str, list[Row]]]:
    """(hardware label, arm) -> node label -> its successful trial rows, nodes in manifest
    order (then the unrecorded ones, as their rows come)."""
    nodes = manifest.ray.nodes if manifest.ray is not None else {}
    rank = {label: i for i, label in enumerate(nodes)}
    out: dict[tuple[str, str], dict[str, list[Row]]] = {}
    ordered = sorted(ok_trials(rows), key=lambda r: rank.get(str(r.get("node")), len(rank)))
    for row in ordered:
        label = row.get("node")
        if not isinstance(label, str) or not label:
            continue  # a block that ran on the driver (not spread)
        known = nodes.get(label)
        hardware = (known.hardware if known is not None else None) or UNRECORDED
        out.setdefault((hardware, str(row.get("arm"))), {}).setdefault(label, []).append(row)
    return out


def hardware_matrix(
    manifest: Manifest, rows: Sequence[Row], inputs: Mapping[str, TheoryInputs],
    arms: Sequence[str] = (),
) -> tuple[HardwareMatrixRow, ...] | None:  # fmt: skip
    """The matrix of a spread run: hardware labels in the order their first node is listed
    in the manifest, arms in ``arms`` order (the baseline first), then any other; None when
    the manifest records no Ray nodes."""
    if manifest.ray is None or not manifest.ray.nodes:
        return None
    facts = run_facts(manifest)
    nodes = manifest.ray.nodes
    rooflines = {label: node_roofline(node) for label, node in nodes.items()}
    hw_order = list(dict.fromkeys(n.hardware or UNRECORDED for n in nodes.values()))
    groups = _groups(manifest, rows)
    hw_rank = {h: i for i, h in enumerate(dict.fromkeys([*hw_order, *(h for h, _ in groups)]))}
    arm_rank = {a: i for i, a in enumerate(dict.fromkeys([*arms, *(a for _, a in groups)]))}
    out = []
    for hardware, arm in sorted(groups, key=lambda k: (hw_rank[k[0]], arm_rank[k[1]])):
        by_node = groups[(hardware, arm)]
        ceiling = group_ceiling(facts, by_node, arm, inputs.get(arm), rooflines)
        out.append(_row(hardware, arm, by_node, ceiling))
    return tuple(out)
