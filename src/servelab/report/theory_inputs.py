"""Reading what theory beside measurement needs from disk, for ``servelab report``.

Owns the file reads behind ``analysis.predictions``: each arm's model architecture (from the
model file its effective configuration names, when that file is still there), its speculative
decoding counter deltas (``metrics/ARM-b*-c*.json``, read through its engine's counter names)
and the KV MiB its engine log reported at start-up (``-lv 4``). A file that cannot be read
becomes a note or a missing figure, never an error.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from servelab.analysis.engine_facts import counter_names
from servelab.analysis.predictions import DraftCounters, TheoryInputs
from servelab.analysis.settings import ArmFacts, RunFacts
from servelab.errors import ServelabError
from servelab.models.arch_files import load_architecture
from servelab.store.rundir import RunDir
from servelab.theory.kvreport import measured_kv_from_log


def _deltas(path: Path) -> Mapping[str, float]:
    try:
        deltas = json.loads(path.read_text(encoding="utf-8")).get("counter_deltas") or {}
    except (OSError, ValueError, AttributeError):
        return {}
    return deltas if isinstance(deltas, dict) else {}


def draft_counters(run: RunDir, arm: str, info: ArmFacts) -> DraftCounters:
    """(drafts, drafted tokens, accepted tokens, decode calls) over the arm's metrics deltas."""
    names = counter_names(info.effective.get("engine.kind"))
    totals = [0.0, 0.0, 0.0, 0.0]
    keys = (names.drafts, names.draft_tokens, names.draft_accepted_tokens, names.decode_calls)
    for path in run.arm_block_metrics(arm):
        deltas = _deltas(path)
        for i, key in enumerate(keys):
            if key is not None:
                totals[i] += float(deltas.get(key, 0.0))
    return DraftCounters(*totals)


def log_kv_mib(run: RunDir, arm: str) -> float | None:
    """The KV MiB the engine reported at the arm's first start (None below ``-lv 4``)."""
    try:
        text = run.engine_log(arm).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    measured = measured_kv_from_log(text)
    return measured.kv_mib if measured else None


def _arm_inputs(run: RunDir, arm: str, info: ArmFacts) -> TheoryInputs | None:
    path = info.effective.get("model.path")
    if not path:
        return None
    if not Path(str(path)).exists():
        return TheoryInputs(None, f"no prediction: the model file {path} is no longer there")
    try:
        arch = load_architecture(str(path))
    except ServelabError as exc:
        return TheoryInputs(None, f"no prediction: {exc}")
    kv = log_kv_mib(run, arm) if info.kv_mib_reported is None else None
    return TheoryInputs(arch, None, draft_counters(run, arm, info), kv)


def read_theory_inputs(run: RunDir, facts: RunFacts) -> dict[str, TheoryInputs]:
    """Per arm with a local model file what ``analysis.predictions`` needs from disk."""
    out = {}
    for arm, info in facts.arms.items():
        inputs = _arm_inputs(run, arm, info)
        if inputs is not None:
            out[arm] = inputs
    return out
