"""``quality/ppl.json``: perplexity and KL divergence per arm, as typed records.

Owns the file's layout and its reader. ``servelab.runner.quality`` measures and writes it after
every arm; the report reads it. Values are written as Python's ``json`` writes them (a NaN
perplexity stays ``NaN``, as in format 1).

Format changes (``PPL_SCHEMA_VERSION``; readers accept every older version):

- 2026-11-23, version 1: first format.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

PPL_SCHEMA_VERSION = 1

PplStatus = Literal["running", "complete", "failed"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PerplexityText(_Frozen):
    """The evaluation text (packaged with servelab, copied into ``quality/``)."""

    name: str
    file: str
    sha256: str
    bytes: int
    licence: str


class LogitsFile(_Frozen):
    """The baseline's logits file: where it was, its size, whether it was kept."""

    path: str
    bytes: int | None
    kept: bool


class PerplexityArm(_Frozen):
    """One arm's llama-perplexity run (``kld``: KL-mode statistics, KLD in nats, ``*_pct`` %)."""

    ppl: float
    ppl_err: float
    chunks: int | None
    ctx: int | None
    kld: dict[str, float] | None
    mode: Literal["save", "kld"]
    argv: tuple[str, ...]
    log: str
    seconds: float
    cache_type_k: str
    cache_type_v: str
    flash_attn: str


class PerplexityDoc(_Frozen):
    """The whole ``quality/ppl.json``, rewritten after every arm."""

    schema_version: int = PPL_SCHEMA_VERSION
    kind: Literal["perplexity"] = "perplexity"
    tool: str = "llama-perplexity"
    run_id: str
    created_utc: str
    text: PerplexityText
    ctx: int
    baseline: str | None
    status: PplStatus
    arms: dict[str, PerplexityArm] = {}
    skipped: dict[str, str] = {}  # arm -> why it was not measured
    logits: LogitsFile | None = None

    def to_json(self) -> dict[str, object]:
        """The file's object (Python mode, so a NaN stays a NaN as ``json`` writes it)."""
        data: dict[str, object] = self.model_dump()
        return data


def read_perplexity(path: Path) -> PerplexityDoc | None:
    """The document at ``path``; None when it is missing, unreadable or not this format."""
    try:
        return PerplexityDoc.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, ValidationError):
        return None
