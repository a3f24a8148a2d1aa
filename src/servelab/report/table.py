"""The bench summary as a rich table. Pure: builds renderables, printing is the caller's.

Owns how numbers are shown: milliseconds for sub-second latencies, one decimal for rates,
failures on their own line so they are never mistaken for part of the latency figures.
"""

from __future__ import annotations

from typing import Any

from rich.table import Table

from servelab.metrics import METRIC_BY_NAME

SHOWN = (
    "ttft_s", "e2e_s", "tpot_s", "itl_s", "decode_tps", "e2e_tps", "prefill_tps",
    "server_decode_tps", "n_out", "n_in",
)  # fmt: skip
COLUMNS = ("median", "p90", "p99", "mean", "std")


def fmt_value(metric: str, value: float | None) -> str:
    if value is None:
        return "-"
    unit = METRIC_BY_NAME[metric].unit if metric in METRIC_BY_NAME else ""
    if unit == "s":
        return f"{value * 1e3:.1f} ms" if abs(value) < 10 else f"{value:.2f} s"
    if unit == "tokens":
        return f"{value:.0f}"
    return f"{value:.1f}"


def summary_table(arm: str, arm_summary: dict[str, Any]) -> Table:
    n_ok, n_failed = arm_summary["n_ok"], arm_summary["n_failed"]
    table = Table(title=f"{arm}: {n_ok} ok, {n_failed} failed (failed requests excluded)")
    table.add_column("metric")
    for col in COLUMNS:
        table.add_column(col, justify="right")
    table.add_column("n", justify="right")
    for metric in SHOWN:
        s = arm_summary["metrics"].get(metric)
        if not s or not s["n"]:
            continue
        table.add_row(metric, *(fmt_value(metric, s[c]) for c in COLUMNS), str(s["n"]))
    return table


def failure_lines(arm_summary: dict[str, Any]) -> list[str]:
    return [f"{outcome}: {count}" for outcome, count in sorted(arm_summary["failures"].items())]


def warning_lines(arm_summary: dict[str, Any]) -> list[str]:
    """Caveats a reader of the table must see, each with the flag that removes it."""
    lines = []
    unverified = arm_summary.get("itl_unverified", 0)
    if unverified:
        lines.append(
            f"itl_s leaves out {unverified} request(s) whose chunks carried several tokens "
            "the server did not count (e.g. CJK text); rerun with --chunk-timings for exact ITL"
        )
    if arm_summary.get("n_out_fallback"):
        lines.append(
            f"{arm_summary['n_out_fallback']} request(s) had no usage from the server; "
            "n_out for them counts chunks"
        )
    if arm_summary.get("invalid_utf8_requests"):
        lines.append(f"{arm_summary['invalid_utf8_requests']} request(s) had invalid UTF-8")
    return lines
