"""`servelab predict MODEL --flags "..." --json` equals llama-server's own account of its KV cache.

For both embedded models (SmolLM2: dense GQA, trained at 8192; Gemma 3 270M: sliding-window
layers, trained at 32768) and llama-server command lines that cover -c given, -c 0 and no -c
(the trained context; with --fit on and separate slot caches, the trained context per slot),
-np given and left at its default (auto: 4 slots, unified cache),
explicit -kvu/-no-kvu, --kv-unified-per-slot, --swa-full, -fa off, -ub and several cache types
in both spellings, the real llama-server is started with exactly those flags (``-lv 4`` prints
its ``llama_kv_cache: size = ...`` and ``llama_context: n_ctx = ...`` lines), stopped as soon
as its slots are set up, and its report is compared with the CLI's JSON. Run under
``flock /tmp/servelab-engine.lock``: one engine at a time on two cores.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from servelab.engines.installed import find_llama_binary
from servelab.engines.process import ManagedProcess, free_port, wait_until
from servelab.theory.kvreport import measured_kv_from_log, report_matches
from servelab.theory.server_flag_names import NO_VALUE, ONE_VALUE, TWO_VALUES

from .conftest import listed_model, run_cli

pytestmark = pytest.mark.engine

MIB = 1024 * 1024
SLOTS_READY = "initializing, n_slots"
CASES = [
    ("gemma-3-270m", "-c 16384 -np 2"),  # the issue's example: 78 MiB, not 126
    ("gemma-3-270m", ""),  # all defaults: trained context, -np auto = 4 slots, unified
    ("gemma-3-270m", "-np 3 -ctk q8_0 -ctv q8_0"),  # no -c, slots given: 32768 split 3 ways
    ("gemma-3-270m", "-c 5000 -np 2 -kvu --cache-type-k q4_0 --cache_type_v q4_0 -ub 256"),
    ("gemma-3-270m", "--kv-unified-per-slot 2048 -np 3 --swa-full -fa off"),
    ("smollm2-135m-instruct", "-c 0 -np 2 -ctk q8_0 -ctv q5_1"),
    ("smollm2-135m-instruct", "--ctx-size 3000 -ctk bf16 -ctv f32 -t 1"),
    ("smollm2-135m-instruct", "-np 2 -no-kvu"),  # no -c: --fit makes it 2 x the trained 8192
    ("smollm2-135m-instruct", "-np 3 -fit off -ub 128"),  # no -c, no fit: 8192 over 3 streams
]


def _model_path(name: str) -> Path:
    from servelab.models import resolve_model

    return resolve_model(listed_model(name)).path


def _server_log(tmp_path: Path, model: str, flags: str) -> str:
    """llama-server's log from start to its slot set-up (after the KV caches are made)."""
    log = tmp_path / "llama-server.log"
    argv = [
        str(find_llama_binary("llama-server")), "-m", str(_model_path(model)),
        "--host", "127.0.0.1", "--port", str(free_port()), "-lv", "4", "--no-warmup",
        *shlex.split(flags),
    ]  # fmt: skip
    proc = ManagedProcess(argv, log)
    proc.start()
    try:
        ready = wait_until(
            lambda: proc.poll() is not None or SLOTS_READY in log.read_text("utf-8", "replace"),
            timeout_s=90,
        )
    finally:
        proc.stop()
    text = log.read_text("utf-8", "replace")
    assert ready and SLOTS_READY in text, f"llama-server {flags!r} did not start:\n{text[-3000:]}"
    return text


def _logged(text: str, pattern: str) -> str:
    m = re.search(pattern, text)
    assert m is not None, f"no {pattern!r} in the llama-server log"
    return m[1]


def _predicted(model: str, flags: str) -> dict[str, object]:
    done = run_cli("predict", model, "--flags", flags, "--hw", "none", "--profile", "none",
                   "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout)
    return result


@pytest.mark.parametrize(("model", "flags"), CASES)
def test_predict_flags_kv_equals_llama_server_report(
    engine_ready: None, tmp_path: Path, model: str, flags: str
) -> None:
    predicted = _predicted(model, flags)
    log = _server_log(tmp_path, model, flags)
    kv, settings = predicted["kv"], predicted["settings"]
    assert isinstance(kv, dict) and isinstance(settings, dict)
    assert kv["n_ctx"] == int(_logged(log, r"llama_context: n_ctx += (\d+)"))
    assert kv["n_ctx_seq"] == int(_logged(log, r"llama_context: n_ctx_seq += (\d+)"))
    assert settings["parallel"] == int(_logged(log, r"n_slots = (\d+)"))
    assert settings["ctx_per_slot"] == int(_logged(log, r"n_ctx_slot = (\d+)"))
    assert str(settings["unified"]).lower() == _logged(log, r"kv_unified = '(\w+)'")
    measured = measured_kv_from_log(log)
    assert measured is not None, "llama-server printed no llama_kv_cache line at -lv 4"
    groups = [g for g in kv["groups"] if g["kind"] in ("full", "sliding")]
    assert len(groups) == len(measured.target)
    for group, line in zip(groups, measured.target, strict=True):
        assert (group["cells"], group["n_layers"], group["streams"]) == (
            line.cells, line.layers, line.streams,
        )  # fmt: skip
        assert (settings["kv_k"], settings["kv_v"]) == (line.type_k, line.type_v)
        assert report_matches(group["k_bytes"], line.k_mib), (group, line)
        assert report_matches(group["v_bytes"], line.v_mib), (group, line)
        assert report_matches(group["total_bytes"], line.size_mib), (group, line)
    assert abs(kv["kv_bytes"] / MIB - measured.kv_mib) <= 0.006 * len(groups)


def test_issue_example_prints_78_mib(engine_ready: None) -> None:
    """The figure the issue quotes, in the table a user reads."""
    done = run_cli("predict", "gemma-3-270m", "--flags", "-c 16384 -np 2", "--hw", "none",
                   "--profile", "none")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert re.search(r"all .* 78\.00 MiB", done.stdout), done.stdout
    assert "-c 16384 total, 2 slots, 8192 tokens per slot" in done.stdout


_NAME = r"-{1,2}[A-Za-z0-9][\w.-]*"
_HEAD = re.compile(rf"^({_NAME}(?:,\s+{_NAME})*)(?: (\S.*?))?(?:\s{{2,}}|$)")


def _arity(hint: str) -> str:
    """How many values a --help value hint stands for: ``START END`` is two words."""
    if not hint:
        return "none"
    return "two" if len(hint.split(" ")) == 2 and "<" not in hint else "one"


def test_flag_table_matches_llama_server_help(engine_ready: None) -> None:
    """server_flag_names lists every flag of the installed llama-server, by its value count."""
    help_text = subprocess.run(
        [str(find_llama_binary("llama-server")), "--help"],
        capture_output=True, text=True, timeout=60, check=False,
    ).stdout  # fmt: skip
    found: dict[str, set[str]] = {"none": set(), "one": set(), "two": set()}
    for line in help_text.splitlines():
        m = _HEAD.match(line.rstrip()) if not line.startswith("-----") else None
        if m is not None:
            found[_arity(m[2] or "")].update(n.strip() for n in m[1].split(","))
    assert (found["none"], found["one"], found["two"]) == (
        set(NO_VALUE),
        set(ONE_VALUE),
        set(TWO_VALUES),
    )
