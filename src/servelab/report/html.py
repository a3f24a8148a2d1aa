"""The run report as one self-contained HTML file (report.html).

Owns the HTML rendering of the sections ``markdown.report_sections`` builds, so the HTML and the
Markdown report always say the same thing, with the plots of plots.py embedded as base64 PNG
``data:`` URIs and the CSS inline. It references no external resource, and its
Content-Security-Policy forbids loading one or running any script. Every string that comes from
the run (run, arm and field names, flags, values, model replies, errors) goes through
``html.escape``. Pure: returns a string, writes nothing.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

from servelab.analysis.row_selection import Row
from servelab.report.blocks import Block, Figures, Heading, KeyValues, Para, Reply, Section, Table
from servelab.report.plots import Plot, report_plots
from servelab.report.sections import report_sections, report_title
from servelab.store import Manifest
from servelab.store.summary import Summary

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
CSS = """
body { font: 15px/1.45 system-ui, sans-serif; color: #222; max-width: 72rem; margin: 1.5rem auto;
       padding: 0 1rem; }
h1 { font-size: 1.5rem; } h2 { border-bottom: 1px solid #ccc; margin-top: 2rem; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.6rem 0; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } tbody tr:nth-child(even) { background: #fafafa; }
.scroll { overflow-x: auto; }
ul.kv { padding-left: 1.2rem; } ul.kv li { margin: 0.2rem 0; }
#verdicts ul.kv li { font-size: 1.12em; }
.alert { background: #fde8e8; border: 3px solid #c0392b; padding: 0.6rem 1rem; }
.alert h2 { color: #c0392b; border: none; margin-top: 0.2rem; text-transform: uppercase; }
figure { margin: 0.8rem 0; } figure img { max-width: 100%; height: auto; }
figcaption, .note { color: #666; font-size: 0.9em; }
nav a { margin-right: 0.8rem; }
.reply { border-left: 3px solid #ccc; margin: 0.6rem 0; padding-left: 0.7rem; }
.reply-head { font-weight: 600; margin: 0.2rem 0; }
pre { white-space: pre-wrap; word-break: break-word; background: #f7f7f7; padding: 0.5rem;
      margin: 0; font-size: 0.88em; }
"""


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _cell(text: str) -> str:
    """A table cell: each line escaped, lines apart (a verdict with its words under it)."""
    return "<br>".join(_e(line) for line in text.split("\n"))


def _table(t: Table) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in t.headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{_cell(c)}</td>" for c in row) + "</tr>" for row in t.rows
    )
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    return f'<div class="scroll">{table}</div>'


def _figures(f: Figures, plots: Sequence[Plot]) -> str:
    mine = [p for p in plots if p.kind == f.kind]
    if not mine:
        return f'<p class="note">No plot of {_e(f.what)}: no data for it in this run.</p>'
    return "".join(
        f'<figure><img src="{p.data_uri()}" alt="{_e(p.alt)}">'
        f"<figcaption>{_e(p.title)}</figcaption></figure>"
        for p in mine
    )


def _block(block: Block, plots: Sequence[Plot]) -> str:
    if isinstance(block, Para):
        return f"<p>{_e(block.text)}</p>"
    if isinstance(block, KeyValues):
        items = "".join(f"<li><strong>{_e(k)}</strong>: {_e(v)}</li>" for k, v in block.items)
        return f'<ul class="kv">{items}</ul>'
    if isinstance(block, Table):
        return _table(block)
    if isinstance(block, Heading):
        return f"<h3>{_e(block.text)}</h3>"
    if isinstance(block, Reply):
        return (
            f'<div class="reply"><p class="reply-head">{_e(block.heading)}</p>'
            f"<pre>{_e(block.body)}</pre></div>"
        )
    return _figures(block, plots)


def _section(section: Section, plots: Sequence[Plot]) -> str:
    title = f"Warning: {section.title}" if section.alert else section.title
    cls = ' class="alert"' if section.alert else ""
    body = "\n".join(_block(b, plots) for b in section.blocks)
    return f'<section id="{_e(section.key)}"{cls}>\n<h2>{_e(title)}</h2>\n{body}\n</section>'


def render_html(summary: Summary, manifest: Manifest, rows: Sequence[Row]) -> str:
    """The whole report: a confound banner first if any, then every section of docs/report.md."""
    sections = report_sections(summary, manifest, rows)
    plots = report_plots(summary, rows)
    title = report_title(summary, manifest)
    banners = [_section(s, plots) for s in sections if s.alert]
    rest = [s for s in sections if not s.alert]
    nav = " ".join(f'<a href="#{_e(s.key)}">{_e(s.title)}</a>' for s in rest)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>",
        *banners,
        f"<h1>{_e(title)}</h1>",
        f"<nav>{nav}</nav>",
        *(_section(s, plots) for s in rest),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"
