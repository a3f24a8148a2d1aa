"""``servelab compare RUN_A RUN_B``: two runs measured separately, analysed as two arms.

Owns building a comparison run directory (``kind: "compare"``) from two existing runs: the
chosen arm of each, its rows relabelled ``ARM@RUN``, the configuration diff from both manifests,
and a plain statement that the runs were not interleaved, so whatever changed on the machine
between them (drift, other load, thermal state) is mixed into the difference.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from servelab.errors import UsageError
from servelab.spec.confound import config_diff
from servelab.store import (
    ArmEntry,
    CompareSource,
    EffectiveValue,
    Manifest,
    StoredStop,
    read_run,
    write_manifest,
)
from servelab.store.jsonl import JsonlWriter
from servelab.store.rundir import RunDir, new_run_dir

NOT_INTERLEAVED = (
    "the two runs were not interleaved: drift of the machine between them (other load, "
    "temperature, background jobs) cannot be separated from the configuration effect"
)


def _pick_arm(manifest: Manifest, rows: Sequence[Mapping[str, object]], arm: str | None,
              root: Path) -> str:  # fmt: skip
    arms = list(manifest.arms) or sorted({str(r.get("arm")) for r in rows})
    if arm is None:
        if len(arms) != 1:
            raise UsageError(
                f"{root} has arms {', '.join(arms)}; choose one with --arm-a / --arm-b"
            )
        return str(arms[0])
    if arm not in arms:
        raise UsageError(f"{root} has no arm {arm!r}; it has {', '.join(arms)}")
    return arm


def _effective(manifest: Manifest, arm: str) -> dict[str, EffectiveValue]:
    """The arm's effective configuration; a bench arm's is built from its engine config and
    what the engine said about itself."""
    entry = manifest.arm(arm)
    if entry.effective:
        return dict(entry.effective)
    eff: dict[str, EffectiveValue] = {}
    for k, v in (entry.engine_config or {}).items():
        eff[f"engine.{k}"] = v if not isinstance(v, list) else " ".join(map(str, v))
    describe = entry.describe or next(iter(entry.describes), {})
    for k in ("build_info", "binary_sha256", "model_sha256"):
        value = describe.get(k)
        if isinstance(value, str | int | float | bool):
            eff[f"describe.{k}"] = value
    return eff


def _stop(manifest: Manifest) -> StoredStop:
    """The first run's stopping rule, as a run without a spec stores it."""
    if manifest.spec is None:
        return manifest.stored_stop or StoredStop()
    stop = manifest.stop
    return StoredStop(
        max_blocks=stop.max_blocks, target_ci_width=stop.target_ci_width,
        min_effect=stop.min_effect, min_blocks=stop.min_blocks,
    )  # fmt: skip


def compare_runs(
    root_a: Path, root_b: Path, *, arm_a: str | None = None, arm_b: str | None = None,
    out: Path | None = None, allow_workload_mismatch: bool = False,
) -> RunDir:  # fmt: skip
    run_a, run_b = read_run(root_a), read_run(root_b)
    man_a, man_b = run_a.manifest, run_b.manifest
    a = _pick_arm(man_a, run_a.rows, arm_a, root_a)
    b = _pick_arm(man_b, run_b.rows, arm_b, root_b)
    wa = man_a.workload.content_hash if man_a.workload else None
    wb = man_b.workload.content_hash if man_b.workload else None
    notes = []
    if wa != wb:
        if not allow_workload_mismatch:
            raise UsageError(
                f"the runs used different workloads ({wa} vs {wb}); their numbers answer "
                "different questions. Compare runs of the same workload, or pass "
                "--allow-workload-mismatch"
            )
        notes.append(f"the runs used different workloads ({wa} vs {wb})")
    label_a, label_b = f"{a}@{run_a.dir.run_id}", f"{b}@{run_b.dir.run_id}"
    if label_a == label_b:
        label_b += "#2"
    run = new_run_dir("compare", out)
    eff = {label_a: _effective(man_a, a), label_b: _effective(man_b, b)}
    manifest = Manifest(
        kind="compare",
        run_id=run.run_id,
        sources=(
            CompareSource(run_dir=str(root_a), run_id=run_a.dir.run_id, arm=a, label=label_a),
            CompareSource(run_dir=str(root_b), run_id=run_b.dir.run_id, arm=b, label=label_b),
        ),
        baseline=label_a,
        interleaved=False,
        decision_metrics=man_a.decision_metrics,
        stop=_stop(man_a),
        workload=man_a.workload,
        arms={label: ArmEntry(effective=e) for label, e in eff.items()},
        config_diff=config_diff(eff),
        allowed_confounds=(),
        host=man_b.host,
        hosts={label_a: man_a.host, label_b: man_b.host},
        notes=(*notes, NOT_INTERLEAVED),
        status="complete",
    )
    write_manifest(run, manifest)
    with JsonlWriter(run.requests) as writer:
        for label, arm, rows in ((label_a, a, run_a.rows), (label_b, b, run_b.rows)):
            for row in rows:
                if str(row.get("arm")) == arm:
                    writer.write({**row, "arm": label, "source_run": row.get("run_id")})
    return run
