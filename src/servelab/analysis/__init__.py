"""Analysis: a run's typed records in, typed records out (docs/summary-json.md, docs/statistics.md).

Sits below ``runner/`` and ``report/`` and above ``store/``, ``engines/`` and the pure core:
summaries per arm (``arm_summary``), sequential looks (``looks``), comparisons
(``comparisons``), gates (``gate_outcomes``), warnings (``run_warnings``), the manifest's
settings (``settings``), theory beside measurement (``predictions``), quality rates
(``quality_rates``) and the failed-request check (``request_failures``). No file reads, no
clock, no network: whatever must be read from disk (a model's architecture, engine logs,
counter files, the workload, ``quality/ppl.json``) is read by the caller and passed in.
"""

from __future__ import annotations

from servelab.analysis.analyze import analyze, with_sections
from servelab.analysis.arm_summary import bench_summary, engine_counter_figures, summarize_arm
from servelab.analysis.gate_outcomes import GateContext, evaluate_gates, failed_required
from servelab.analysis.looks import StopDecision, look
from servelab.analysis.predictions import TheoryInputs, theory_section
from servelab.analysis.quality_rates import quality_section
from servelab.analysis.request_failures import check_request_failures, failing_arms
from servelab.analysis.run_warnings import WARNING_KINDS
from servelab.analysis.settings import RunFacts, Settings, as_manifest, run_facts, settings

__all__ = [
    "WARNING_KINDS",
    "GateContext",
    "RunFacts",
    "Settings",
    "StopDecision",
    "TheoryInputs",
    "analyze",
    "as_manifest",
    "bench_summary",
    "check_request_failures",
    "engine_counter_figures",
    "evaluate_gates",
    "failed_required",
    "failing_arms",
    "look",
    "quality_section",
    "run_facts",
    "settings",
    "summarize_arm",
    "theory_section",
    "with_sections",
]
