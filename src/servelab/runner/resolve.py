"""Each arm's effective configuration, resolved before any request is sent.

Owns the flat ``{field: value}`` the confound guard compares, in the order the manifest records
it: the engine-neutral keys (engine kind, sampling, output limit, workload hash and the system
prompt variant the arm sends, ``<variant> sha256:<hex>``, cache settings, slots, the
environment passed to the engine), then what the engine class says about itself
(``Engine.effective_config``: for llama.cpp, the full argument list with every option made
explicit, the binary, its sha256 and build, the model file and its sha256). Nothing is started
and no port is chosen; this module never names a concrete engine.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from servelab.engines.base import EffectiveValue
from servelab.engines.registry import engine_class
from servelab.spec.experiment import ArmConfig, ExperimentSpec
from servelab.spec.settings import SETTINGS
from servelab.workloads import Workload

__all__ = ["canonical_names", "effective_config"]


def effective_config(
    spec: ExperimentSpec, arm: ArmConfig, workload: Workload, log_dir: Path | None = None
) -> tuple[dict[str, EffectiveValue], list[str]]:
    """The arm's effective configuration, and its engine argument list (port masked).

    ``log_dir`` is not used (nothing is launched); it is accepted for older callers.
    """
    c = arm.engine
    eff: dict[str, EffectiveValue] = {
        "engine.kind": c.kind,
        "sampling.temperature": arm.temperature,
        "sampling.seed": arm.seed,
        "max_tokens": arm.max_tokens,
        "ignore_eos": arm.ignore_eos,
        "workload.name": workload.name,
        "workload.hash": workload.content_hash,
        "prefix_cache": c.prefix_cache,
        "unique_prefix": c.unique_prefix,
        "chunk_timings": c.chunk_timings,
        "parallel": c.parallel,
        "ctx_per_slot": c.ctx_per_slot,
        "requests_per_block": spec.requests_per_block,
        "warmup": spec.warmup,
        "request_timeout_s": spec.base.request_timeout_s,
    }
    if workload.systems or arm.system_prompt:  # a workload without variants: as released
        eff = _after(eff, "workload.hash", "workload.system",
                     workload.system_label(arm.system_prompt))  # fmt: skip
    eff.update({f"env.{k}": v for k, v in sorted(c.env.items())})
    engine = engine_class(c.kind).effective_config(c, arm.name)
    eff.update(engine.values)
    return eff, list(engine.argv)


def _after(
    eff: dict[str, EffectiveValue], key: str, new: str, value: EffectiveValue
) -> dict[str, EffectiveValue]:
    """``eff`` with ``new`` inserted right after ``key`` (the recorded order is the report's)."""
    out: dict[str, EffectiveValue] = {}
    for k, v in eff.items():
        out[k] = v
        if k == key:
            out[new] = value
    return out


def canonical_names(names: tuple[str, ...], arms: Mapping[str, ArmConfig]) -> tuple[str, ...]:
    """``declare`` / ``--allow-confound`` names with each engine's aliases made canonical
    (for llama.cpp, ``-lv`` and ``log-verbosity`` both mean ``llama.verbosity``)."""
    given = names
    names = tuple(n for n in names if n not in SETTINGS)  # a setting's fields are known already
    by_kind: dict[str, list[ArmConfig]] = {}
    for arm in arms.values():
        by_kind.setdefault(arm.engine.kind, []).append(arm)
    for kind, kind_arms in sorted(by_kind.items()):
        names = engine_class(kind).canonical_names(names, [a.engine for a in kind_arms])
    canonical = iter(names)
    return tuple(n if n in SETTINGS else next(canonical) for n in given)
