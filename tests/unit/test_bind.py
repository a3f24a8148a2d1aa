"""Where an engine listens is said by one option, ``bind``; every other spelling is refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from servelab.analysis import analyze
from servelab.cli.main import main
from servelab.engines.llamacpp_config import refuse_owned_options
from servelab.errors import UsageError
from servelab.runner.experiment import load_spec
from servelab.spec.engine import EngineConfig, bind_warning, connect_address, is_loopback
from servelab.spec.llamaargs import parse_help

HELP = (
    "--host HOST                             IP addresses to listen on (default: 127.0.0.1)\n"
    "--port PORT                             port to listen (default: 8080)\n"
    "-t,    --threads N                      number of threads (default: -1)\n"
)


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--host", "0.0.0.0"], "--bind"),
        (["--host=0.0.0.0"], "--bind"),
        (["-t", "2", "LLAMA_ARG_HOST=0.0.0.0"], "--bind"),
        (["--port", "8080"], "--port PORT"),
        (["--port=8080"], "--port PORT"),
    ],
)
def test_flags_may_not_set_host_or_port(flags: list[str], needle: str) -> None:
    with pytest.raises(ValidationError, match=needle):
        EngineConfig(model="m", flags=tuple(flags))


@pytest.mark.parametrize("key", ["LLAMA_ARG_HOST", "llama_arg_host", "LLAMA_ARG_PORT"])
def test_env_may_not_set_host_or_port(key: str) -> None:
    with pytest.raises(ValidationError, match="refused"):
        EngineConfig(model="m", env={key: "0.0.0.0"})


def test_host_is_refused_but_its_old_loopback_default_still_reads() -> None:
    with pytest.raises(ValidationError, match=r"engine\.bind"):
        EngineConfig.model_validate({"model": "m", "host": "0.0.0.0"})
    old = EngineConfig.model_validate({"model": "m", "host": "127.0.0.1"})  # old manifests
    assert old.bind == "127.0.0.1"


@pytest.mark.parametrize("bad", ["example.com", "0.0.0.0,127.0.0.1", "::", "/tmp/x.sock"])
def test_bind_is_one_ipv4_address(bad: str) -> None:
    with pytest.raises(ValidationError, match="IPv4"):
        EngineConfig(model="m", bind=bad)


def test_loopback_is_quiet_and_anything_else_warns() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("127.0.0.2") and not is_loopback("0.0.0.0")
    assert bind_warning("127.0.0.1") is None
    warning = bind_warning("0.0.0.0") or ""
    assert "every network interface" in warning and "--bind" in warning
    assert "192.168.1.5" in (bind_warning("192.168.1.5") or "")
    assert connect_address("0.0.0.0") == "127.0.0.1"  # servelab's own traffic stays local
    assert connect_address("192.168.1.5") == "192.168.1.5"


def test_every_alias_the_binary_lists_is_refused_at_resolve() -> None:
    table = parse_help(HELP)
    refuse_owned_options("a", ("-t", "2"), table)
    with pytest.raises(UsageError, match=r"engine\.bind"):
        refuse_owned_options("a", ("--host", "0.0.0.0"), table)
    with pytest.raises(UsageError, match=r"engine\.port"):
        refuse_owned_options("a", ("--port=1",), table)


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--flags", "--host 0.0.0.0"], "--bind ADDRESS"),
        (["--flags", "--host=0.0.0.0"], "--bind ADDRESS"),
        (["--flags", "--port 8080"], "--port PORT"),
        (["--host", "0.0.0.0"], "--bind ADDRESS"),
        (["--host", "127.0.0.1"], "--bind ADDRESS"),
        (["--bind", "everywhere"], "--bind"),
    ],
)  # fmt: skip
def test_bench_refuses_other_spellings_in_one_line(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("servelab: error: ") and needle in err[0], err


def _spec(tmp_path: Path, engine: dict[str, Any], arm: dict[str, Any]) -> Path:
    path = tmp_path / "spec.yaml"
    data = {"base": {"engine": {"model": "m.gguf", **engine}}, "arms": {"a": {}, "b": arm}}
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("engine", "arm"),
    [
        ({"env": {"LLAMA_ARG_HOST": "0.0.0.0"}}, {}),
        ({"flags": ["--host", "0.0.0.0"]}, {}),
        ({"host": "0.0.0.0"}, {}),
        ({}, {"env": {"LLAMA_ARG_HOST": "0.0.0.0"}}),
        ({}, {"flags": ["--host=0.0.0.0"]}),
    ],
)
def test_a_spec_refuses_other_spellings(
    tmp_path: Path, engine: dict[str, Any], arm: dict[str, Any]
) -> None:
    with pytest.raises(UsageError, match=r"engine\.bind") as info:
        load_spec(_spec(tmp_path, engine, arm))
    assert "\n" not in str(info.value)


def test_a_spec_binds_with_bind(tmp_path: Path) -> None:
    spec, _ = load_spec(_spec(tmp_path, {"bind": "0.0.0.0"}, {}))
    assert spec.base.engine.bind == "0.0.0.0"


def test_the_report_warns_about_an_exposed_engine() -> None:
    manifest = {
        "schema_version": 1, "kind": "bench", "run_id": "r", "baseline": "bench",
        "arms": {"bench": {"engine_config": {"kind": "llamacpp", "bind": "0.0.0.0"}}},
    }  # fmt: skip
    found = [w for w in analyze(manifest, []).to_json()["warnings"] if w["kind"] == "exposed_bind"]
    assert [w["arm"] for w in found] == ["bench"] and "0.0.0.0" in found[0]["detail"]
    old = {**manifest, "arms": {"bench": {"engine_config": {"host": "127.0.0.1"}}}}
    assert not [w for w in analyze(old, []).to_json()["warnings"] if w["kind"] == "exposed_bind"]


def test_bind_is_for_engines_servelab_launches() -> None:
    with pytest.raises(ValidationError, match="drop --bind"):
        EngineConfig(kind="openai", model="m", endpoint="http://127.0.0.1:9", bind="0.0.0.0")
