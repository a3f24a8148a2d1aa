"""The Markdown rendering of a run report: the sections of sections.py as plain-text Markdown.

Pure. The Markdown report embeds no images; it refers to report.html for plots.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from servelab.analysis.row_selection import Row
from servelab.report.blocks import Block, Heading, KeyValues, Para, Reply, Table
from servelab.report.sections import report_sections, report_title
from servelab.store import Manifest
from servelab.store.summary import Summary

# --- Markdown ----------------------------------------------------------------------------------

_MD_SPECIAL = re.compile(r"([\\*<>\[\]|])")
_CODE_SPAN = re.compile(r"(`[^`]+`)")


def md_text(text: str) -> str:
    """One line of inline text: Markdown's active characters escaped outside `code spans`.

    Inside a code span everything is literal except the table's pipe, which GFM wants escaped.
    """
    parts = _CODE_SPAN.split(" ".join(text.split()))
    return "".join(
        p.replace("|", "\\|") if i % 2 else _MD_SPECIAL.sub(r"\\\1", p) for i, p in enumerate(parts)
    )


def _md_fence(body: str) -> str:
    longest = max((len(m) for m in re.findall(r"`+", body)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{body}\n{fence}"


def _md_block(block: Block) -> str:
    if isinstance(block, Para):
        return md_text(block.text)
    if isinstance(block, KeyValues):
        return "\n".join(f"- **{md_text(k)}**: {md_text(v)}" for k, v in block.items)
    if isinstance(block, Table):
        lines = ["| " + " | ".join(md_text(h) for h in block.headers) + " |",
                 "|" + "|".join("---" for _ in block.headers) + "|"]  # fmt: skip
        lines += ["| " + " | ".join(md_text(c) for c in row) + " |" for row in block.rows]
        return "\n".join(lines)
    if isinstance(block, Heading):
        return f"### {md_text(block.text)}"
    if isinstance(block, Reply):
        return f"{md_text(block.heading)}\n\n{_md_fence(block.body)}"
    return f"Plot in report.html: {md_text(block.what)}."


def render_markdown(summary: Summary, manifest: Manifest, rows: Sequence[Row] | None = None) -> str:
    """The report as Markdown; a confound banner, if any, comes before everything else."""
    out: list[str] = []
    title_done = False
    for section in report_sections(summary, manifest, rows):
        if section.alert:
            out += [f"> **WARNING: {md_text(section.title).upper()}**", ">"]
            text = "\n\n".join(_md_block(b) for b in section.blocks)
            out += [f"> {line}" if line else ">" for line in text.splitlines()]
            out.append("")
            continue
        if not title_done:
            out += [f"# {md_text(report_title(summary, manifest))}", ""]
            title_done = True
        out += [f"## {md_text(section.title)}", ""]
        out += [part for b in section.blocks for part in (_md_block(b), "")]
    return "\n".join(out).rstrip() + "\n"
