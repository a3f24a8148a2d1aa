"""``examples/roles.yaml`` with ``examples/roles-registry.yaml`` end to end on the real
llama-server: a trimmed run of the three arms (fewer blocks; the same arms, perplexity and
KL divergence), promotion of an arm to a tier that it meets, a refusal that names the tier's
rule it misses, ``servelab roles``, and ``servelab verify`` re-running the promoted
configuration. The registry is copied to a temporary folder, since promotions are written
beside it. One engine at a time: run this module under the engine lock.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from servelab.engines.process import free_port
from tests.integration.conftest import error_lines, run_cli, trimmed_example

pytestmark = pytest.mark.engine

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
FAST_EXAMPLE = 'rules: ["decode_tps >= 60", "ttft_s.p90 <= 1s"]'
FAST_RULES = ("decode_tps >= 30", "ttft_s.p90 <= 2s")


@pytest.fixture(scope="module")
def roles_run(engine_ready: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("roles")
    spec = trimmed_example(folder, "roles.yaml", blocks=4, requests_per_block=2)
    # The fast tier asks 60 tok/s and a TTFT p90 of 1 s, which two threads clear on a quiet
    # 2-core machine (about 90 tok/s, 0.8 s); CI's shared machine measured f16 at 68.8 tok/s
    # with the interval of 8 requests reaching down to 59.1. The copy asks half as much: what
    # is tested is that rules are judged on their intervals, not this machine's speed that day.
    registry = (EXAMPLES / "roles-registry.yaml").read_text(encoding="utf-8")
    assert FAST_EXAMPLE in registry
    fast = "rules: " + json.dumps(list(FAST_RULES))
    (folder / "roles-registry.yaml").write_text(registry.replace(FAST_EXAMPLE, fast), "utf-8")
    run = folder / "run"
    done = run_cli("run", str(spec), "--out", str(run), "--quiet", timeout=600)
    assert done.returncode == 0, done.stderr
    return run


def _registry(run: Path) -> Path:
    return run.parent / "roles-registry.yaml"


def _promote(run: Path, arm: str, role: str, *more: str) -> Any:
    return run_cli("promote", str(run), "--arm", arm, "--role", role, "--registry",
                   str(_registry(run)), *more)  # fmt: skip


def test_the_roles_run_measures_every_rule_the_tiers_judge(roles_run: Path) -> None:
    summary = json.loads((roles_run / "summary.json").read_text())
    assert set(summary["arms"]) == {"f16", "q4", "t1"}
    ppl = summary["quality"]["ppl"]
    assert ppl is not None
    manifest = json.loads((roles_run / "manifest.json").read_text())
    assert set(manifest["config_diff"]) == {
        "llama.cache-type-k", "llama.cache-type-v", "llama.threads",
    }  # fmt: skip


def test_an_arm_that_misses_a_tier_rule_is_refused_with_the_rule(roles_run: Path) -> None:
    # q4_0 KV moves the distribution far more than 0.05 nats on this 135M model (0.13 measured)
    done = _promote(roles_run, "q4", "balanced")
    assert done.returncode == 7, done.stderr
    lines = error_lines(done.stderr)
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "arm 'q4' does not meet role 'balanced': kld <= 0.05 (value " in lines[0], lines[0]
    assert not (roles_run.parent / "promoted" / "balanced.json").exists()


def test_promote_then_roles_then_verify(roles_run: Path) -> None:
    port = free_port()
    done = _promote(roles_run, "f16", "fast", "--port", str(port))
    assert done.returncode == 0, done.stderr
    promoted = roles_run.parent / "promoted"
    record = json.loads((promoted / "fast.json").read_text())
    assert record["role"] == "fast" and record["arm"] == "f16"
    rules = record["evidence"]["role_rules"]
    assert set(rules) == set(FAST_RULES)
    assert all(r["passed"] for r in rules.values())
    assert rules[FAST_RULES[0]]["interval"][0] >= 30  # the interval clears, not the point
    command = (promoted / "fast.cmd").read_text()
    assert f"--port {port}" in command and "--flash-attn on" in command
    listed = run_cli("roles", "--registry", str(_registry(roles_run)))
    assert listed.returncode == 0, listed.stderr
    fast = next(line for line in listed.stdout.splitlines() if "fast" in line)
    assert "f16" in fast
    out = roles_run.parent / "verify"
    verified = run_cli("verify", "fast", "--registry", str(_registry(roles_run)), "-n", "6",
                       "--out", str(out), timeout=600)  # fmt: skip
    # The verdict of a re-run against the promoted evidence: exit 0, or 1 naming a regression.
    assert verified.returncode in (0, 1), verified.stderr
    verdicts = [x for x in verified.stdout.splitlines() if x.startswith("decode_tps (")]
    assert verdicts and all(
        any(w in x for w in ("better", "worse", "no difference", "inconclusive", "need"))
        for x in verdicts
    ), verified.stdout
    summary = json.loads((out / "compare" / "summary.json").read_text())
    decode = [c for c in summary["comparisons"] if c["metric"] == "decode_tps"]
    assert decode and all(c["baseline"] == "f16@run" for c in decode), decode
    assert all(c["candidate"] == "bench@bench" for c in decode), decode
    worse = [c for c in summary["comparisons"] if c["verdict"] == "worse"]
    if verified.returncode == 1:
        assert worse and "regressed against its promoted evidence" in verified.stderr
    else:
        assert not worse
