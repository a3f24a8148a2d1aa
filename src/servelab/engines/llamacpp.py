"""The managed llama.cpp engine: what llama-server is, and one launched llama-server.

Owns the ``llamacpp`` kind's class-level answers (no keep-alive on loopback, logits for
perplexity, the KV report at ``-lv 4`` and how to read it, its ``/metrics`` counter names, its
launch command, its effective configuration, built by ``llamacpp_config`` without starting
anything) and the instance lifecycle: launch, health check, ``/props`` description,
``/metrics`` scrape and the request fields that make its numbers fair (``cache_prompt: false``
unless prefix caching is asked for; ``timings_per_token`` when exact tokens per chunk are asked
for), and its tokenizer (``/tokenize``, ``/detokenize``). Never starts it through a shell;
binds to 127.0.0.1 unless the configuration's ``bind`` says otherwise, and always sends its own
traffic to loopback when it binds to every interface.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from servelab.client import admin
from servelab.engines.base import CounterNames, EffectiveEngineConfig, token_ids
from servelab.engines.llamacpp_config import (
    binary_text,
    build_from_version,
    canonical_llama_names,
    draft_model_paths,
    effective_llama_config,
    engine_env,
    server_argv,
    server_binary,
)
from servelab.engines.local_server import LocalServer
from servelab.engines.process import (
    ManagedProcess,
    free_port,
    wait_process_healthy,
)
from servelab.engines.prom import MetricsSnapshot, parse_metrics
from servelab.errors import EngineError
from servelab.models import file_sha256, resolve_model
from servelab.spec.engine import EngineConfig
from servelab.theory.kvreport import MeasuredKv, measured_kv_from_log

__all__ = ["LlamaCppEngine", "binary_text", "build_from_version", "split_build_info"]

# The level at which llama-server prints its KV cache sizes (INFO lines).
KV_PROBE_FLAGS = ("-lv", "4")

LLAMA_COUNTERS = CounterNames(
    prompt_tokens="llamacpp:prompt_tokens_total",
    prompt_seconds="llamacpp:prompt_seconds_total",
    tokens_predicted="llamacpp:tokens_predicted_total",
    tokens_predicted_seconds="llamacpp:tokens_predicted_seconds_total",
    decode_calls="llamacpp:n_decode_total",
    drafts="llamacpp:spec_decode_num_drafts_total",
    draft_tokens="llamacpp:spec_decode_num_draft_tokens_total",
    draft_accepted_tokens="llamacpp:spec_decode_num_accepted_tokens_total",
    accepted_per_position="llamacpp:spec_decode_num_accepted_tokens_per_pos_total",
)


def split_build_info(build_info: str) -> tuple[str, str]:
    """``"b0-0c1e57098"`` -> (``"b0"``, ``"0c1e57098"``)."""
    version, _, commit = build_info.partition("-")
    return version, commit


class LlamaCppEngine(LocalServer):
    """llama.cpp's ``llama-server``, launched and managed by servelab."""

    kind: ClassVar[str] = "llamacpp"
    keep_alive: ClassVar[bool] = False  # loopback connections cost microseconds
    has_logits: ClassVar[bool] = True
    reports_kv: ClassVar[bool] = True
    managed: ClassVar[bool] = True
    process_name: ClassVar[str] = "llama-server"
    counter_names: ClassVar[CounterNames] = LLAMA_COUNTERS

    def __init__(self, config: EngineConfig, log_path: Path) -> None:
        self.config = config
        self.log_path = log_path
        self.binary = server_binary(config)
        self.model = resolve_model(config.model)
        self.port = config.port or free_port(config.bind)
        self.argv = server_argv(config, self.binary, self.model.path, str(self.port),
                                draft_model_paths(config.flags))  # fmt: skip
        self.env, self.stripped_env = engine_env(config, os.environ)
        self._proc: ManagedProcess | None = None
        self._props: dict[str, Any] = {}  # JSON boundary: llama-server's /props body

    # -- class-level: pure functions of a configuration -------------------------------------
    @classmethod
    def effective_config(cls, config: EngineConfig, arm_name: str) -> EffectiveEngineConfig:
        return effective_llama_config(config, arm_name)

    @classmethod
    def canonical_names(
        cls, names: tuple[str, ...], configs: Sequence[EngineConfig]
    ) -> tuple[str, ...]:
        return canonical_llama_names(names, configs)

    @classmethod
    def kv_probe_config(cls, config: EngineConfig) -> EngineConfig:
        return config.model_copy(update={"flags": (*config.flags, *KV_PROBE_FLAGS)})

    @classmethod
    def read_kv_report(cls, log_text: str) -> MeasuredKv | None:
        return measured_kv_from_log(log_text)

    @classmethod
    def model_bytes(cls, config: EngineConfig) -> int:
        return resolve_model(config.model).size_bytes

    # -- instance ---------------------------------------------------------------------------
    def _exit_message(self, code: int, when: str) -> str:
        tail = self._proc.log_tail(8) if self._proc else ""
        last = " | ".join(line.strip() for line in tail.splitlines()[-3:] if line.strip())
        return f"llama-server exited with code {code} {when}; log: {self.log_path}" + (
            f"; last lines: {last}" if last else ""
        )

    def wait_healthy(self, timeout_s: float) -> None:
        wait_process_healthy(
            self._proc, self.base_url + "/health", timeout_s, who="llama-server",
            exit_message=self._exit_message, advice="raise startup_timeout_s if the model is large",
        )  # fmt: skip
        self._props = admin.get_json(self.base_url + "/props")

    def describe(self) -> dict[str, object]:
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

    def reset_prefix_cache(self) -> str | None:
        return None

    def request_extras(self) -> dict[str, object]:
        extras: dict[str, object] = {"cache_prompt": self.config.prefix_cache}
        if self.config.chunk_timings:
            extras["timings_per_token"] = True
        return extras

    def tokenize(self, text: str, *, add_special: bool = False) -> list[int]:
        """``POST /tokenize``: the model's own tokenizer, as the server counts a prompt."""
        body = {"content": text, "add_special": add_special}
        return token_ids(self._tokenizer_call("/tokenize", body), "llama-server")

    def detokenize(self, tokens: Sequence[int]) -> str:
        """``POST /detokenize``."""
        answer = self._tokenizer_call("/detokenize", {"tokens": list(tokens)})
        content = answer.get("content") if isinstance(answer, dict) else None
        if not isinstance(content, str):
            raise EngineError(f"llama-server's /detokenize answered without text: {answer!r:.80}")
        return content

    def _tokenizer_call(self, path: str, body: dict[str, object]) -> object:
        try:
            return admin.post_json(self.base_url + path, body)
        except admin.AdminHttpError as exc:
            raise EngineError(f"llama-server's {path} failed ({exc}); see {self.log_path}") from exc
