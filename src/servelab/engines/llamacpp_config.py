"""llama-server's command line and effective configuration, from an engine configuration alone.

Owns what llama.cpp's flags mean to servelab: the argument list built from an ``EngineConfig``
(a pure function; the port is a parameter, masked in what is recorded), the binary's own
``--help`` read once into an option table, every option made explicit with its default for the
confound guard, the binary's build and sha256, the model file and its sha256, the ``LLAMA_ARG_*``
variables left out of the engine's environment, alias handling for ``declare`` names, and the
refusal of flags that set the host or port (servelab's). Starts no server and binds nothing:
``--help`` and ``--version`` print and exit.
"""

from __future__ import annotations

import functools
import hashlib
import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from servelab.engines.base import EffectiveEngineConfig, EffectiveValue
from servelab.engines.installed import find_llama_binary
from servelab.engines.process import MASKED_PORT, with_port
from servelab.errors import EngineStartError, UsageError
from servelab.models import file_sha256, known_model_names, resolve_model
from servelab.models.gguf_info import GgufInfo, read_gguf_info
from servelab.spec.engine import EngineConfig
from servelab.spec.llamaargs import OptionTable, canonicalize, parse_help

# llama-server reads LLAMA_ARG_* variables as flags; inheriting them would change a
# configuration behind the user's back, so only the ones declared in the config pass.
ENGINE_ENV_PREFIX = "LLAMA_ARG_"
_NOT_COMPARED = ("port",)  # chosen afresh at every start
_OWNED = ("host", "port")  # servelab's: `bind` and `port` in the engine config
# The sampler options a request leaves to the server (servelab sends temperature and seed).
SAMPLER_OPTIONS = ("top-k", "top-p", "min-p", "repeat-penalty")


@functools.lru_cache(maxsize=8)
def binary_text(binary: str, flag: str) -> str:
    """What ``binary --help`` or ``--version`` prints (stdout and stderr); cached per process."""
    try:
        done = subprocess.run(
            [binary, flag], capture_output=True, text=True, timeout=30, check=False,
            env={k: v for k, v in os.environ.items() if not k.startswith(ENGINE_ENV_PREFIX)},
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EngineStartError(f"cannot run {binary} {flag}: {exc}") from exc
    return done.stdout + done.stderr


def build_from_version(text: str) -> str:
    """``version: 0.5.0-dev (build 0, commit 0c1e57098)`` -> ``0.5.0-dev commit 0c1e57098``."""
    for line in text.splitlines():
        if line.startswith("version:"):
            return line.removeprefix("version:").strip()
    return text.strip().splitlines()[0] if text.strip() else "unknown"


@functools.lru_cache(maxsize=8)
def option_table(binary: str) -> OptionTable:
    """The options a llama-server binary lists in its ``--help``, read once per binary."""
    return parse_help(binary_text(binary, "--help"))


def server_binary(config: EngineConfig) -> Path:
    """The llama-server ``config`` runs: its ``binary``, else the one servelab would pick."""
    return find_llama_binary("llama-server", explicit=config.binary)


# llama-server's spellings of the draft model option (a file path is all it reads).
DRAFT_MODEL_FLAGS = ("--spec-draft-model", "-md", "--model-draft")


def draft_model_paths(flags: Sequence[str]) -> tuple[str, ...]:
    """``flags`` with a draft model given by registry name (``draft_model:
    qwen2.5-coder-0.5b-instruct``) replaced by the path of its pulled GGUF, as the target's
    ``model`` is; a path stays as written. A name not pulled raises ``ModelNotFoundError``
    naming ``servelab models pull``."""
    names = set(known_model_names())
    out = list(flags)
    for i, token in enumerate(out):
        flag, eq, value = token.partition("=")
        if flag not in DRAFT_MODEL_FLAGS:
            continue
        if eq and value in names:
            out[i] = f"{flag}={resolve_model(value).path}"
        elif not eq and i + 1 < len(out) and out[i + 1] in names:
            out[i + 1] = str(resolve_model(out[i + 1]).path)
    return tuple(out)


def server_argv(
    config: EngineConfig, binary: Path, model_path: Path, port: str,
    flags: Sequence[str] | None = None,
) -> list[str]:  # fmt: skip
    """llama-server's argument list for ``config`` listening on ``port`` (pure); ``flags``:
    the config's flags as resolved (``draft_model_paths``), by default as written."""
    c = config
    return [
        str(binary),
        "--model", str(model_path),
        "--host", c.bind,
        "--port", port,
        "--metrics",
        "--parallel", str(c.parallel),
        "--ctx-size", str(c.ctx_per_slot * c.parallel),
        *(c.flags if flags is None else flags),
    ]  # fmt: skip


def engine_env(
    config: EngineConfig, environ: Mapping[str, str]
) -> tuple[dict[str, str], list[str]]:
    """The engine's environment (``environ`` less ``LLAMA_ARG_*``, plus the config's own) and
    the ``LLAMA_ARG_*`` names left out."""
    stripped = sorted(k for k in environ if k.startswith(ENGINE_ENV_PREFIX))
    env = {k: v for k, v in environ.items() if not k.startswith(ENGINE_ENV_PREFIX)}
    env.update(config.env)
    return env, [k for k in stripped if k not in config.env]


def mask_port(argv: Sequence[str]) -> list[str]:
    """``argv`` with the value after ``--port`` replaced by ``MASKED_PORT``."""
    return with_port(argv, MASKED_PORT)


def refuse_owned_options(arm: str, flags: tuple[str, ...], table: OptionTable) -> None:
    """Refuse an arm whose flags set llama-server's host or port, whatever alias they use."""
    owned = sorted(set(canonicalize(list(flags), table).given) & set(_OWNED))
    if owned:
        raise UsageError(
            f"arm {arm}: flags set llama-server's --{owned[0]}, which servelab owns; use "
            f"engine.{'bind' if owned[0] == 'host' else 'port'} in the spec instead"
        )


def effective_llama_config(config: EngineConfig, arm_name: str) -> EffectiveEngineConfig:
    """The llama.cpp part of an arm's effective configuration: binary, build, sha256s, model,
    ignored environment and every llama-server option (``llama.*``) with its default made
    explicit. Reads files and runs ``--help`` / ``--version``; chooses no port."""
    binary_path = server_binary(config)
    binary = str(binary_path)
    model = resolve_model(config.model)
    table = option_table(binary)
    refuse_owned_options(arm_name, config.flags, table)
    argv = server_argv(config, binary_path, model.path, MASKED_PORT,
                       draft_model_paths(config.flags))  # fmt: skip
    canon = canonicalize(argv[1:], table)
    _, ignored_env = engine_env(config, os.environ)
    try:
        gguf: GgufInfo | None = read_gguf_info(model.path)
    except UsageError:  # not readable as GGUF here: llama-server's start will say why
        gguf = None
    values: dict[str, EffectiveValue] = {
        "engine.binary": binary,
        "engine.binary_sha256": file_sha256(binary_path),
        "engine.build": build_from_version(binary_text(binary, "--version")),
        "model.path": str(model.path),
        "model.sha256": model.sha256,
        "model.format": "gguf",
        "model.weights": gguf.quantisation if gguf else None,
        "model.chat_template_sha256": _template_file_sha256(canon.values.get("chat-template-file"))
        or (gguf.chat_template_sha256 if gguf else None),
        "sampling.engine_defaults": " ".join(
            f"{k}={_first(canon.values[k])}" for k in SAMPLER_OPTIONS if k in canon.values
        ),
        "engine.ignored_env": ",".join(ignored_env),
    }
    if gguf is not None and gguf.synthetic:  # only then: released runs' configurations stay
        values["model.synthetic"] = gguf.synthetic_like or "yes"
    if (draft := _draft_sha256(canon.values.get("spec-draft-model"))) is not None:
        values["model.draft_sha256"] = draft  # what a calibrated draft cost is looked up by
    values.update(
        {f"llama.{k}": v for k, v in sorted(canon.values.items()) if k not in _NOT_COMPARED}
    )
    if canon.unknown:
        values["llama.unknown_arguments"] = " ".join(canon.unknown)
    return EffectiveEngineConfig(values=values, argv=tuple(argv))


def _draft_sha256(value: object) -> str | None:
    """The sha256 of the draft model file an arm names (None: none, or not a readable file)."""
    if not isinstance(value, str) or value in ("", "(default)", "none"):
        return None
    path = Path(value).expanduser()
    try:
        return file_sha256(path) if path.is_file() else None
    except OSError:
        return None


def _template_file_sha256(value: object) -> str | None:
    """The sha256 of the text of the chat template file an arm serves with
    (``--chat-template-file``, which replaces the GGUF's own), None when it names none. Its
    text, not its path: an edited file is a different template."""
    if not isinstance(value, str) or value in ("", "(default)", "none"):
        return None
    path = Path(value).expanduser()
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
    except OSError:
        return None


def _first(value: object) -> str:
    """``40`` of a help default such as ``40, 0 = disabled``."""
    return str(value).split(",", 1)[0].strip()


def canonical_llama_names(
    names: tuple[str, ...], configs: Sequence[EngineConfig]
) -> tuple[str, ...]:
    """``declare`` / ``--allow-confound`` names with llama-server aliases made canonical
    (``-lv`` and ``log-verbosity`` both mean ``verbosity``), using the configs' binaries' help."""
    binaries = {str(server_binary(c)) for c in configs}
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
