"""Promotion: an arm that passed its gates and a role's thresholds becomes that role's
configuration, with its evidence and the artefacts to run it.

Owns ``servelab promote``, ``servelab roles`` and ``servelab verify``. A promotion is written
beside the registry, in ``promoted/ROLE.json`` (run id and directory, arm, date, engine build,
binary and model sha256, host, the figures with their intervals, the gate and role outcomes),
``promoted/ROLE.cmd`` (the exact llama-server command line) and ``promoted/ROLE.service`` (a
systemd unit running it). ``verify`` re-runs the promoted configuration briefly with
``servelab bench`` and compares it with the promoted evidence using the same statistics.
"""

from __future__ import annotations

import json
import os
import shlex
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from servelab.errors import GatesFailed, StoreError, UsageError
from servelab.report.build import build_report, read_run
from servelab.report.gates import evaluate_gates
from servelab.runner.experiment import validation_message
from servelab.spec.roles import Registry
from servelab.store.jsonl import write_json_atomic, write_text_atomic
from servelab.userfiles import read_yaml

DEFAULT_PORT = 8080


def registry_path(path: Path | None) -> Path:
    if path is not None:
        return path
    env = os.environ.get("SERVELAB_REGISTRY")
    return Path(env) if env else Path("roles.yaml")


def load_registry(path: Path) -> Registry:
    if not path.exists():
        raise UsageError(
            f"roles registry {path} does not exist; write one (docs/promotion.md) or pass "
            "--registry PATH"
        )
    raw = read_yaml(path, "roles registry")
    try:
        return Registry.model_validate(raw)
    except ValidationError as exc:
        raise validation_message(exc, str(path)) from exc


def promoted_dir(registry: Path) -> Path:
    return registry.parent / "promoted"


def command_argv(argv: list[str], port: int) -> list[str]:
    """The arm's argv with the masked port made concrete (and 127.0.0.1 kept)."""
    out = list(argv)
    if "--port" in out:
        out[out.index("--port") + 1] = str(port)
    return out


def systemd_unit(role: str, argv: list[str], env: Mapping[str, str], description: str) -> str:
    def quote(arg: str) -> str:
        if arg and all(c.isalnum() or c in "-_./:=,+@" for c in arg):
            return arg
        return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = [
        "[Unit]",
        f"Description=servelab role {role}: {description or 'promoted llama-server'}",
        "After=network.target",
        "",
        "[Service]",
        "Type=simple",
        *(f'Environment="{k}={v}"' for k, v in sorted(env.items())),
        "ExecStart=" + " ".join(quote(a) for a in argv),
        "Restart=on-failure",
        "RestartSec=5",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ]
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class Promotion:
    role: str
    record: Path
    command: Path | None
    unit: Path | None


def promote(run_root: Path, arm: str, role: str, *, registry: Path, port: int = DEFAULT_PORT
            ) -> Promotion:  # fmt: skip
    reg = load_registry(registry)
    if role not in reg.roles:
        raise UsageError(f"no role {role!r} in {registry}; roles: {', '.join(reg.roles)}")
    report = build_report(run_root)
    manifest, rows, summary = report.manifest, report.rows, report.summary
    if arm not in (manifest.get("arms") or {}):
        raise UsageError(f"{run_root} has no arm {arm!r}; arms: {', '.join(manifest['arms'])}")
    own = (summary.get("gates") or {}).get(arm) or {}
    failed = [r for r, res in own.items() if not res.get("passed")]
    if failed:
        raise GatesFailed(f"arm {arm!r} fails its run's gate {failed[0]!r}; it cannot be promoted")
    role_rules = reg.roles[role].rules
    outcome = evaluate_gates(role_rules, summary, rows,
                             interleaved=bool(manifest.get("interleaved", True)),
                             seed=int(manifest.get("seed") or 0))[arm]  # fmt: skip
    missed = [r for r, res in outcome.items() if not res.get("passed")]
    if missed:
        res = outcome[missed[0]]
        raise GatesFailed(
            f"arm {arm!r} does not meet role {role!r}: {missed[0]} (value {res.get('value')}, "
            f"interval {res.get('interval')}, threshold {res.get('threshold')})"
        )
    entry = manifest["arms"][arm]
    starts = entry.get("starts") or []
    describe = starts[0]["describe"] if starts else {}
    argv = command_argv(list(entry.get("argv") or []), port)
    env = dict((entry.get("engine_config") or {}).get("env") or {})
    out = promoted_dir(registry)
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "schema_version": 1,
        "role": role,
        "arm": arm,
        "promoted_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "run_id": manifest.get("run_id"),
        "run_dir": str(run_root.resolve()),
        "workload": manifest.get("workload"),
        "engine": {
            "kind": (entry.get("effective") or {}).get("engine.kind"),
            "build": (entry.get("effective") or {}).get("engine.build"),
            "build_info": describe.get("build_info"),
            "binary": (entry.get("effective") or {}).get("engine.binary"),
            "binary_sha256": (entry.get("effective") or {}).get("engine.binary_sha256"),
            "model_path": (entry.get("effective") or {}).get("model.path"),
            "model_sha256": (entry.get("effective") or {}).get("model.sha256"),
            "argv": argv,
            "env": env,
            "engine_config": entry.get("engine_config"),
        },
        "effective": entry.get("effective"),
        "host": manifest.get("host"),
        "hardware": manifest.get("hardware"),
        "evidence": {
            "metrics": (summary.get("arms") or {}).get(arm, {}).get("metrics"),
            "comparisons": [
                c
                for c in summary.get("comparisons") or []
                if arm in (c.get("candidate"), c.get("baseline"))
            ],
            "gates": own,
            "role_rules": outcome,
            "quality": ((summary.get("quality") or {}).get("arms") or {}).get(arm),
        },
    }
    path = out / f"{role}.json"
    write_json_atomic(path, record)
    command = unit = None
    if argv:
        command = out / f"{role}.cmd"
        prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(env.items()))
        write_text_atomic(command, (prefix + " " if prefix else "") + shlex.join(argv) + "\n")
        unit = out / f"servelab-{role}.service"
        write_text_atomic(unit, systemd_unit(role, argv, env, reg.roles[role].description))
    return Promotion(role, path, command, unit)


def list_roles(registry: Path) -> list[dict[str, Any]]:
    reg = load_registry(registry)
    out = []
    for name, role in reg.roles.items():
        path = promoted_dir(registry) / f"{name}.json"
        holder = None
        if path.exists():
            try:
                holder = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise StoreError(f"cannot read {path}: {exc}") from exc
        out.append({"role": name, "description": role.description, "rules": list(role.rules),
                    "holder": holder})  # fmt: skip
    return out


def load_promotion(registry: Path, role: str) -> dict[str, Any]:
    path = promoted_dir(registry) / f"{role}.json"
    if not path.exists():
        raise UsageError(f"role {role!r} has no promoted configuration yet; run servelab promote")
    try:
        record: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise StoreError(f"cannot read {path}: {exc}") from exc
    return record


@dataclass(frozen=True, slots=True)
class Verification:
    role: str
    bench_dir: Path
    compare_dir: Path
    summary: dict[str, Any]
    regressions: list[str]
    notes: list[str]


def verify(registry: Path, role: str, *, requests: int = 12, warmup: int = 2,
           out: Path | None = None) -> Verification:  # fmt: skip
    """Run the promoted configuration briefly and compare it with the promoted evidence."""
    from servelab.runner.bench import run_bench
    from servelab.runner.compare import compare_runs
    from servelab.spec.bench import BenchConfig
    from servelab.spec.engine import EngineConfig

    record = load_promotion(registry, role)
    source = Path(record["run_dir"])
    if not (source / "requests.jsonl").exists():
        raise UsageError(
            f"the run that earned role {role!r} ({source}) is gone; verify compares against its "
            "requests, so promote again from a run that exists"
        )
    _, manifest, _, _ = read_run(source)
    base = (manifest.get("spec") or {}).get("base") or {}
    effective = record.get("effective") or {}
    engine_cfg = dict(record["engine"]["engine_config"] or {})
    engine_cfg["port"] = None
    try:
        config = BenchConfig(
            engine=EngineConfig.model_validate(engine_cfg),
            workload=(record.get("workload") or {}).get("name") or "chat-tools",
            requests=requests, warmup=warmup,
            max_tokens=int(effective.get("max_tokens") or base.get("max_tokens") or 128),
            temperature=float(effective.get("sampling.temperature") or 0.0),
            ignore_eos=bool(effective.get("ignore_eos")), name=f"verify-{role}",
        )  # fmt: skip
    except ValidationError as exc:
        raise validation_message(exc, f"promoted configuration of {role!r}") from exc
    bench = run_bench(config, out=out / "bench" if out else None)
    compare_dir = compare_runs(source, bench.run_dir.root, arm_a=record["arm"], arm_b="bench",
                               out=out / "compare" if out else None)  # fmt: skip
    report = build_report(compare_dir.root)
    notes = []
    describe = (json.loads(bench.run_dir.manifest.read_text(encoding="utf-8"))
                .get("arms", {}).get("bench", {}).get("describe") or {})  # fmt: skip
    for key, field in (("binary_sha256", "binary_sha256"), ("model_sha256", "model_sha256"),
                       ("build_info", "build_info")):  # fmt: skip
        if record["engine"].get(field) and describe.get(key) != record["engine"].get(field):
            notes.append(f"{key} changed since the promotion: {record['engine'].get(field)} -> "
                         f"{describe.get(key)}")  # fmt: skip
    regressions = [
        str(c.get("summary") or c["metric"]) for c in report.summary.get("comparisons") or []
        if c.get("verdict") == "worse"
    ]  # fmt: skip
    return Verification(role, bench.run_dir.root, compare_dir.root, report.summary, regressions,
                        notes)  # fmt: skip
