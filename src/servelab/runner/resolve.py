"""Each arm's effective configuration, resolved before any request is sent.

Owns the flat ``{field: value}`` the confound guard compares: the engine's full argument list
with every llama-server option made explicit (defaults read from the binary's own ``--help``),
the binary, its sha256 and build, the model file and its sha256, the environment passed to the
engine, sampling, output limit, workload hash, cache settings and slots (the address the engine
binds to is ``llama.host``). The port is left out: every start picks a free one. Where an
engine listens is servelab's alone: an arm whose own flags set ``host`` or ``port`` under any
alias the binary lists is refused here, as the spec refuses the spellings it knows.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from servelab.engines.base import create_engine
from servelab.engines.install import find_llama_binary
from servelab.engines.llamacpp import LlamaCppEngine, binary_text, build_from_version
from servelab.errors import UsageError
from servelab.models import file_sha256
from servelab.spec.experiment import ArmConfig, ExperimentSpec
from servelab.spec.llamaargs import OptionTable, canonicalize, parse_help
from servelab.store.rundir import RunDir
from servelab.workloads import Workload

_NOT_COMPARED = ("port",)  # chosen afresh at every start
_OWNED = ("host", "port")  # servelab's: `bind` and `port` in the engine config


@functools.lru_cache(maxsize=8)
def option_table(binary: str) -> OptionTable:
    """The options a llama-server binary lists in its ``--help``, read once per binary."""
    return parse_help(binary_text(binary, "--help"))


def effective_config(
    spec: ExperimentSpec, arm: ArmConfig, workload: Workload, log_dir: Path
) -> tuple[dict[str, Any], list[str]]:
    """The arm's effective configuration, and its engine argument list (port masked)."""
    engine = create_engine(arm.engine, RunDir(log_dir).engine_log(arm.name))
    c = arm.engine
    eff: dict[str, Any] = {
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
    eff.update({f"env.{k}": v for k, v in sorted(c.env.items())})
    if isinstance(engine, LlamaCppEngine):
        binary = str(engine.binary)
        table = option_table(binary)
        refuse_owned_options(arm.name, c.flags, table)
        canon = canonicalize(engine.argv[1:], table)
        eff.update({
            "engine.binary": binary,
            "engine.binary_sha256": file_sha256(Path(binary)),
            "engine.build": build_from_version(binary_text(binary, "--version")),
            "model.path": str(engine.model.path),
            "model.sha256": engine.model.sha256,
            "engine.ignored_env": ",".join(engine.stripped_env),
        })  # fmt: skip
        eff.update(
            {f"llama.{k}": v for k, v in sorted(canon.values.items()) if k not in _NOT_COMPARED}
        )
        if canon.unknown:
            eff["llama.unknown_arguments"] = " ".join(canon.unknown)
        return eff, argv_without_port(engine.argv)
    eff.update({
        "engine.endpoint": c.endpoint,
        "engine.served_model": c.model,
        "engine.api_key_env": c.api_key_env,
    })  # fmt: skip
    return eff, []


def refuse_owned_options(arm: str, flags: tuple[str, ...], table: OptionTable) -> None:
    """Refuse an arm whose flags set llama-server's host or port, whatever alias they use."""
    owned = sorted(set(canonicalize(list(flags), table).given) & set(_OWNED))
    if owned:
        raise UsageError(
            f"arm {arm}: flags set llama-server's --{owned[0]}, which servelab owns; use "
            f"engine.{'bind' if owned[0] == 'host' else 'port'} in the spec instead"
        )


def canonical_names(names: tuple[str, ...], arms: dict[str, ArmConfig]) -> tuple[str, ...]:
    """``declare`` / ``--allow-confound`` names with llama-server aliases made canonical
    (``-lv`` and ``log-verbosity`` both mean ``verbosity``), using the arms' binaries' help."""
    binaries = {
        str(find_llama_binary("llama-server", explicit=a.engine.binary))
        for a in arms.values() if a.engine.kind == "llamacpp"
    }  # fmt: skip
    tables = [option_table(b) for b in sorted(binaries)]
    out = []
    for name in names:
        bare = name.removeprefix("llama.")
        found = None
        for table in tables:
            for candidate in (bare, f"--{bare.lstrip('-')}", f"-{bare.lstrip('-')}"):
                found = found or table.canonical(candidate)
        out.append(f"llama.{found}" if found else name)
    return tuple(out)


def argv_without_port(argv: list[str]) -> list[str]:
    out = list(argv)
    if "--port" in out:
        i = out.index("--port")
        out[i + 1] = "<free port>"
    return out
