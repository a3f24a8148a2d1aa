"""The run-directory layout: where each file of a run lives, and creating a new run.

Owns paths and naming (``runs/<name>-<UTC timestamp>/``). A run directory is never reused by a
new run: creating one that already holds requests is refused, so nothing is overwritten.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from servelab.errors import StoreError, UsageError


@dataclass(frozen=True, slots=True)
class RunDir:
    root: Path

    @property
    def run_id(self) -> str:
        return self.root.name

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def requests(self) -> Path:
        return self.root / "requests.jsonl"

    @property
    def metrics_dir(self) -> Path:
        return self.root / "metrics"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def workload(self) -> Path:
        """The workload a run stored in its directory (an import's, derived from its rows)."""
        return self.root / "inputs" / "workload.json"

    def engine_log(self, arm: str) -> Path:
        return self.root / f"engine-{arm_stem(arm)}.log"

    def kv_probe_log(self, arm: str) -> Path:
        return self.root / f"kv-probe-{arm_stem(arm)}.log"

    def block_metrics(self, arm: str, block: int, concurrency: int) -> Path:
        """The /metrics counter deltas of one block."""
        return self.metrics_dir / f"{arm_stem(arm)}-b{block}-c{concurrency}.json"

    def arm_block_metrics(self, arm: str) -> list[Path]:
        return sorted(self.metrics_dir.glob(f"{arm_stem(arm)}-b*-c*.json"))


def arm_stem(arm: str) -> str:
    """An arm id as it appears in file names (``kv=q8_0,spec_type=none`` keeps ``=``)."""
    return re.sub(r"[^A-Za-z0-9._=+-]+", "_", arm)


def read_manifest_json(run: RunDir) -> dict[str, Any]:  # JSON boundary: any format version
    """A run directory's manifest as stored (any format version); a missing or unreadable one
    is a one-line error. Code reading a run wants ``store.read_manifest`` (typed, upgraded)."""
    if not run.root.is_dir():
        raise UsageError(
            f"{run.root} is not a directory; give a run directory (runs/<name>-<time>)"
        )
    if not run.manifest.exists():
        raise UsageError(f"{run.root} has no manifest.json; is it a servelab run directory?")
    try:
        manifest = json.loads(run.manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise StoreError(f"cannot read {run.manifest}: {exc}") from exc
    if not isinstance(manifest, dict):
        raise StoreError(f"{run.manifest} is not a JSON object; the run directory is damaged")
    return manifest  # JSON boundary: checked and upgraded by Manifest.from_json


def _slug(name: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-")
    return slug or "run"


def new_run_dir(name: str, out: Path | None = None, parent: Path = Path("runs")) -> RunDir:
    """Create a fresh run directory: ``out`` itself, or ``parent/<name>-<timestamp>``."""
    run = plan_run_dir(name, out, parent)
    create_run_dir(run)
    return run


def plan_run_dir(name: str, out: Path | None = None, parent: Path = Path("runs")) -> RunDir:
    """Choose a fresh run directory without creating it; refuse one that holds a run."""
    if out is None:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        out = parent / f"{_slug(name)}-{stamp}"
    run = RunDir(out)
    if run.requests.exists() and run.requests.stat().st_size > 0:
        raise UsageError(
            f"{out} already holds a run (requests.jsonl is not empty); "
            "choose a new --out directory so nothing is overwritten"
        )
    return run


def create_run_dir(run: RunDir) -> None:
    try:
        run.metrics_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create run directory {run.root}: {exc.strerror}") from exc
