"""A workload's named system prompts as a declared factor (issue 16).

The schema (``systems``: validated, in the content hash), the ``system_prompt`` named setting
(any engine; declares ``workload.system``), each arm's effective configuration and request
parameters, the spec errors, the confound guard, and the run loop: every request an arm sends,
warm-ups included, carries its variant (through the real run loop, the replay engine serving).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from servelab.cli.main import main
from servelab.client.transport import SentRequest
from servelab.engines.replay import ReplayEngine, ReplayLab
from servelab.errors import UsageError, WorkloadError
from servelab.records import Phase
from servelab.runner.drive import Job, PromptSource, RequestParams
from servelab.runner.experiment import run_experiment
from servelab.runner.experiment_inputs import ExperimentInputs
from servelab.runner.request_source import ConversationSource
from servelab.spec.confound import ConfoundError, check_confounds
from servelab.spec.engine import EngineConfig
from servelab.spec.experiment import ExperimentSpec
from servelab.spec.settings import SETTINGS, declared_fields
from servelab.store.jsonl import read_jsonl
from servelab.workloads import load_workload, parse_workload
from tests.unit.replay_harness import STREAMS, make_seam

WORKLOAD = """\
schema_version: 2
name: sys
version: "1.0"
description: Two system prompts.
system: Be brief.
systems:
  terse: Answer in three words.
  kind: Answer kindly.
prompts:
  - id: a
    messages: [{role: user, content: "Hi"}]
    expect: {kind: text}
  - id: own
    messages: [{role: system, content: "Mine."}, {role: user, content: "Hi"}]
    expect: {kind: text}
"""


def spec_text(workload: str, arms: str, extra: str = "") -> str:
    return f"""\
name: sys-test
hardware: none
base:
  engine: {{kind: replay, model: "{STREAMS}"}}
  workload: {workload}
  max_tokens: 16
{arms}
blocks: 2
requests_per_block: 2
warmup: 1
{extra}"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def inputs(tmp_path: Path, arms: str, extra: str = "") -> ExperimentInputs:
    workload = write(tmp_path, "sys.yaml", WORKLOAD)
    return ExperimentInputs.load(write(tmp_path, "spec.yaml", spec_text(str(workload), arms,
                                                                        extra)))  # fmt: skip


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --- schema -----------------------------------------------------------------------------------


def test_systems_are_named_variants_and_default_is_the_workloads_own_system() -> None:
    w = parse_workload(WORKLOAD, source="t")
    assert w.system_variants == ("default", "terse", "kind")
    assert w.system_for(None) == w.system_for("default") == "Be brief."
    assert w.system_for("terse") == "Answer in three words."
    assert w.system_label("kind") == f"kind sha256:{sha('Answer kindly.')}"
    assert w.system_label(None) == f"default sha256:{sha('Be brief.')}"
    with pytest.raises(ValueError, match=r"\(it has: default, terse, kind\)"):
        w.system_for("full")


def test_a_variant_replaces_the_workload_system_but_not_a_prompts_own() -> None:
    w = parse_workload(WORKLOAD, source="t").with_system("Answer kindly.")
    assert w.chat_messages(w.prompts[0])[0] == {"role": "system", "content": "Answer kindly."}
    assert w.chat_messages(w.prompts[1])[0] == {"role": "system", "content": "Mine."}
    base = parse_workload(WORKLOAD, source="t")
    assert base.with_system(None) is base and base.with_system("Be brief.") is base


def test_the_variants_are_part_of_the_content_hash() -> None:
    a = parse_workload(WORKLOAD, source="t")
    b = parse_workload(WORKLOAD.replace("Answer kindly.", "Answer warmly."), source="t")
    c = parse_workload(WORKLOAD.replace("  kind: Answer kindly.\n", ""), source="t")
    assert len({a.content_hash, b.content_hash, c.content_hash}) == 3
    none = WORKLOAD.replace(
        "systems:\n  terse: Answer in three words.\n  kind: Answer kindly.\n", ""
    )
    assert "systems" not in parse_workload(none, source="t").canonical_json  # hashes as before


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("default", "x", "systems.default: 'default' is reserved for the workload's own system"),
        ("Big", "x", "systems.Big: a variant name is lower case, digits, _ and -"),
        ("blank", "  ", "systems.blank: the system prompt is empty; write its text"),
    ],
)
def test_a_bad_variant_is_a_one_line_error_at_its_path(name: str, text: str, message: str) -> None:
    bad = WORKLOAD.replace("  terse: Answer in three words.", f"  {name}: {text!r}")
    with pytest.raises(WorkloadError) as info:
        parse_workload(bad, source="w.yaml")
    assert str(info.value).startswith(f"workload w.yaml: {message}")
    assert "\n" not in str(info.value)


# --- the named setting ------------------------------------------------------------------------


def test_system_prompt_is_a_field_setting_every_engine_takes() -> None:
    setting = SETTINGS["system_prompt"]
    assert setting.field == "system_prompt" and not setting.flags and setting.vllm is None
    assert all(setting.applies_to(k) for k in ("llamacpp", "vllm", "openai", "replay"))
    assert declared_fields("system_prompt") == ("workload.system",)


def test_a_factor_of_variants_expands_to_arms_that_declare_workload_system() -> None:
    spec = ExperimentSpec.model_validate({
        "base": {"engine": {"kind": "openai", "model": "m", "endpoint": "http://127.0.0.1:1"}},
        "factors": {"system_prompt": ["stub", "full"]},
    })  # fmt: skip
    arms = spec.expand()
    assert [a.name for a in arms] == ["system_prompt=stub", "system_prompt=full"]
    assert all(a.declared == ("workload.system",) for a in arms)
    assert [a.override.system_prompt for a in arms] == ["stub", "full"]


def test_a_badly_spelled_variant_is_refused_when_the_spec_loads() -> None:
    with pytest.raises(ValueError, match="system_prompt"):
        ExperimentSpec.model_validate({
            "base": {"engine": {"kind": "openai", "model": "m", "endpoint": "http://127.0.0.1:1"}},
            "arms": {"a": {}, "b": {"system_prompt": "Full Prompt"}},
        })  # fmt: skip


# --- resolved arms: effective configuration, request parameters, errors ------------------------


def test_each_arm_records_its_variant_and_sends_its_text(tmp_path: Path) -> None:
    i = inputs(
        tmp_path, "arms:\n  a: {}\n  b: {system_prompt: terse}\n  c: {system_prompt: default}"
    )
    assert i.effective["a"]["workload.system"] == f"default sha256:{sha('Be brief.')}"
    assert i.effective["c"]["workload.system"] == i.effective["a"]["workload.system"]
    assert i.effective["b"]["workload.system"] == f"terse sha256:{sha('Answer in three words.')}"
    assert i.effective["a"]["workload.hash"] == i.effective["b"]["workload.hash"]
    assert (i.params("a").system, i.params("b").system) == (None, "Answer in three words.")
    assert i.check_confounds(()) == []  # declared by the setting


def test_a_workload_without_variants_records_no_system_field_as_released_runs(
    tmp_path: Path,
) -> None:
    """Released runs' effective configurations have no ``workload.system``: a workload
    without ``systems`` (its one system prompt is in ``workload.hash``) keeps them identical."""
    plain = WORKLOAD.replace(
        "systems:\n  terse: Answer in three words.\n  kind: Answer kindly.\n", ""
    )
    assert "systems" not in plain
    workload = write(tmp_path, "plain.yaml", plain)
    arms = "arms:\n  a: {}\n  b: {}"
    i = ExperimentInputs.load(write(tmp_path, "spec.yaml", spec_text(str(workload), arms)))
    assert "workload.system" not in i.effective["a"]
    keys = list(i.effective["a"])
    assert keys[keys.index("workload.hash") + 1] == "prefix_cache"
    with_variants = inputs(tmp_path, "arms:\n  a: {}\n  b: {}")
    keys = list(with_variants.effective["a"])
    assert keys[keys.index("workload.hash") + 1] == "workload.system"


def test_an_undeclared_system_difference_is_refused_by_the_guard(tmp_path: Path) -> None:
    i = inputs(tmp_path, "arms:\n  a: {}\n  b: {system_prompt: kind}")
    with pytest.raises(ConfoundError, match=r"differ in workload\.system \(a: default sha256:"):
        check_confounds(i.effective, {"a": (), "b": ()}, "a")


def test_an_unknown_variant_is_one_line_naming_the_workloads_variants(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as info:
        inputs(tmp_path, "factors:\n  system_prompt: [terse, full]")
    message = str(info.value)
    assert message == (
        f"{tmp_path / 'spec.yaml'}: arm 'system_prompt=full': system_prompt 'full' is not a "
        "system prompt of workload sys (it has: default, terse, kind); use one of those, or add "
        "it under the workload's systems"
    )


def test_the_cli_refuses_an_unknown_variant_with_exit_2_and_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = write(tmp_path, "spec.yaml",
                 spec_text("voice-agent", "factors:\n  system_prompt: [stub, ful]"))  # fmt: skip
    code = main(["run", str(spec), "--out", str(tmp_path / "run"), "--force", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "system_prompt 'ful' is not a system prompt of workload voice-agent" in err
    assert "(it has: default, stub, full)" in err
    assert not (tmp_path / "run").exists()


def test_a_trace_has_no_system_prompt_to_replace(tmp_path: Path) -> None:
    trace = write(tmp_path, "t.jsonl", '{"t_s": 0, "prompt": "hi", "output_tokens": 4}\n')
    with pytest.raises(UsageError, match=r"replays a trace \(load.trace\); drop system_prompt"):
        inputs(tmp_path, "arms:\n  a: {}\n  b: {system_prompt: kind}",
               f"load: {{trace: {trace}}}")  # fmt: skip


# --- the sources and the run loop ---------------------------------------------------------------


def replay_engine(tmp_path: Path) -> ReplayEngine:
    config = EngineConfig.model_validate({"kind": "replay", "model": str(STREAMS)})
    return ReplayEngine(config, tmp_path / "e.log", lab=ReplayLab())


def test_prompt_and_conversation_sources_send_the_params_system(tmp_path: Path) -> None:
    engine = replay_engine(tmp_path)
    params = RequestParams(16, 0.0, 0, False, system="Answer kindly.")
    prompts = parse_workload(WORKLOAD, source="t")
    body = PromptSource(prompts, engine, params).request_for(Job("", 0, Phase.TRIAL)).payload
    assert body["messages"][0] == {"role": "system", "content": "Answer kindly."}
    sessions = load_workload("agent-loop")
    source = ConversationSource(sessions, engine, params, seed=0)
    job = source.start_jobs(1, Phase.WARMUP)[0]
    assert source.request_for(job).payload["messages"][0]["content"] == "Answer kindly."
    assert sessions.sessions[0].system is None  # the session had none of its own to keep


@dataclass
class RecordingLab(ReplayLab):
    """A replay lab that keeps each request body with the log name of the engine it reached."""

    bodies: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def create_engine(self, config: EngineConfig, log_path: Path) -> ReplayEngine:
        engine = super().create_engine(config, log_path)
        serve = engine.handle

        def handle(request: SentRequest) -> Any:
            self.bodies.append((log_path.name, json.loads(request.body)))
            return serve(request)

        engine.handle = handle  # type: ignore[method-assign]
        return engine


def test_every_request_of_an_arm_warm_ups_included_carries_its_variant(tmp_path: Path) -> None:
    lab = RecordingLab()
    spec = write(tmp_path, "spec.yaml",
                 spec_text("voice-agent", "factors:\n  system_prompt: [stub, full]"))  # fmt: skip
    out = tmp_path / "run"
    result = run_experiment(spec, out, seam=make_seam(lab))
    assert result.status == "complete"
    workload = load_workload("voice-agent")
    rows = read_jsonl(out / "requests.jsonl").rows
    for variant in ("stub", "full"):
        arm = f"system_prompt={variant}"
        sent = [b for log, b in lab.bodies if log == f"engine-{arm}.log"]
        assert len(sent) == sum(1 for r in rows if r["arm"] == arm) == 2 * 2 + 2 * 1
        assert any(r["phase"] == "warmup" for r in rows if r["arm"] == arm)
        assert {b["messages"][0]["content"] for b in sent} == {workload.systems[variant]}
        assert all(len(b["tools"]) == 8 for b in sent)
    m = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    labels = {a: m["arms"][a]["effective"]["workload.system"] for a in m["arms"]}
    assert labels["system_prompt=full"].startswith("full sha256:")
    assert labels["system_prompt=stub"] == workload.system_label("stub")
