"""The building blocks of a report: plain-string paragraphs, tables, replies and plot slots.

Owns the vocabulary shared by sections.py (what a report says), the section views
(quality_view.py, theory_view.py) and the renderers (markdown.py, html.py). Pure.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Para:
    text: str


@dataclass(frozen=True, slots=True)
class KeyValues:
    items: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Table:
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True, slots=True)
class Heading:
    text: str


@dataclass(frozen=True, slots=True)
class Reply:
    heading: str
    body: str


@dataclass(frozen=True, slots=True)
class Figures:
    """Where report.html places the plots of one kind (see plots.py)."""

    kind: str  # distributions | drift | forest | sweep
    what: str  # what the plots show, for the Markdown pointer


Block = Para | KeyValues | Table | Heading | Reply | Figures


@dataclass(frozen=True, slots=True)
class Section:
    key: str
    title: str
    blocks: tuple[Block, ...]
    alert: bool = False  # a banner that must be seen before anything else
