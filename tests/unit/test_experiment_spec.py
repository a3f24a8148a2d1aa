"""The experiment spec, its factor expansion, the confound guard and the block schedule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from servelab.errors import UsageError
from servelab.runner.experiment import load_spec
from servelab.spec.confound import ConfoundError, check_confounds, config_diff
from servelab.spec.engine import ENGINE_KINDS, EngineConfig
from servelab.spec.experiment import ExperimentSpec, Override, resolve_arm
from servelab.spec.llamaargs import canonicalize, parse_help
from servelab.spec.schedule import plan_blocks, prompt_index, request_id

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
BASE = {"engine": {"model": "m.gguf", "flags": ["-t", "2", "--cache-ram", "0"]}}


def spec(**kw: Any) -> ExperimentSpec:
    return ExperimentSpec.model_validate({"base": BASE, **kw})


def test_arms_resolve_named_settings_replacing_base_flags() -> None:
    s = spec(arms={"t2": {}, "t1": {"threads": 1}, "ng": {"spec_type": "ngram-simple"}})
    arms = {a.name: resolve_arm(s, a) for a in s.expand()}
    assert arms["t2"].engine.flags == ("-t", "2", "--cache-ram", "0")
    assert arms["t1"].engine.flags == ("--cache-ram", "0", "--threads", "1")
    assert arms["ng"].engine.flags[-2:] == ("--spec-type", "ngram-simple")
    assert arms["t1"].declared == ("llama.threads",)
    assert s.baseline_arm == "t2"


def test_factors_expand_to_a_product_with_stable_ids() -> None:
    s = spec(factors={"spec_type": ["none", "ngram-simple"], "kv": ["f16", "q8_0"]})
    names = [a.name for a in s.expand()]
    assert names == [
        "spec_type=none,kv=f16", "spec_type=none,kv=q8_0",
        "spec_type=ngram-simple,kv=f16", "spec_type=ngram-simple,kv=q8_0",
    ]  # fmt: skip
    assert s.baseline_arm == "spec_type=none,kv=f16"
    last = resolve_arm(s, s.expand()[-1])
    assert last.engine.flags[-6:] == (
        "--spec-type", "ngram-simple", "--cache-type-k", "q8_0", "--cache-type-v", "q8_0"
    )  # fmt: skip
    assert set(s.expand()[0].declared) >= {"llama.spec-type", "llama.cache-type-k"}


def test_custom_factor_levels_are_overrides() -> None:
    s = spec(factors={"mode": {"plain": {}, "fast": {"batch": 512, "ubatch": 256}}})
    assert [a.name for a in s.expand()] == ["mode=plain", "mode=fast"]
    assert "llama.batch-size" in s.expand()[0].declared  # the factor declares all its fields


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"arms": {"a": {}, "b": {"threds": 1}}}, "threds"),
        ({"arms": {"a": {}}}, "at least two arms"),
        ({"arms": {"a": {}, "b": {}}, "factors": {"kv": ["f16"]}}, "not both"),
        ({"arms": {"a": {}, "b": {}}, "baseline": "c"}, "baseline 'c' is not an arm"),
        ({"factors": {"colour": ["red", "blue"]}}, "not a named setting"),
        ({"arms": {"a": {}, "b": {}}, "metrics": ["n_out"]}, "no better direction"),
        ({"arms": {"a": {}, "b": {}}, "metrics": {"ttft_s": "pooled"}}, "pooled is for rates"),
        ({"arms": {"a": {}, "b": {}}, "metrics": {"e2e_s": ["p95"]}}, "unknown statistic"),
        ({"arms": {"a": {}, "b": {}}, "prompts": "some"}, "prompts"),
        ({"arms": {"a": {}, "b": {}}, "stop": {"spending": "fast"}}, "spending"),
        ({"arms": {"a": {}, "b": {}}, "concurrency": [1, 1]}, "distinct"),
        ({"arms": {"a": {}, "b": {}}, "blocks": 4, "stop": {"max_blocks": 2}}, "below blocks"),
    ],
)
def test_bad_specs_are_refused(data: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        spec(**data)


def test_metrics_choose_statistics_and_load_from_yaml(tmp_path: Path) -> None:
    f = tmp_path / "s.yaml"
    f.write_text(
        "base:\n  engine: {model: m}\n  workload: x\narms: {a: {}, b: {}}\n"
        "metrics: {decode_tps: pooled, ttft_s: [median, p90]}\nprompts: sampled\n"
    )
    s, _ = load_spec(f)
    assert s.metrics == {"decode_tps": "pooled", "ttft_s": ("median", "p90")}
    assert s.prompts == "sampled"
    assert spec(arms={"a": {}, "b": {}}).prompts == "fixed"


def test_pocock_spending_reaches_the_look_plan() -> None:
    from servelab.analysis.settings import settings
    from servelab.store import Manifest

    s = spec(arms={"a": {}, "b": {}}, blocks=3, stop={"max_blocks": 10, "spending": "pocock"})
    cfg = settings(Manifest(kind="experiment", spec=s.model_dump(mode="json")))
    plan = cfg.plan()
    assert plan.spending == "pocock"
    # Pocock spends early: its first look is far less strict than O'Brien-Fleming's 99.97 %
    assert plan.confidence_at(3) < 0.99
    default = settings(
        Manifest(
            kind="experiment",
            spec=spec(arms={"a": {}, "b": {}}, blocks=3, stop={"max_blocks": 10}).model_dump(
                mode="json"
            ),
        )
    )
    assert default.plan().spending == "obrien_fleming" and default.plan().confidence_at(3) > 0.999


def test_unknown_key_error_names_its_path(tmp_path: Path) -> None:
    f = tmp_path / "s.yaml"
    f.write_text("base:\n  engine: {model: m}\n  workload: x\n  sampling: {temprature: 0}\n"
                 "arms: {a: {}, b: {}}\n")  # fmt: skip
    with pytest.raises(UsageError, match=r"base\.sampling\.temprature: unknown key"):
        load_spec(f)
    f.write_text("base: [unclosed\n")
    with pytest.raises(UsageError, match="not valid YAML"):
        load_spec(f)
    with pytest.raises(UsageError, match="does not exist"):
        load_spec(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    "name", ["demo", "aa", "threads", "confound", "gpu/spec-dense", "gpu/spec-moe", "gpu/kv-dense"]
)
def test_examples_are_valid_specs(name: str) -> None:
    s, _ = load_spec(EXAMPLES / f"{name}.yaml")
    assert len(s.expand()) >= 2


def test_synthetic_rates_are_checked_as_llama_cpp_checks_them() -> None:
    assert Override(spec_synth_rates=[0.8, 0.64]).spec_synth_rates == "0.8,0.64"
    assert Override(spec_synth_rates="1, 1,1").spec_synth_rates == "1,1,1"
    for bad, why in (("0.5,0.8", "must not increase"), ("1.2", "within 0..1"),
                     ("a,b", "not a list of numbers")):  # fmt: skip
        with pytest.raises(ValueError, match=why):
            Override(spec_synth_rates=bad)
    with pytest.raises(ValueError, match="3 rates for draft_n_max 2"):
        Override(draft_n_max=2, spec_synth_rates="1,1,1")


def test_gpu_spec_examples_fix_acceptance_per_token() -> None:
    """The synthetic rates of each draft arm are a, a^2, ..., a^K for its K and a."""
    for name in ("spec-dense", "spec-moe"):
        s, _ = load_spec(EXAMPLES / "gpu" / f"{name}.yaml")
        for arm, settings in s.arms.items():
            if arm == "none":
                continue
            k, a = int(arm[1]), int(arm.split("-a")[1]) / 100
            rates = [float(r) for r in str(settings.spec_synth_rates).split(",")]
            assert settings.draft_n_max == settings.draft_n_min == k
            assert rates == pytest.approx([a**i for i in range(1, k + 1)]), (name, arm)


def test_confound_guard_names_the_field_and_both_values() -> None:
    eff = {
        "none": {"llama.spec-type": "none", "llama.cache-ram": "0", "model.sha256": "x"},
        "ng": {"llama.spec-type": "ngram-simple", "llama.cache-ram": "8192", "model.sha256": "x"},
    }
    declared = {"none": ("llama.spec-type",), "ng": ("llama.spec-type",)}
    assert set(config_diff(eff)) == {"llama.spec-type", "llama.cache-ram"}
    with pytest.raises(ConfoundError) as err:
        check_confounds(eff, declared, "none")
    msg = str(err.value)
    assert "llama.cache-ram" in msg and "none: 0" in msg and "ng: 8192" in msg
    assert "--allow-confound cache-ram" in msg
    allowed = check_confounds(eff, declared, "none", allow=("cache-ram",))
    assert allowed == [{"field": "llama.cache-ram", "values": {"none": "0", "ng": "8192"}}]
    assert check_confounds(eff, declared, "none", declare=("--cache-ram",)) == []
    with pytest.raises(UsageError, match="do not differ"):
        check_confounds(eff, declared, "none", allow=("cache-ram", "threads"))


HELP = """----- common params -----

-t,    --threads N                      number of CPU threads to use during generation (default: -1)
                                        (env: LLAMA_ARG_THREADS)
-ctk,  --cache-type-k TYPE              KV cache data type for K
                                        (default: f16)
-cb,   --cont-batching, -nocb, --no-cont-batching
                                        whether to enable continuous batching (default: enabled)
--spec-draft-type-k, -ctkd, --cache-type-k-draft TYPE
                                        KV cache data type for K for the draft model
"""


def test_argv_canonical_form_is_spelling_and_order_independent() -> None:
    table = parse_help(HELP)
    a = canonicalize(["-t", "2", "-ctk", "q8_0", "-nocb"], table)
    b = canonicalize(["--no-cont-batching", "--cache-type-k=q8_0", "--threads", "2"], table)
    assert a.values == b.values
    assert a.values["threads"] == "2" and a.values["cont-batching"] == "false"
    assert canonicalize([], table).values == {
        "threads": "-1", "cache-type-k": "f16", "cont-batching": "enabled",
        "spec-draft-type-k": "(default)",
    }  # fmt: skip
    assert canonicalize(["-t", "1", "--bogus"], table).unknown == ("--bogus",)


def test_interleaved_plan_alternates_and_randomized_is_seeded() -> None:
    plan = plan_blocks(["a", "b"], 4, (1,))
    assert [p.arm for p in plan] == ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert [p.block for p in plan] == [0, 0, 1, 1, 2, 2, 3, 3]
    r1 = plan_blocks(["a", "b", "c"], 6, (1, 2), "randomized", seed=7)
    r2 = plan_blocks(["a", "b", "c"], 8, (1, 2), "randomized", seed=7)
    assert r1 == r2[: len(r1)]  # more rounds never reorder earlier ones
    assert r1 != plan_blocks(["a", "b", "c"], 6, (1, 2), "randomized", seed=8)
    for r in range(6):
        rnd = [p for p in r1 if p.block == r]
        assert sorted({p.arm for p in rnd}) == ["a", "b", "c"] and len(rnd) == 6
    assert request_id(2, "a", 1, 3) == "b2/a/c1/3"
    assert {prompt_index(1, i, 4, 10) for i in range(4)} == {4, 5, 6, 7}


def test_engine_kinds_are_listed_once_and_replay_is_one() -> None:
    assert ENGINE_KINDS == ("llamacpp", "openai", "replay", "vllm")
    replay = EngineConfig(kind="replay", model="tests/fixtures/streams")
    assert replay.kind == "replay" and replay.slot_context() is None
    with pytest.raises(ValidationError, match="'llamacpp', 'openai', 'replay' or 'vllm'"):
        EngineConfig.model_validate({"kind": "sglang", "model": "m"})
