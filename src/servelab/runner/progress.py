"""Live progress for runs: a rich progress bar with running medians, or nothing.

Owns what the user watches while requests run. Refreshes at a low fixed rate from rich's own
thread, so drawing never competes with the engine for CPU.
"""

from __future__ import annotations

import statistics
from typing import Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from servelab.records import Phase
from servelab.store import RequestRow


class Reporter(Protocol):
    def phase(self, name: str, total: int) -> None: ...

    def request_done(self, row: RequestRow) -> None: ...

    def note(self, text: str) -> None: ...

    def close(self) -> None: ...


class NullReporter:
    def phase(self, name: str, total: int) -> None:
        pass

    def request_done(self, row: RequestRow) -> None:
        pass

    def note(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


class RichReporter:
    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            console=self.console,
            refresh_per_second=4,
            transient=False,
        )
        self._task = TaskID(0)  # replaced by phase(), which always comes first
        self._decode: list[float] = []
        self._ttft: list[float] = []
        self._failed = 0
        self._started = False

    def phase(self, name: str, total: int) -> None:
        if not self._started:
            self.progress.start()
            self._started = True
        self._decode, self._ttft, self._failed = [], [], 0
        self._task = self.progress.add_task(name, total=total, stats="")

    def request_done(self, row: RequestRow) -> None:
        if row.outcome != "ok":
            self._failed += 1
        if row.decode_tps is not None:
            self._decode.append(row.decode_tps)
        if row.ttft_s is not None:
            self._ttft.append(row.ttft_s)
        self.progress.update(self._task, advance=1, stats=self._stats())

    def _stats(self) -> str:
        parts = []
        if self._decode:
            parts.append(f"decode {statistics.median(self._decode):.1f} tok/s")
        if self._ttft:
            parts.append(f"ttft {statistics.median(self._ttft) * 1e3:.0f} ms")
        if self._failed:
            parts.append(f"[red]{self._failed} failed[/]")
        return "median " + ", ".join(parts) if parts else ""

    def note(self, text: str) -> None:
        self.console.print(text)

    def close(self) -> None:
        if self._started:
            self.progress.stop()
            self._started = False


class ExperimentReporter(RichReporter):
    """One bar over all of an experiment's measured requests; the description names the
    current block and arm, and the stats column holds every arm's running medians."""

    def __init__(self, total_trials: int, console: Console | None = None) -> None:
        super().__init__(console)
        self.total = total_trials
        self._arms: dict[str, tuple[list[float], list[float], list[int]]] = {}

    def phase(self, name: str, total: int) -> None:
        if not self._started:
            self.progress.start()
            self._started = True
            self._task = self.progress.add_task(name, total=self.total, stats="")
        self.progress.update(self._task, description=name)

    def request_done(self, row: RequestRow) -> None:
        if row.phase is not Phase.TRIAL:
            return
        decode, ttft, failed = self._arms.setdefault(row.arm, ([], [], [0]))
        if row.outcome != "ok":
            failed[0] += 1
        if row.decode_tps is not None:
            decode.append(row.decode_tps)
        if row.ttft_s is not None:
            ttft.append(row.ttft_s)
        self.progress.update(self._task, advance=1, stats=self._arm_stats())

    def _arm_stats(self) -> str:
        parts = []
        for arm, (decode, ttft, failed) in self._arms.items():
            bits = [arm]
            if decode:
                bits.append(f"{statistics.median(decode):.1f} tok/s")
            if ttft:
                bits.append(f"{statistics.median(ttft) * 1e3:.0f} ms")
            if failed[0]:
                bits.append(f"[red]{failed[0]} failed[/]")
            parts.append(" ".join(bits))
        return "medians: " + " | ".join(parts) if parts else ""
