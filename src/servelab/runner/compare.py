"""``servelab compare RUN_A RUN_B``: two runs measured separately, analysed as two arms.

Owns building a comparison run directory (``kind: "compare"``) from two existing runs: the
chosen arm of each, its rows relabelled ``ARM@RUN``, the configuration diff from both manifests,
and a plain statement that the runs were not interleaved, so whatever changed on the machine
between them (drift, other load, thermal state) is mixed into the difference.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import servelab
from servelab.errors import UsageError
from servelab.report.build import read_run
from servelab.spec.confound import config_diff
from servelab.store import SCHEMA_VERSION
from servelab.store.jsonl import JsonlWriter, write_json_atomic
from servelab.store.rundir import RunDir, new_run_dir


def _pick_arm(manifest: dict[str, Any], rows: Sequence[Mapping[str, Any]], arm: str | None,
              root: Path) -> str:  # fmt: skip
    arms = list(manifest.get("arms") or {}) or sorted({str(r.get("arm")) for r in rows})
    if arm is None:
        if len(arms) != 1:
            raise UsageError(
                f"{root} has arms {', '.join(arms)}; choose one with --arm-a / --arm-b"
            )
        return str(arms[0])
    if arm not in arms:
        raise UsageError(f"{root} has no arm {arm!r}; it has {', '.join(arms)}")
    return arm


def _effective(manifest: dict[str, Any], arm: str) -> dict[str, Any]:
    entry = (manifest.get("arms") or {}).get(arm) or {}
    if entry.get("effective"):
        return dict(entry["effective"])
    eff: dict[str, Any] = {}
    for k, v in (entry.get("engine_config") or {}).items():
        eff[f"engine.{k}"] = v if not isinstance(v, list) else " ".join(map(str, v))
    starts = entry.get("starts") or []
    describe = entry.get("describe") or (starts[0].get("describe") if starts else None) or {}
    for k in ("build_info", "binary_sha256", "model_sha256"):
        if describe.get(k) is not None:
            eff[f"describe.{k}"] = describe[k]
    return eff


def _workload_hash(manifest: dict[str, Any]) -> str | None:
    return (manifest.get("workload") or {}).get("content_hash")


def compare_runs(
    root_a: Path, root_b: Path, *, arm_a: str | None = None, arm_b: str | None = None,
    out: Path | None = None, allow_workload_mismatch: bool = False,
) -> RunDir:  # fmt: skip
    run_a, man_a, rows_a, _ = read_run(root_a)
    run_b, man_b, rows_b, _ = read_run(root_b)
    a = _pick_arm(man_a, rows_a, arm_a, root_a)
    b = _pick_arm(man_b, rows_b, arm_b, root_b)
    wa, wb = _workload_hash(man_a), _workload_hash(man_b)
    notes = []
    if wa != wb:
        if not allow_workload_mismatch:
            raise UsageError(
                f"the runs used different workloads ({wa} vs {wb}); their numbers answer "
                "different questions. Compare runs of the same workload, or pass "
                "--allow-workload-mismatch"
            )
        notes.append(f"the runs used different workloads ({wa} vs {wb})")
    label_a, label_b = f"{a}@{run_a.run_id}", f"{b}@{run_b.run_id}"
    if label_a == label_b:
        label_b += "#2"
    run = new_run_dir("compare", out)
    eff = {label_a: _effective(man_a, a), label_b: _effective(man_b, b)}
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "servelab_version": servelab.__version__,
        "kind": "compare",
        "run_id": run.run_id,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "sources": [
            {"run_dir": str(root_a), "run_id": run_a.run_id, "arm": a, "label": label_a},
            {"run_dir": str(root_b), "run_id": run_b.run_id, "arm": b, "label": label_b},
        ],
        "baseline": label_a,
        "interleaved": False,
        "decision_metrics": man_a.get("decision_metrics") or ["decode_tps", "ttft_s", "e2e_s"],
        "stop": man_a.get("stop") or {},
        "workload": man_a.get("workload"),
        "arms": {label_a: {"effective": eff[label_a]}, label_b: {"effective": eff[label_b]}},
        "config_diff": config_diff(eff),
        "allowed_confounds": [],
        "host": man_b.get("host"),
        "hosts": {label_a: man_a.get("host"), label_b: man_b.get("host")},
        "notes": [
            *notes,
            "the two runs were not interleaved: drift of the machine between them (other load, "
            "temperature, background jobs) cannot be separated from the configuration effect",
        ],
        "status": "complete",
    }
    write_json_atomic(run.manifest, manifest)
    with JsonlWriter(run.requests) as writer:
        for label, arm, rows in ((label_a, a, rows_a), (label_b, b, rows_b)):
            for row in rows:
                if str(row.get("arm")) == arm:
                    writer.write({**row, "arm": label, "source_run": row.get("run_id")})
    return run
