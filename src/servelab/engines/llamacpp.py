"""The managed llama.cpp engine: launch ``llama-server``, watch it, describe it, stop it.

Owns llama-server's argument list, health check, ``/props`` description, ``/metrics`` scrape
and the request fields that make its numbers fair (``cache_prompt: false`` unless prefix caching
is asked for; ``timings_per_token`` when exact tokens per chunk are asked for). Never starts
it through a shell; binds to 127.0.0.1 unless the configuration's ``bind`` says otherwise, and
always sends its own traffic to loopback when it binds to every interface.
"""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path
from typing import Any

from servelab.client import admin
from servelab.engines.base import register
from servelab.engines.process import ManagedProcess, check_port_free, free_port, wait_until
from servelab.engines.prom import MetricsSnapshot, parse_metrics
from servelab.errors import EngineCrashedError, EngineStartError
from servelab.models import file_sha256
from servelab.spec.engine import EngineConfig, connect_address

# llama-server reads LLAMA_ARG_* variables as flags; inheriting them would change a
# configuration behind the user's back, so only the ones declared in the config pass.
_ENGINE_ENV_PREFIX = "LLAMA_ARG_"


def split_build_info(build_info: str) -> tuple[str, str]:
    """``"b0-0c1e57098"`` -> (``"b0"``, ``"0c1e57098"``)."""
    version, _, commit = build_info.partition("-")
    return version, commit


@functools.lru_cache(maxsize=8)
def binary_text(binary: str, flag: str) -> str:
    """What ``binary --help`` or ``--version`` prints (stdout and stderr); cached per process."""
    try:
        done = subprocess.run(
            [binary, flag], capture_output=True, text=True, timeout=30, check=False,
            env={k: v for k, v in os.environ.items() if not k.startswith(_ENGINE_ENV_PREFIX)},
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


class LlamaCppEngine:
    kind = "llamacpp"

    def __init__(self, config: EngineConfig, log_path: Path) -> None:
        from servelab.engines.install import find_llama_binary
        from servelab.models import resolve_model

        self.config = config
        self.log_path = log_path
        self.binary = find_llama_binary("llama-server", explicit=config.binary)
        self.model = resolve_model(config.model)
        self.port = config.port or free_port(config.bind)
        self.argv = self._argv()
        self.env, self.stripped_env = self._env()
        self._proc: ManagedProcess | None = None
        self._props: dict[str, Any] = {}

    @property
    def base_url(self) -> str:
        return f"http://{connect_address(self.config.bind)}:{self.port}"

    def _argv(self) -> list[str]:
        c = self.config
        return [
            str(self.binary),
            "--model", str(self.model.path),
            "--host", c.bind,
            "--port", str(self.port),
            "--metrics",
            "--parallel", str(c.parallel),
            "--ctx-size", str(c.ctx_per_slot * c.parallel),
            *c.flags,
        ]  # fmt: skip

    def _env(self) -> tuple[dict[str, str], list[str]]:
        stripped = sorted(k for k in os.environ if k.startswith(_ENGINE_ENV_PREFIX))
        env = {k: v for k, v in os.environ.items() if not k.startswith(_ENGINE_ENV_PREFIX)}
        env.update(self.config.env)
        return env, [k for k in stripped if k not in self.config.env]

    def launch(self) -> None:
        check_port_free(self.config.bind, self.port)
        self._proc = ManagedProcess(self.argv, self.log_path, env=self.env)
        self._proc.start()

    def _exit_message(self, code: int, when: str) -> str:
        tail = self._proc.log_tail(8) if self._proc else ""
        last = " | ".join(line.strip() for line in tail.splitlines()[-3:] if line.strip())
        return f"llama-server exited with code {code} {when}; log: {self.log_path}" + (
            f"; last lines: {last}" if last else ""
        )

    def wait_healthy(self, timeout_s: float) -> None:
        proc = self._proc
        if proc is None:
            raise EngineStartError("llama-server was not launched")

        def ready() -> bool:
            return proc.poll() is not None or admin.health_status(self.base_url + "/health") == 200

        ok = wait_until(ready, timeout_s, interval_s=0.2)
        code = proc.poll()
        if code is not None:
            raise EngineStartError(self._exit_message(code, "during start-up"))
        if not ok:
            self.stop()
            raise EngineStartError(
                f"llama-server did not become healthy within {timeout_s:g} s; it was stopped. "
                f"Log: {self.log_path}; raise startup_timeout_s if the model is large"
            )
        self._props = admin.get_json(self.base_url + "/props")

    def check_alive(self, grace_s: float = 0.0) -> None:
        """Raise if the process has exited; wait up to ``grace_s`` for an exit under way (a
        killed server refuses connections a moment before it can be reaped)."""
        code = self._proc.poll(grace_s) if self._proc else None
        if code is not None:
            raise EngineCrashedError(self._exit_message(code, "while requests were running"))

    def describe(self) -> dict[str, Any]:
        props = self._props
        version, commit = split_build_info(str(props.get("build_info", "")))
        try:
            models = admin.get_json(self.base_url + "/v1/models").get("data", [])
        except admin.AdminHttpError:
            models = []
        return {
            "kind": self.kind,
            "version": version,
            "commit": commit,
            "build_info": props.get("build_info"),
            "binary": str(self.binary),
            "binary_sha256": file_sha256(Path(self.binary)),
            "argv": self.argv,
            "env": dict(self.config.env),
            "ignored_env": self.stripped_env,
            "model_name": self.model.name,
            "model_path": str(self.model.path),
            "model_sha256": self.model.sha256,
            "model_size_bytes": self.model.size_bytes,
            "chat_template": props.get("chat_template"),
            "total_slots": props.get("total_slots"),
            "n_ctx": (props.get("default_generation_settings") or {}).get("n_ctx"),
            "models": models,
            "base_url": self.base_url,
            "bind": self.config.bind,
        }

    def scrape_metrics(self) -> MetricsSnapshot | None:
        try:
            return parse_metrics(admin.get_text(self.base_url + "/metrics"))
        except admin.AdminHttpError:
            return None

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.stop()

    def request_extras(self) -> dict[str, Any]:
        extras: dict[str, Any] = {"cache_prompt": self.config.prefix_cache}
        if self.config.chunk_timings:
            extras["timings_per_token"] = True
        return extras

    def request_headers(self) -> dict[str, str]:
        return {}

    def chat_url(self) -> str:
        return self.base_url + "/v1/chat/completions"

    def completions_url(self) -> str:
        return self.base_url + "/v1/completions"


register("llamacpp", LlamaCppEngine)
