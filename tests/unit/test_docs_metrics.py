"""docs/metrics.md documents every metric in servelab.metrics.METRICS (and so stays in step)."""

from __future__ import annotations

import re
from pathlib import Path

from servelab.metrics import METRICS

DOC = Path(__file__).parents[2] / "docs" / "metrics.md"


def test_every_metric_is_documented() -> None:
    assert DOC.is_file(), f"{DOC} is missing: it must document every name in METRICS"
    text = DOC.read_text(encoding="utf-8")
    # whole names only: "draft_n" must not be satisfied by "draft_n_accepted"
    missing = [
        m.name
        for m in METRICS
        if not re.search(rf"(?<![A-Za-z0-9_]){re.escape(m.name)}(?![A-Za-z0-9_])", text)
    ]
    assert missing == []
