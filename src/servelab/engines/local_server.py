"""What every engine servelab launches as a local HTTP server answers the same way.

Owns the shared half of the ``llamacpp`` and ``vllm`` kinds: where the server is reached
(loopback when it binds to every interface), launching its argument list as a managed process
on a port checked free first (and the command a recorded argv runs again), watching that
process and stopping it, the OpenAI paths, and the
``parallel`` a bench concurrency needs (llama-server's slots, vLLM's ``--max-num-seqs``). Each
engine class keeps what differs: its argv, health and description, metrics, tokenizer, and
the exit message its log supports.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from servelab.client.transport import Transport
from servelab.engines.process import ManagedProcess, check_port_free, with_port
from servelab.errors import EngineCrashedError
from servelab.spec.engine import EngineConfig, connect_address


class LocalServer:
    """Mixed into an engine class that sets these attributes in its ``__init__``."""

    config: EngineConfig
    log_path: Path
    port: int
    argv: list[str]
    env: dict[str, str]
    _proc: ManagedProcess | None

    @classmethod
    def config_for_concurrency(cls, config: EngineConfig, concurrency: int) -> EngineConfig:
        """Enough requests at once (``parallel``) for ``concurrency``."""
        if config.parallel < concurrency:
            return config.model_copy(update={"parallel": concurrency})
        return config

    @classmethod
    def launch_command(cls, argv: Sequence[str], port: int) -> list[str]:
        """The recorded argv with the masked port made concrete (the bind address kept)."""
        return with_port(argv, str(port))

    @property
    def base_url(self) -> str:
        return f"http://{connect_address(self.config.bind)}:{self.port}"

    def _exit_message(self, code: int, when: str) -> str:
        raise NotImplementedError

    def launch(self) -> None:
        check_port_free(self.config.bind, self.port)
        self._proc = ManagedProcess(self.argv, self.log_path, env=self.env)
        self._proc.start()

    def check_alive(self, grace_s: float = 0.0) -> None:
        """Raise if the process has exited; wait up to ``grace_s`` for an exit under way (a
        killed server refuses connections a moment before it can be reaped)."""
        code = self._proc.poll(grace_s) if self._proc else None
        if code is not None:
            raise EngineCrashedError(self._exit_message(code, "while requests were running"))

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.stop()

    def request_headers(self) -> dict[str, str]:
        return {}

    def chat_url(self) -> str:
        return self.base_url + "/v1/chat/completions"

    def completions_url(self) -> str:
        return self.base_url + "/v1/completions"

    def transport(self) -> Transport | None:
        return None
