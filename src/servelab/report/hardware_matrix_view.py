"""The cross-hardware matrix of a run spread over Ray nodes in the report ("Hardware matrix").

Owns ``hardware_matrix_blocks`` (the summary's ``hardware_matrix`` -> a lead sentence saying
which blocks ran on which hardware and nodes, and that only the arms within a round are
paired; a table of one row per hardware label and arm with its medians, pooled decode rate,
ceiling and % of roofline; and the nodes' roofline hardware from the manifest). Pure. Text is
plain: the renderers escape it.
"""

from __future__ import annotations

from collections.abc import Sequence

from servelab.report.blocks import Block, KeyValues, Para, Table
from servelab.report.comparison_view import finite, num
from servelab.store import Manifest
from servelab.store.summary import HardwareMatrixRow

CAVEAT = (
    "Rows on different hardware are not paired comparisons: only the arms within a round are "
    "(the verdicts above). A row pools one arm's blocks on one kind of node, so read across "
    "hardware as a description, not a decision. % of roofline is the median decode rate over "
    "the decode ceiling of the arm's model on those nodes' roofline hardware (the theory "
    "section's ceiling, without a hardware profile); pooled decode is Σ tokens / Σ decode time."
)


def _ranges(blocks: Sequence[int]) -> str:
    """0, 2, 4-6: the blocks as a short list."""
    out: list[str] = []
    values = sorted(set(blocks))
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[j] + 1:
            j += 1
        out.append(str(values[i]) if i == j else f"{values[i]}-{values[j]}")
        i = j + 1
    return ", ".join(out)


def where_text(matrix: Sequence[HardwareMatrixRow]) -> str:
    """Which blocks ran where: per arm, its blocks on each hardware label, with the nodes."""
    per_arm: dict[str, list[str]] = {}
    for r in matrix:
        blocks = f"block{'s' if len(r.blocks) != 1 else ''} {_ranges(r.blocks)}"
        nodes = f"node{'s' if len(r.nodes) != 1 else ''} {', '.join(r.nodes)}"
        per_arm.setdefault(r.arm, []).append(f"{blocks} on {r.hardware} ({nodes})")
    clauses = [f"arm {arm}: {', '.join(where)}" for arm, where in per_arm.items()]
    return "The run was spread over Ray nodes; " + "; ".join(clauses) + "."


def _pct(x: object) -> str:
    v = finite(x)
    return "-" if v is None else f"{v * 100:.0f} %"


def matrix_table(matrix: Sequence[HardwareMatrixRow]) -> Table:
    rows = tuple(
        (r.hardware, r.arm, ", ".join(r.nodes), _ranges(r.blocks), str(r.n_requests),
         num(r.decode_tps_median, ".1f"), num(r.decode_tps_pooled, ".1f"),
         num(r.ttft_s_median, ".3f"), num(r.ceiling_tps, ".1f"), _pct(r.roofline_pct))
        for r in matrix
    )  # fmt: skip
    headers = ("hardware", "arm", "nodes", "blocks", "requests", "median decode tok/s",
               "pooled decode tok/s", "median TTFT s", "ceiling tok/s",
               "% of roofline")  # fmt: skip
    return Table(headers, rows)


def roofline_items(manifest: Manifest) -> list[tuple[str, str]]:
    """Each node's roofline hardware as recorded: label, hardware, bandwidth, source."""
    if manifest.ray is None:
        return []
    items = []
    for label, node in manifest.ray.nodes.items():
        roof = node.roofline or {}
        bw = num(roof.get("bandwidth_gbs"), ".2f")
        text = (f"{node.hardware or '(unrecorded)'}; roofline {roof.get('name', '-')}, "
                f"{bw} GB/s ({roof.get('source', '-')})" if roof
                else f"{node.hardware or '(unrecorded)'}; no roofline recorded")  # fmt: skip
        items.append((label, text + (f"; lost: {node.lost}" if node.lost else "")))
    return items


def hardware_matrix_blocks(
    matrix: Sequence[HardwareMatrixRow] | None, manifest: Manifest
) -> tuple[Block, ...]:
    if not matrix:
        return (Para("No successful trial request recorded a Ray node."),)
    items = roofline_items(manifest)
    return (
        Para(f"{where_text(matrix)} {CAVEAT}"),
        matrix_table(matrix),
        *((KeyValues(tuple(items)),) if items else ()),
    )
