"""Each engine class answers for itself, without starting a process or binding a port.

Checks the registry (one static table, no import cycle), that every registered class carries
every class-level member of the protocol, that the effective configuration is a pure function of
the configuration (no socket is bound while it is built) and equals what the released code
recorded, and that nothing outside ``engines/``, ``spec/`` and ``cli/`` names a concrete engine
or compares an engine kind to a string.
"""

from __future__ import annotations

import ast
import json
import os
import re
import socket
import stat
import sys
from pathlib import Path
from typing import Any

import pytest

from servelab.engines.base import CounterNames, EffectiveEngineConfig, Engine
from servelab.engines.llamacpp import LlamaCppEngine
from servelab.engines.llamacpp_config import MASKED_PORT, mask_port
from servelab.engines.openai import OpenAIEngine
from servelab.engines.prom import parse_metrics
from servelab.engines.registry import (
    DEFAULT_KIND,
    ENGINES,
    create_engine,
    engine_class,
    find_engine_class,
    kinds,
)
from servelab.errors import UsageError
from servelab.runner.resolve import canonical_names, effective_config
from servelab.spec.engine import EngineConfig
from servelab.spec.experiment import ExperimentSpec, resolve_arm
from servelab.workloads import load_workload

SRC = Path(__file__).resolve().parents[2] / "src" / "servelab"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
DEMO = FIXTURES / "runs" / "release-0.1.0" / "demo"

FLAGS = ("keep_alive", "has_logits", "reports_kv", "managed")
CLASS_METHODS = (
    "effective_config", "canonical_names", "launch_command", "kv_probe_config",
    "read_kv_report", "config_for_concurrency", "model_bytes",
)  # fmt: skip
INSTANCE_METHODS = (
    "launch", "wait_healthy", "describe", "scrape_metrics", "check_alive", "stop",
    "request_extras", "request_headers", "chat_url", "completions_url", "transport",
)  # fmt: skip

FAKE_HELP = """\
-t,    --threads N                      number of CPU threads to use during generation (default: -1)
-c,    --ctx-size N                     size of the prompt context (default: 0)
-m,    --model FNAME                    model path to load
-lv,   --verbosity, --log-verbosity N   Set the verbosity threshold (default: 3)
-cram, --cache-ram N                    set the maximum cache size in MiB (default: 8192)
-np,   --parallel N                     number of server slots (default: -1)
--host HOST                             IP addresses to listen on (default: 127.0.0.1)
--port, --listen-port PORT              port to listen (default: 8080)
--metrics                               enable prometheus compatible metrics endpoint (default: disabled)
"""  # noqa: E501 - llama-server's own layout
FAKE_VERSION = "version: 0.5.0-dev (build 0, commit 0c1e57098)\nbuilt with a test\n"


# -- the registry ----------------------------------------------------------------------------
def test_the_table_is_the_registry() -> None:
    assert kinds() == sorted(ENGINES) and {"llamacpp", "openai"} <= set(kinds())
    for kind, cls in ENGINES.items():
        assert cls.kind == kind and engine_class(kind) is cls and find_engine_class(kind) is cls
    assert DEFAULT_KIND in ENGINES and EngineConfig(model="m").kind == DEFAULT_KIND
    assert find_engine_class("vllm-someday") is None
    with pytest.raises(UsageError, match=r"known kinds: .*llamacpp"):
        engine_class("vllm-someday")


def test_engine_modules_do_not_import_the_registry() -> None:
    """The registry imports the engine modules; the reverse would be a cycle."""
    for path in sorted((SRC / "engines").glob("*.py")):
        if path.name in ("registry.py", "__init__.py"):  # the table, and its lazy re-export
            continue
        imported = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
                imported.update(f"{node.module}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                imported.update(a.name for a in node.names)
        assert "servelab.engines.registry" not in imported, path.name


@pytest.mark.parametrize("cls", list(ENGINES.values()), ids=list(ENGINES))
def test_every_engine_answers_every_class_level_question(cls: type[Engine]) -> None:
    for name in FLAGS:
        assert isinstance(getattr(cls, name), bool), name
    assert isinstance(cls.process_name, str) and cls.process_name
    assert isinstance(cls.counter_names, CounterNames)
    for name in (*CLASS_METHODS, *INSTANCE_METHODS):
        assert callable(getattr(cls, name, None)), name
    if cls.reports_kv:
        assert cls.read_kv_report("no report in this log") is None


# -- llama.cpp -------------------------------------------------------------------------------
def test_llamacpp_facts() -> None:
    c = EngineConfig(model="m.gguf", flags=("-t", "2"), parallel=2)
    assert LlamaCppEngine.kv_probe_config(c).flags == ("-t", "2", "-lv", "4")
    assert LlamaCppEngine.config_for_concurrency(c, 8).parallel == 8
    assert LlamaCppEngine.config_for_concurrency(c, 1) is c
    stored = ["llama-server", "--host", "127.0.0.1", "--port", MASKED_PORT, "-t", "2"]
    assert LlamaCppEngine.launch_command(stored, 9000) == [
        "llama-server", "--host", "127.0.0.1", "--port", "9000", "-t", "2"
    ]  # fmt: skip
    assert mask_port(LlamaCppEngine.launch_command(stored, 9000)) == stored


def test_llamacpp_reads_its_own_kv_report() -> None:
    text = (DEMO / "kv-probe-none.log").read_text(encoding="utf-8", errors="replace")
    report = LlamaCppEngine.read_kv_report(text)
    assert report is not None and report.kv_mib > 0
    stored = json.loads((DEMO / "manifest.json").read_text(encoding="utf-8"))
    assert report.kv_mib == stored["arms"]["none"]["kv_reported"]["kv_mib"]


def test_llamacpp_counter_names_are_the_ones_llama_server_exposes() -> None:
    """Every name is a counter a real llama-server reported (release 0.1.0's demo run)."""
    recorded = json.loads((DEMO / "metrics" / "ngram-simple-b0-c1.json").read_text("utf-8"))
    deltas: dict[str, float] = recorded["counter_deltas"]
    names = LlamaCppEngine.counter_names
    named = [getattr(names, f) for f in names.__dataclass_fields__ if f != "extra"]
    # llama-server has no prefix-cache counters (a request's cache_n tells its reuse)
    named = [n for n in named if n is not None]
    assert all(names.read(deltas, n) is not None for n in named), named
    assert names.by_label(deltas, names.accepted_per_position, "position")
    assert names.read(deltas, names.draft_tokens) == deltas[str(names.draft_tokens)] > 0
    assert names.read(deltas, None) is None
    body = "# TYPE llamacpp:n_decode_total counter\nllamacpp:n_decode_total 3\n"
    assert names.read(parse_metrics(body).samples, names.decode_calls) == 3.0


@pytest.fixture
def fake_llama(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A llama-server that only answers ``--help`` and ``--version``, and a tiny GGUF file."""
    monkeypatch.setenv("SERVELAB_CACHE_DIR", str(tmp_path / "cache"))
    binary = tmp_path / "bin" / "llama-server"
    binary.parent.mkdir()
    binary.write_text(
        f"#!{sys.executable}\nimport sys\n"
        f"print({FAKE_VERSION!r} if sys.argv[1:] == ['--version'] else {FAKE_HELP!r})\n",
        encoding="utf-8",
    )
    binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
    model = tmp_path / "tiny.gguf"
    model.write_bytes(b"GGUF" + bytes(60))
    return binary, model


@pytest.fixture
def no_bind(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to bind or listen on a socket in this process fails the test."""

    def refuse(self: socket.socket, *args: Any) -> None:
        raise AssertionError(f"a socket was bound: {args}")

    monkeypatch.setattr(socket.socket, "bind", refuse)
    monkeypatch.setattr(socket.socket, "listen", refuse)


def test_effective_config_binds_nothing_and_matches_the_launched_argv(
    fake_llama: tuple[Path, Path], no_bind: None
) -> None:
    binary, model = fake_llama
    config = EngineConfig(
        model=str(model), binary=str(binary), flags=("-lv", "4", "--odd"), port=8123
    )  # fmt: skip
    eff = LlamaCppEngine.effective_config(config, "a")
    assert isinstance(eff, EffectiveEngineConfig)
    v = eff.values
    assert list(v)[:10] == [
        "engine.binary", "engine.binary_sha256", "engine.build", "model.path", "model.sha256",
        "model.format", "model.weights", "model.chat_template_sha256",
        "sampling.engine_defaults", "engine.ignored_env",
    ]  # fmt: skip
    assert v["model.format"] == "gguf" and v["model.weights"] is None  # not a readable GGUF
    assert v["engine.build"] == "0.5.0-dev (build 0, commit 0c1e57098)"
    assert v["llama.verbosity"] == "4" and v["llama.threads"] == "-1"  # defaults explicit
    assert v["llama.parallel"] == "1" and v["llama.ctx-size"] == "4096"
    assert "llama.port" not in v and v["llama.host"] == "127.0.0.1"
    assert v["llama.unknown_arguments"] == "--odd"
    assert eff.argv[eff.argv.index("--port") + 1] == MASKED_PORT
    engine = LlamaCppEngine(config, binary.parent / "engine.log")  # binds nothing: port given
    assert mask_port(engine.argv) == list(eff.argv)
    assert engine.argv[engine.argv.index("--port") + 1] == "8123"


def test_aliases_come_from_the_binary(fake_llama: tuple[Path, Path]) -> None:
    binary, model = fake_llama
    config = EngineConfig(model=str(model), binary=str(binary))
    # The spec refuses the spellings it knows; an alias only this binary lists is refused here.
    listening = config.model_copy(update={"flags": ("--listen-port", "1")})
    with pytest.raises(UsageError, match=r"engine\.port"):
        LlamaCppEngine.effective_config(listening, "a")
    names = LlamaCppEngine.canonical_names(("-lv", "log-verbosity", "cram", "x.y"), [config])
    assert names == ("llama.verbosity", "llama.verbosity", "llama.cache-ram", "x.y")


def test_the_environment_llama_server_would_read_is_recorded(
    fake_llama: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    binary, model = fake_llama
    for key in [k for k in os.environ if k.startswith("LLAMA_ARG_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("LLAMA_ARG_THREADS", "1")
    monkeypatch.setenv("LLAMA_ARG_BATCH", "8")
    config = EngineConfig(model=str(model), binary=str(binary), env={"LLAMA_ARG_BATCH": "8"})
    eff = LlamaCppEngine.effective_config(config, "a")
    assert eff.values["engine.ignored_env"] == "LLAMA_ARG_THREADS"


# -- openai ----------------------------------------------------------------------------------
def test_openai_facts(monkeypatch: pytest.MonkeyPatch, no_bind: None) -> None:
    c = EngineConfig(kind="openai", model="served", endpoint="http://127.0.0.1:9/v1")
    eff = OpenAIEngine.effective_config(c, "a")
    assert eff.values == {
        "engine.endpoint": "http://127.0.0.1:9/v1", "engine.served_model": "served",
        "engine.api_key_env": None,
    }  # fmt: skip
    assert eff.argv == () and OpenAIEngine.launch_command([], 9000) == []
    assert OpenAIEngine.kv_probe_config(c) is c and OpenAIEngine.config_for_concurrency(c, 9) is c
    assert OpenAIEngine.model_bytes(c) == 0 and OpenAIEngine.read_kv_report("x") is None
    assert OpenAIEngine.canonical_names(("-lv",), [c]) == ("-lv",)
    monkeypatch.delenv("SERVELAB_TEST_KEY", raising=False)
    keyed = c.model_copy(update={"api_key_env": "SERVELAB_TEST_KEY"})
    with pytest.raises(UsageError, match="SERVELAB_TEST_KEY is empty"):
        OpenAIEngine.effective_config(keyed, "a")


# -- the runner's effective configuration ----------------------------------------------------
def test_resolve_adds_engine_neutral_keys_first(
    fake_llama: tuple[Path, Path], no_bind: None
) -> None:
    binary, model = fake_llama
    raw = {
        "name": "x",
        "base": {"engine": {"model": str(model), "binary": str(binary), "env": {"A": "1"}},
                 "workload": "structured", "max_tokens": 8},
        "arms": {"a": {}, "b": {"flags": ["-cram", "0"]}}, "baseline": "a",
    }  # fmt: skip
    spec = ExperimentSpec.model_validate(raw)
    workload = load_workload(spec.base.workload)
    arms = {a.name: resolve_arm(spec, a) for a in spec.expand()}
    eff, argv = effective_config(spec, arms["b"], workload)
    keys = list(eff)
    assert keys[0] == "engine.kind" and keys.index("env.A") < keys.index("engine.binary")
    assert eff["llama.cache-ram"] == "0" and argv[-2:] == ["-cram", "0"]
    assert canonical_names(("cram", "max_tokens"), arms) == ("llama.cache-ram", "max_tokens")


def test_create_engine_builds_the_kind_asked_for(tmp_path: Path) -> None:
    config = EngineConfig(kind="openai", model="m", endpoint="http://127.0.0.1:9")
    engine = create_engine(config, tmp_path / "engine.log")
    assert isinstance(engine, OpenAIEngine) and engine.transport() is None
    assert engine.chat_url() == "http://127.0.0.1:9/v1/chat/completions"


# -- nothing outside engines/, spec/ and cli/ knows the engines ------------------------------
_OUTSIDE_OK = ("engines", "spec", "cli")


def _engine_leaks() -> list[str]:
    quoted = "[\"'](?:" + "|".join(re.escape(k) for k in kinds()) + ")[\"']"
    compare = re.compile(r"(?:==|!=|\bin)\s*[(\[{]?\s*" + quoted)
    compare_rev = re.compile(quoted + r"\s*(?:==|!=)")
    classes = {cls.__name__ for cls in ENGINES.values()} | {"OpenAIEndpoint"}
    leaks = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC)
        if rel.parts[0] in _OUTSIDE_OK:
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#", 1)[0]
            if compare.search(code) or compare_rev.search(code):
                leaks.append(f"{rel}:{n}: compares an engine kind: {line.strip()}")
            named = {c for c in classes if re.search(rf"\b{c}\b", code)}
            if named:
                leaks.append(f"{rel}:{n}: names {', '.join(sorted(named))}: {line.strip()}")
            if re.search(r"[\"'](?:" + "|".join(kinds()) + r"):[\w{]", code):
                leaks.append(f"{rel}:{n}: spells an engine's counter name: {line.strip()}")
            if re.search(r"servelab\.engines\.(llamacpp|openai)\b(?!_)", code):
                leaks.append(f"{rel}:{n}: imports a concrete engine module: {line.strip()}")
    return leaks


def test_nothing_outside_engines_knows_a_concrete_engine() -> None:
    """No kind compared to a string, no engine class named, no engine module imported and no
    engine's counter name spelled outside ``engines/``, ``spec/`` and ``cli/``: ask
    ``engine_class(kind).<attribute>`` instead."""
    leaks = _engine_leaks()
    assert not leaks, "\n".join(leaks)
