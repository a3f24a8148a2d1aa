"""An experiment's inputs, each read once per run: the spec, its workload and its arms.

Owns loading the spec file, loading the workload (and a ``load.trace``) once, resolving every
arm once (its engine configuration, request parameters with its system prompt, and effective
configuration) and the checks made on them before anything runs: each arm's
``system_prompt`` is one of the workload's variants, the confound guard, what preflight must
look at, and on resume that each arm still resolves to the configuration it started with. The typed
``ExperimentInputs`` is passed on to the manifest, the run loop and the KV probe; nothing
re-reads or re-resolves.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from servelab.engines.base import EffectiveValue
from servelab.engines.registry import engine_class
from servelab.errors import UsageError
from servelab.runner.drive import RequestParams
from servelab.runner.hardware import resolve_hardware
from servelab.runner.lifecycle import PreflightCheck
from servelab.runner.resolve import canonical_names, effective_config
from servelab.spec.confound import check_confounds
from servelab.spec.experiment import Arm, ArmConfig, ExperimentSpec, resolve_arm
from servelab.theory.hardware import Hardware
from servelab.userfiles import read_yaml
from servelab.workloads import Workload, load_trace, load_workload
from servelab.workloads.trace import Trace

Effective = dict[str, EffectiveValue]


def _beside(path: str, spec_path: Path | None) -> Path:
    """A relative path in the spec is relative to the spec file's folder."""
    given = Path(path).expanduser()
    if given.is_absolute() or spec_path is None:
        return given
    return spec_path.parent / given


def validation_message(exc: ValidationError, source: str) -> UsageError:
    first = exc.errors()[0]
    loc = ".".join(str(p) for p in first["loc"] if not str(p).startswith("function-after"))
    msg = str(first["msg"]).removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        msg = "unknown key; check its spelling or where it is nested"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return UsageError(f"{source}: {loc + ': ' if loc else ''}{msg}{more}")


def load_spec(path: Path, ray: str | None = None) -> tuple[ExperimentSpec, Mapping[str, object]]:
    """The spec file, validated, and the mapping it was read from (stored in the manifest).
    ``ray`` (``--ray``) replaces the spec's ``ray.address``, in the stored mapping too."""
    raw = read_yaml(path, "spec file")
    if not isinstance(raw, dict):
        raise UsageError(f"{path}: an experiment spec is a YAML mapping (base:, arms: ...)")
    if ray is not None:
        prior = raw.get("ray")
        raw = {**raw, "ray": {**(prior if isinstance(prior, dict) else {}), "address": ray}}
    try:
        return ExperimentSpec.model_validate(raw), raw
    except ValidationError as exc:
        raise validation_message(exc, str(path)) from exc


def _check_system_prompts(
    spec: ExperimentSpec, arms: Mapping[str, ArmConfig], workload: Workload,
    spec_path: Path | None,
) -> None:  # fmt: skip
    """Every arm's ``system_prompt`` names one of the workload's variants, and rides on the
    workload's prompts (a trace sends its own)."""
    source = str(spec_path) if spec_path is not None else "spec"
    for name, arm in arms.items():
        if arm.system_prompt is None:
            continue
        if spec.load is not None and spec.load.trace is not None:
            raise UsageError(
                f"{source}: arm {name!r}: system_prompt applies to a workload's prompts, but "
                "this run replays a trace (load.trace); drop system_prompt"
            )
        try:
            workload.system_for(arm.system_prompt)
        except ValueError as exc:
            raise UsageError(f"{source}: arm {name!r}: {exc}") from None


@dataclass(frozen=True)
class ExperimentInputs:
    """Everything a run needs from its inputs, read and resolved once."""

    spec: ExperimentSpec
    raw: Mapping[str, object]
    spec_path: Path | None
    workload: Workload
    expanded: tuple[Arm, ...]
    arms: dict[str, ArmConfig]
    effective: dict[str, Effective]
    argvs: dict[str, list[str]]
    trace: Trace | None = None  # load: {trace: FILE}, read once

    @classmethod
    def load(cls, spec_path: Path, ray: str | None = None) -> ExperimentInputs:
        """The spec file read, its workload loaded and its arms resolved, once (``ray``:
        ``--ray``, see ``load_spec``)."""
        spec, raw = load_spec(spec_path, ray)
        return cls.resolve(spec, raw, spec_path)

    @classmethod
    def resolve(
        cls, spec: ExperimentSpec, raw: Mapping[str, object], spec_path: Path | None
    ) -> ExperimentInputs:
        workload = load_workload(spec.base.workload)
        expanded = tuple(spec.expand())
        arms = {a.name: resolve_arm(spec, a) for a in expanded}
        _check_system_prompts(spec, arms, workload, spec_path)
        effective: dict[str, Effective] = {}
        argvs: dict[str, list[str]] = {}
        for name, arm in arms.items():
            effective[name], argvs[name] = effective_config(spec, arm, workload)
        trace = None
        if spec.load is not None and spec.load.trace is not None:
            trace = load_trace(_beside(spec.load.trace, spec_path))
        return cls(spec, raw, spec_path, workload, expanded, arms, effective, argvs, trace)

    def params(self, arm: str) -> RequestParams:
        """What the arm sends: sampling, output limit, and its system prompt variant's text."""
        a = self.arms[arm]
        system = self.workload.system_for(a.system_prompt) if a.system_prompt else None
        return RequestParams(a.max_tokens, a.temperature, a.seed, a.ignore_eos, system)

    def check_confounds(self, allow: tuple[str, ...]) -> list[dict[str, object]]:
        """Refuse arms that differ undeclared; the allowed confounds otherwise."""
        declared = {name: arm.declared for name, arm in self.arms.items()}
        return list(check_confounds(
            self.effective, declared, self.spec.baseline_arm,
            canonical_names(self.spec.declare, self.arms), canonical_names(allow, self.arms),
        ))  # fmt: skip

    def preflight_check(
        self, run_root: Path, max_foreign_cpu: float, *, ports: bool = True
    ) -> PreflightCheck:
        configs = [a.engine for a in self.arms.values()]
        fixed = tuple((c.bind, c.port) for c in configs if c.port) if ports else ()
        return PreflightCheck(
            run_root=run_root, thorough=True,
            managed=any(engine_class(c.kind).managed for c in configs), ports=fixed,
            model_bytes=max((engine_class(c.kind).model_bytes(c) for c in configs), default=0),
            max_foreign_cpu=max_foreign_cpu,
        )  # fmt: skip

    def hardware(self) -> Hardware | None:
        return resolve_hardware(self.spec.hardware, measure_cpu=True)

    def refuse_changed(
        self, started: Mapping[str, Mapping[str, object]], skip: tuple[str, ...] = ()
    ) -> None:
        """On resume: every arm must resolve to the configuration it started with (``skip``:
        keys not known yet)."""
        for name, eff in self.effective.items():
            before = started.get(name, {})
            # A key the run did not record is one this servelab added since: not a change.
            changed = [k for k in sorted(before) if k not in skip and eff.get(k) != before.get(k)]
            if changed:
                k = changed[0]
                raise UsageError(
                    f"arm {name!r} no longer resolves to the configuration it started with "
                    f"({k}: {before.get(k)} -> {eff.get(k)}); resume needs the same engine "
                    "build, model and flags; start a new run instead"
                )
