"""Input models: what the user asks servelab to run. Pure pydantic; unknown keys are errors.

Owns nothing itself: it re-exports the public API of its modules (the experiment, bench, engine,
gates and role models, arm resolution, the block schedule and the confound check). The engine
kinds a spec may name (``ENGINE_KINDS``) are listed once, in ``spec.engine``. Must not read
files, start processes or speak HTTP.
"""

from __future__ import annotations

from servelab.spec.bench import BenchConfig
from servelab.spec.confound import ConfoundError, check_confounds, config_diff
from servelab.spec.engine import ENGINE_KINDS, EngineConfig, EngineKind
from servelab.spec.experiment import ArmConfig, ExperimentSpec, resolve_arm
from servelab.spec.gates import GatesSpec, Rule, parse_rule
from servelab.spec.roles import Registry, Role
from servelab.spec.schedule import BlockPlan, plan_blocks

__all__ = [
    "ENGINE_KINDS",
    "ArmConfig",
    "BenchConfig",
    "BlockPlan",
    "ConfoundError",
    "EngineConfig",
    "EngineKind",
    "ExperimentSpec",
    "GatesSpec",
    "Registry",
    "Role",
    "Rule",
    "check_confounds",
    "config_diff",
    "parse_rule",
    "plan_blocks",
    "resolve_arm",
]
