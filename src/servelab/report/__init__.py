"""Reports: render a run's typed summary as Markdown, HTML and plots (docs/report.md).

``build_report(root)`` reads a run directory, calls ``servelab.analysis``, renders and writes
summary.json, report.md and report.html. Everything else here is a pure renderer.
"""

from __future__ import annotations

from servelab.report.build import Report, build_report

__all__ = ["Report", "build_report"]
