"""Reading what theory beside measurement needs from disk, for ``servelab report``.

Owns the file reads behind ``analysis.predictions``: each arm's model architecture (from the
model file its effective configuration names, when that file is still there), its engine's
decode steps over its blocks (``metrics/``, read through its engine's counter names), its
spec-decode record (``analysis.spec_decode``, given by the caller or built from the counters),
the architecture of its draft model when it speculated with one (``llama.spec-draft-model``)
and the KV MiB its engine log reported at start-up (``-lv 4``). A file that cannot be read
becomes a note or a missing figure, never an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from servelab.analysis.predictions import TheoryInputs
from servelab.analysis.settings import ArmFacts, RunFacts
from servelab.analysis.spec_decode import spec_decode_record
from servelab.errors import ServelabError
from servelab.models.arch_files import load_architecture
from servelab.report.counter_inputs import counter_inputs
from servelab.store.engine_records import SpecDecodeRecord
from servelab.store.rundir import RunDir
from servelab.theory.arch import Architecture
from servelab.theory.kvreport import measured_kv_from_log


def decode_steps(run: RunDir, arm: str, info: ArmFacts) -> float | None:
    """The arm's decode steps over its blocks: its engine's decode-call counter (llama.cpp's
    ``n_decode``), else generated tokens - accepted draft tokens (every step yields one token
    plus the drafts it accepted; vLLM); None without either."""
    inputs = counter_inputs(run, arm, info)
    names = inputs.names
    calls = [
        v for b in inputs.blocks if (v := names.read(b.deltas, names.decode_calls)) is not None
    ]
    if calls:
        return sum(calls)
    tokens = [names.read(b.deltas, names.tokens_predicted) for b in inputs.blocks]
    if not tokens or None in tokens:
        return None
    accepted = [names.read(b.deltas, names.draft_accepted_tokens) or 0.0 for b in inputs.blocks]
    return sum(t or 0.0 for t in tokens) - sum(accepted)


def log_kv_mib(run: RunDir, arm: str) -> float | None:
    """The KV MiB the engine reported at the arm's first start (None below ``-lv 4``)."""
    try:
        text = run.engine_log(arm).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    measured = measured_kv_from_log(text)
    return measured.kv_mib if measured else None


def draft_architecture(info: ArmFacts) -> Architecture | None:
    """The architecture of the draft model file the arm's effective configuration names
    (llama.cpp's ``spec-draft-model``); None without one, or when it cannot be read."""
    path = info.effective.get("llama.spec-draft-model")
    if not isinstance(path, str) or path in ("", "(default)", "none") or not Path(path).is_file():
        return None
    try:
        return load_architecture(path)
    except ServelabError:
        return None


def _arm_inputs(
    run: RunDir, arm: str, info: ArmFacts, spec: SpecDecodeRecord | None
) -> TheoryInputs | None:
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
    steps = decode_steps(run, arm, info) if spec is not None else None
    draft = info.effective.get("model.draft_sha256")
    drafter = draft_architecture(info) if spec is not None else None
    return TheoryInputs(arch, None, spec, kv, steps, str(draft) if draft else None, drafter)


def read_theory_inputs(
    run: RunDir, facts: RunFacts, spec_decode: Mapping[str, SpecDecodeRecord] | None = None
) -> dict[str, TheoryInputs]:
    """Per arm with a local model file what ``analysis.predictions`` needs from disk.
    ``spec_decode``: the summary's records (from rows and counters); by default each arm's
    record is built from its counter deltas alone."""
    out = {}
    for arm, info in facts.arms.items():
        if spec_decode is not None:
            spec = spec_decode.get(arm)
        else:
            spec = spec_decode_record((), counter_inputs(run, arm, info))
        inputs = _arm_inputs(run, arm, info, spec)
        if inputs is not None:
            out[arm] = inputs
    return out
