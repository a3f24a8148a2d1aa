"""The bench summary as a rich table (``servelab bench``). Pure: printing is the caller's.

Takes ``ArmSummary`` records (or, while ``servelab bench`` still hands over JSON, their JSON
form, which is read back into the record first).

Owns how numbers are shown: milliseconds for sub-second latencies, one decimal for rates,
failures on their own line so they are never mistaken for part of the latency figures.
"""

from __future__ import annotations

from rich.table import Table

from servelab.metrics import METRIC_BY_NAME
from servelab.store.summary import ArmSummary

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


def summary_table(arm: str, a: ArmSummary) -> Table:
    table = Table(title=f"{arm}: {a.n_ok} ok, {a.n_failed} failed (failed requests excluded)")
    table.add_column("metric")
    for col in COLUMNS:
        table.add_column(col, justify="right")
    table.add_column("n", justify="right")
    for metric in SHOWN:
        s = a.metrics.get(metric)
        if s is None or not s.n:
            continue
        values = (s.median, s.p90, s.p99, s.mean, s.std)  # the order of COLUMNS
        table.add_row(metric, *(fmt_value(metric, v) for v in values), str(s.n))
    return table


def failure_lines(a: ArmSummary) -> list[str]:
    failures = a.failures
    return [f"{outcome}: {count}" for outcome, count in sorted(failures.items())]


def warning_lines(a: ArmSummary) -> list[str]:
    """Caveats a reader of the table must see, each with the flag that removes it."""
    lines = []
    if a.itl_unverified:
        lines.append(
            f"itl_s leaves out {a.itl_unverified} request(s) whose chunks carried several tokens "
            "the server did not count (e.g. CJK text); rerun with --chunk-timings for exact ITL"
        )
    if a.n_out_fallback:
        lines.append(
            f"{a.n_out_fallback} request(s) had no usage from the server; "
            "n_out for them counts chunks"
        )
    if a.invalid_utf8_requests:
        lines.append(f"{a.invalid_utf8_requests} request(s) had invalid UTF-8")
    return lines
