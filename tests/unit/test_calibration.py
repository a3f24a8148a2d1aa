"""Hardware profiles: the fits (known answers on synthetic numbers), the JSON round trip, and
the roofline and spec-decode predictor using a profile."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from servelab.analysis.predictions import ASSUMES, ASSUMES_PROFILE, TheoryInputs, theory_section
from servelab.analysis.settings import ArmFacts, RunFacts
from servelab.errors import UsageError
from servelab.report.theory_view import theory_blocks
from servelab.runner.calibrate import load_profile, make_variant, profile_path, read_profile
from servelab.store.engine_records import SpecDecodeRecord
from servelab.store.manifest import Manifest
from servelab.store.summary import ArmPrediction, TheorySection
from servelab.theory.arch import Architecture
from servelab.theory.arch_yaml import architecture_from_yaml
from servelab.theory.calibration import (
    HardwareProfile,
    ModelCalibration,
    ServerPair,
    StepFit,
    StepPoint,
    VerifyFit,
    fit_server_pair,
    fit_step,
    fit_verify,
    pair_key,
)
from servelab.theory.hardware import find_hardware
from servelab.theory.kvtypes import CACHE_TYPES
from servelab.theory.predict import PredictInput, predict, predict_arm
from servelab.theory.roofline import distinct_experts, step_bytes
from servelab.theory.specdec import expected_tokens, predict_spec

F16 = CACHE_TYPES["f16"]
GB = 10**9
FIXED, BW = 0.8e-3, 3.0e12  # an H200-like machine: 0.8 ms per step, 3 TB/s achieved


def points(sizes: list[float], fixed: float = FIXED, bw: float = BW) -> list[StepPoint]:
    """Quant variants of one model (group ``g``) reading ``sizes`` bytes per step."""
    return [StepPoint(f"sha{i}", f"m{i}", b, fixed + b / bw, "g") for i, b in enumerate(sizes)]


def moe_arch() -> Architecture:
    doc = {
        "layers": 2, "embedding": 64, "pattern": ["none"],
        "attention": {"heads": 1, "kv_heads": 1, "head_dim": 64},
        "moe": {"experts": 128, "active": 8, "expert_ffn": 64},
        "weights": {"non_expert_bytes": GB, "expert_bytes": GB // 100,
                    "output_head_bytes": GB // 5},
    }  # fmt: skip
    return architecture_from_yaml(doc, name="moe")


def profile(models: dict[str, ModelCalibration] | None = None) -> HardwareProfile:
    fit = StepFit(FIXED, BW, 0.0, 3)
    return HardwareProfile("h200", "abc-cuda-x86_64", "2026-12-01T00:00:00Z", fit,
                           tuple(points([1e9, 2e9, 4e9])), models or {})  # fmt: skip


def test_step_fit_recovers_fixed_cost_and_bandwidth() -> None:
    fit = fit_step(points([0.1e9, 0.2e9, 0.5e9, 1.6e9]))
    assert fit.fixed_s == pytest.approx(FIXED, rel=1e-9)
    assert fit.bandwidth_bytes_s == pytest.approx(BW, rel=1e-9)
    assert fit.rms_rel_residual == pytest.approx(0.0, abs=1e-9) and not fit.clamped


@given(fixed=st.floats(0.0, 0.01), bw=st.floats(1e10, 1e13), noise=st.floats(-0.01, 0.01))
def test_step_fit_is_close_under_small_noise(fixed: float, bw: float, noise: float) -> None:
    pts = points([1e8, 4e8, 1.6e9], fixed, bw)
    noisy = [
        StepPoint(
            p.model_sha256, p.label, p.bytes_per_step, p.step_s * (1 + noise * (-1) ** i), "g"
        )
        for i, p in enumerate(pts)
    ]
    fit = fit_step(noisy)
    for p in pts:  # the fitted line stays within the noise of every true point
        pred = fit.fixed_s + p.bytes_per_step / fit.bandwidth_bytes_s
        assert pred == pytest.approx(p.step_s, rel=0.05)
    assert fit.fixed_s >= 0


def test_step_fit_clamps_a_negative_fixed_cost_and_refuses_one_size() -> None:
    pts = [StepPoint("a", "a", 1e9, 0.9e-3, "g"), StepPoint("b", "b", 2e9, 2.0e-3, "g")]
    fit = fit_step(pts)  # slope 1.1 ms per GB, intercept -0.2 ms: taken as 0
    assert fit.clamped and fit.fixed_s == 0.0
    assert fit.bandwidth_bytes_s == pytest.approx(1e9 / 1.1e-3)
    with pytest.raises(UsageError, match="2 or more different sizes"):
        fit_step(points([1e9, 1e9]))
    flat = fit_step([StepPoint("a", "a", 1e8, 9e-3, "g"), StepPoint("b", "b", 3e8, 8.9e-3, "g")])
    assert not flat.memory_bound  # a CPU bound by dequantisation: 300 MB in 8.9 ms is the floor
    assert flat.bandwidth_bytes_s == pytest.approx(3e8 / 8.9e-3)
    assert flat.fixed_s == pytest.approx(0.5 * (9e-3 - 1e8 * 8.9e-3 / 3e8))
    with pytest.raises(UsageError, match="2 or more different sizes"):  # two models, no variants
        fit_step([StepPoint("a", "a", 1e9, 1e-3), StepPoint("b", "b", 2e9, 5e-3)])


def test_step_fit_shares_bandwidth_and_keeps_each_models_fixed_cost() -> None:
    dense = [StepPoint(f"d{i}", "d", b, 2e-3 + b / BW, "dense") for i, b in enumerate([4e9, 8e9])]
    moe = [StepPoint(f"m{i}", "m", b, 5e-3 + b / BW, "moe") for i, b in enumerate([1e9, 3e9, 6e9])]
    solo = StepPoint("s", "s", 2e9, 9e-3)  # one point (--variants none): no say in bandwidth
    fit = fit_step([*dense, *moe, solo])
    assert fit.bandwidth_bytes_s == pytest.approx(BW) and not fit.clamped
    assert fit.fixed_s == pytest.approx(3.5e-3)  # median of the groups with variants
    assert fit.rms_rel_residual == pytest.approx(0.0, abs=1e-9)


def test_verify_fit_union_and_linear_known_answers() -> None:
    a, b = 2.0e-3, 0.05e-3
    moe_t = [a + b * distinct_experts(128, 8, k) for k in range(1, 17)]
    fit = fit_verify(moe_t, n_expert=128, n_used=8)
    assert fit.kind == "union" and fit.a_s == pytest.approx(a) and fit.b_s == pytest.approx(b)
    dense = fit_verify([1e-3 + 0.2e-3 * k for k in range(1, 5)])
    assert dense.kind == "linear" and dense.a_s == pytest.approx(1e-3)
    assert dense.b_s == pytest.approx(0.2e-3) and dense.rms_rel_residual < 1e-9
    noisy = fit_verify([4e-3, 3e-3, 2e-3])  # falling cost: noise, never a negative r
    assert noisy.b_s == 0.0 and noisy.a_s == pytest.approx(3e-3)
    with pytest.raises(UsageError, match="2 or more K"):
        fit_verify([1e-3])


def test_profile_json_round_trip_and_refusals() -> None:
    fit = fit_verify([1e-3 + 0.2e-3 * k for k in range(1, 5)])
    m = ModelCalibration("t" * 64, "target", 1e9, 1.1e-3, (1.2e-3, 1.4e-3, 1.6e-3, 1.8e-3), fit)
    p = profile({m.sha256: m})
    text = json.dumps(p.to_json())
    assert HardwareProfile.from_json(json.loads(text)) == p
    with pytest.raises(UsageError, match="run `servelab calibrate` again"):
        HardwareProfile.from_json({**p.to_json(), "schema_version": 99})
    with pytest.raises(UsageError, match="damaged"):
        HardwareProfile.from_json({**p.to_json(), "step": {"fixed_s": "x"}})


def test_profile_r_c_and_ceiling() -> None:
    fit = fit_verify([2e-3 + 0.5e-3 * k for k in range(1, 9)])
    target = ModelCalibration("t", "target", 4e9, 2.5e-3, (), fit)
    draft = ModelCalibration("d", "draft", 1e8, 0.5e-3)
    p = profile({"t": target, "d": draft})
    assert p.step_seconds(3e9) == pytest.approx(FIXED + 1e-3)
    assert p.ceiling_tps(3e9) == pytest.approx(1 / 1.8e-3)
    assert p.verify_cost("t", 3) == pytest.approx((2e-3 + 0.5e-3 * 4) / 2.5e-3)
    assert p.draft_cost("d", "t") == pytest.approx(0.2)
    assert p.verify_cost("unknown", 3) is None and p.draft_cost("d", "unknown") is None


def test_with_models_replaces_a_group_and_adds_a_model_without_variants() -> None:
    p = profile()  # group "g": three variants at FIXED, BW
    again = [StepPoint("g", "g", 1e9, 2e-3 + 1e9 / BW, "g"),
             StepPoint("v", "v", 4e9, 2e-3 + 4e9 / BW, "g")]  # fmt: skip
    merged = p.with_models([ModelCalibration("g", "g", 1e9, 2e-3 + 1e9 / BW)], again)
    assert [q.model_sha256 for q in merged.points] == ["g", "v"]
    assert merged.step.bandwidth_bytes_s == pytest.approx(BW)
    assert merged.step.fixed_s == pytest.approx(2e-3)
    # --variants none: a MoE timed once; bandwidth stays the machine's, fixed cost its own
    moe = ModelCalibration("moe", "moe", 3e9, 7e-3)
    more = merged.with_models([moe], [StepPoint("moe", "moe", 3e9, 7e-3)])
    assert more.step.bandwidth_bytes_s == pytest.approx(BW)
    assert more.fixed_seconds("moe") == pytest.approx(7e-3 - 3e9 / BW)
    assert more.fixed_seconds("unknown") == pytest.approx(2e-3)
    assert more.ceiling_tps(3e9, "moe") == pytest.approx(1 / 7e-3)
    assert "measured for this model" in more.fixed_source("moe")
    assert "not calibrated" in more.fixed_source(None)


def test_predict_with_profile_uses_fixed_cost_r_and_c() -> None:
    arch = moe_arch()
    hw = find_hardware("h200")
    t = [2e-3 + 0.05e-3 * distinct_experts(128, 8, k) for k in range(1, 17)]
    target = ModelCalibration("t", "target", 1.28e9, 2.4e-3, tuple(t),
                              fit_verify(t, n_expert=128, n_used=8))  # fmt: skip
    draft = ModelCalibration("d", "draft", 1e8, 0.6e-3)
    prof = profile({"t": target, "d": draft})
    inputs = PredictInput(ctx_per_slot=512, spec_k=3, accept=0.8)
    bare = predict(arch, hw, inputs)
    cal = predict(arch, hw, inputs, profile=prof, model_sha256="t", draft_sha256="d")
    one = step_bytes(arch, batch=1, position=512, type_k=F16, type_v=F16).total_bytes
    assert bare.decode_ceiling_tps == pytest.approx(hw.bandwidth_bytes_s / one)
    assert cal.decode_ceiling_tps == pytest.approx(1 / (prof.fixed_seconds("t") + one / BW))
    assert prof.fixed_seconds("t") == pytest.approx(2.4e-3 - 1.28e9 / BW)
    assert cal.profile is prof and cal.spec is not None
    r = t[3] / t[0]
    assert cal.spec.verify_cost == pytest.approx(r) and cal.spec.draft_cost == pytest.approx(0.25)
    assert cal.spec.speedup == pytest.approx(expected_tokens(0.8, 3) / (r + 3 * 0.25))
    # a model the profile did not time: r from its fixed cost and bandwidth
    other = predict(arch, hw, inputs, profile=prof, model_sha256="x")
    many = step_bytes(arch, batch=4, position=512, type_k=F16, type_v=F16)
    one_kv = step_bytes(arch, batch=1, position=512, type_k=F16, type_v=F16).kv_bytes
    many_bytes = many.total_bytes - many.kv_bytes + one_kv  # one sequence's KV, read once
    assert other.spec is not None and other.spec.draft_cost == 0.0
    assert other.spec.verify_cost == pytest.approx((FIXED + many_bytes / BW) / (FIXED + one / BW))
    assert other.decode_ceiling_tps == pytest.approx(1 / (FIXED + one / BW))


def _facts(sha: str = "t") -> RunFacts:
    eff: dict[str, str | int | float | bool | None] = {
        "model.path": "/m.gguf", "model.sha256": sha, "model.draft_sha256": "d",
        "ctx_per_slot": 512, "parallel": 1,
    }  # fmt: skip
    arm = ArmFacts(starts=(), bind=None, effective=eff, kv_mib_reported=None,
                   identity_engine=None)  # fmt: skip
    return RunFacts(arms={"a": arm}, hardware=find_hardware("h200"))


def test_theory_section_names_the_profile_only_when_there_is_one() -> None:
    arch = moe_arch()
    t = [2e-3 + 0.05e-3 * distinct_experts(128, 8, k) for k in range(1, 9)]
    target = ModelCalibration("t", "target", 1.28e9, 2.4e-3, tuple(t),
                              fit_verify(t, n_expert=128, n_used=8))  # fmt: skip
    prof = profile({"t": target, "d": ModelCalibration("d", "draft", 1e8, 0.6e-3)})
    rows = [{"arm": "a", "phase": "trial", "outcome": "ok", "n_in": 400, "n_out": 200,
             "decode_tps": 300.0}]  # fmt: skip
    spec = SpecDecodeRecord("metrics", 100, 300, 240, 0.8, 2.4, 3.4, (), 1)
    inputs = {"a": TheoryInputs(arch, None, spec, None, 100.0)}
    plain = theory_section(_facts(), rows, "a", inputs)
    cal = theory_section(_facts(), rows, "a", inputs, profile=prof)
    p0, p1 = plain.arms["a"], cal.arms["a"]
    assert isinstance(p0, ArmPrediction) and isinstance(p1, ArmPrediction)
    assert "profile" not in p0.to_json()
    assert p1.profile == f"{prof.name}: fixed cost measured for this model"
    assert p0.spec is not None and "draft_cost" not in p0.spec.to_json()
    assert p0.spec.assumes == ASSUMES
    assert p1.spec is not None and p1.spec.assumes == ASSUMES_PROFILE
    assert p1.spec.draft_cost == pytest.approx(0.25)
    assert p1.pct_of_roofline is not None and p0.pct_of_roofline is not None
    assert p1.pct_of_roofline > p0.pct_of_roofline  # the fixed cost lowers the ceiling
    assert TheorySection.from_json(cal.to_json()) == cal
    text = " ".join(getattr(b, "text", "") for b in theory_blocks(cal))
    assert f"Profile: {prof.name}" in text
    assert "Profile: none (datasheet bandwidth" in " ".join(
        getattr(b, "text", "") for b in theory_blocks(plain)
    )


def test_manifest_records_the_profile_only_when_given() -> None:
    m = Manifest()
    assert m.with_profile(None).to_json() == m.to_json() and m.hardware_profile is None
    assert "profile" not in m.to_json()
    prof = profile()
    with_p = Manifest.from_json(m.with_profile(prof).to_json())
    assert with_p.hardware_profile == prof


def test_predict_arm_reports_profile_r_and_c() -> None:
    arch = moe_arch()
    prof = profile({"d": ModelCalibration("d", "d", 1e8, 0.3e-3),
                    "t": ModelCalibration("t", "t", 1e9, 1.2e-3)})  # fmt: skip
    arm = predict_arm(arch, None, ctx_per_slot=512, spec_k=4, accept=0.9, profile=prof,
                      model_sha256="t", draft_sha256="d")  # fmt: skip
    assert arm.profile is not None and arm.profile.startswith(prof.name)
    assert arm.draft_cost == pytest.approx(0.25)
    assert arm.decode_ceiling_tps is not None and arm.verify_cost is not None


def test_profiles_are_found_by_hardware_newest_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SERVELAB_CACHE_DIR", str(tmp_path))
    assert load_profile("h200") is None  # never calibrated: no folder at all
    old, new = (
        profile(),
        HardwareProfile.from_json(
            {
                **profile().to_json(),
                "engine": "def-cuda-x86_64",
                "created_utc": "2026-12-02T00:00:00Z",
            }
        ),
    )
    for p in (old, new):
        path = profile_path(p.hardware, p.engine)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(p.to_json()), encoding="utf-8")
    assert load_profile("h200") == new and load_profile("rtx-3090") is None
    damaged = profile_path("h200", "zzz")
    damaged.write_text("{", encoding="utf-8")
    assert load_profile("h200") == new  # a damaged file is skipped when searching
    with pytest.raises(UsageError, match="cannot read hardware profile"):
        read_profile(damaged)


def test_make_variant_refuses_an_unknown_quantisation(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="unknown variant 'Q3_X'"):
        make_variant(tmp_path / "m.gguf", tmp_path / "v.gguf", "Q3_X")


def test_calibrate_output_names_the_fit_and_a_disturbed_measurement(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from servelab.cli.calibrate_cmd import _print

    quiet = fit_verify([1e-3 + 0.2e-3 * k for k in range(1, 5)])
    busy = (6e-3, 6.2e-3, 6.4e-3)  # t(1) 6 ms against a 1.2 ms decode step
    _print(profile({"t": ModelCalibration("t", "quiet", 1e9, 1.2e-3, (1.2e-3,), quiet),
                    "b": ModelCalibration("b", "busy", 1e9, 1.2e-3, busy, fit_verify(busy))}),
           "p.json")  # fmt: skip
    out = " ".join(capsys.readouterr().out.split())  # however wide the terminal
    assert "step = 0.800 ms + bytes / 3000.0 GB/s" in out
    assert "note: busy: t(1) 6.000 ms vs decode step 1.200 ms" in out
    assert "note: quiet" not in out


VERIFY = VerifyFit("linear", 2e-3, 0.5e-3, 0.0)  # t(K) = 2 ms + 0.5 ms x K


def cycles(overhead: float, draft: float, ks: tuple[int, ...] = (2, 4, 8)) -> dict[int, float]:
    """Cycle times of a pair whose loop costs ``overhead`` + K x ``draft`` beyond verify."""
    return {k: VERIFY.seconds(k + 1) + overhead + k * draft for k in ks}


def test_server_pair_fit_recovers_overhead_and_draft_token() -> None:
    pair = fit_server_pair("t", "d", 3e-3, cycles(1.5e-3, 0.4e-3), VERIFY)
    assert pair.overhead_s == pytest.approx(1.5e-3) and pair.draft_token_s == pytest.approx(4e-4)
    assert pair.rms_rel_residual == pytest.approx(0.0, abs=1e-9)
    assert pair.step_s == 3e-3 and sorted(pair.cycle_s) == [2, 4, 8]
    assert pair.key == pair_key("t", "d") == "t:d"
    two = fit_server_pair("t", "d", 3e-3, cycles(0.0, 1e-3, (2, 4)), VERIFY)
    assert two.overhead_s == pytest.approx(0.0, abs=1e-12) and two.draft_token_s == (
        pytest.approx(1e-3)
    )


def test_server_pair_fit_clamps_noise_and_refuses_too_little() -> None:
    # beyond verify: 0.5, 1.5, 3.5 ms at K = 2, 4, 8: slope 0.5 ms, intercept -0.5 ms
    neg_overhead = fit_server_pair("t", "d", 3e-3, cycles(-0.5e-3, 0.5e-3), VERIFY)
    x, y = [2, 4, 8], [0.5e-3, 1.5e-3, 3.5e-3]
    through_zero = sum(a * b for a, b in zip(x, y, strict=True)) / sum(a * a for a in x)
    assert neg_overhead.overhead_s == 0.0
    assert neg_overhead.draft_token_s == pytest.approx(through_zero)
    assert neg_overhead.rms_rel_residual > 0
    # beyond verify falling with K (a busy machine): flat overhead, no draft cost
    falling = {2: VERIFY.seconds(3) + 3e-3, 4: VERIFY.seconds(5) + 2e-3,
               8: VERIFY.seconds(9) + 1e-3}  # fmt: skip
    flat = fit_server_pair("t", "d", 3e-3, falling, VERIFY)
    assert flat.draft_token_s == 0.0 and flat.overhead_s == pytest.approx(2e-3)
    # both negative: nothing left but zeros, never a negative cost
    below = {k: VERIFY.seconds(k + 1) - 1e-4 * k for k in (2, 4, 8)}
    zero = fit_server_pair("t", "d", 3e-3, below, VERIFY)
    assert zero.overhead_s == 0.0 and zero.draft_token_s == 0.0
    for bad in ({2: 1e-3}, {2: 1e-3, 4: 0.0}):
        with pytest.raises(UsageError, match="2 or more K"):
            fit_server_pair("t", "d", 3e-3, bad, VERIFY)
    with pytest.raises(UsageError, match="2 or more K"):
        fit_server_pair("t", "d", 0.0, cycles(1e-3, 1e-4), VERIFY)


def _paired_profile() -> tuple[HardwareProfile, ServerPair]:
    target = ModelCalibration("t", "target", 1e9, 2.4e-3, (2.5e-3, 3e-3), VERIFY)
    draft = ModelCalibration("d", "draft", 1e8, 0.6e-3)
    pair = fit_server_pair("t", "d", 3e-3, cycles(1.5e-3, 0.9e-3), VERIFY)
    return profile({"t": target, "d": draft}).with_pairs([pair]), pair


def test_profile_json_round_trip_with_pairs_and_none_without() -> None:
    p, pair = _paired_profile()
    assert p.pairs == {"t:d": pair}
    data = json.loads(json.dumps(p.to_json()))
    assert set(data["pairs"]["t:d"]["cycle_s"]) == {"2", "4", "8"}
    back = HardwareProfile.from_json(data)
    assert back == p and back.pairs["t:d"].cycle_s == {2: pair.cycle_s[2], 4: pair.cycle_s[4],
                                                       8: pair.cycle_s[8]}  # fmt: skip
    assert "pairs" not in profile().to_json()
    assert HardwareProfile.from_json(profile().to_json()).pairs == {}
    again = p.with_pairs([fit_server_pair("t", "d", 4e-3, cycles(1e-3, 1e-3), VERIFY)])
    assert list(again.pairs) == ["t:d"] and again.pairs["t:d"].step_s == 4e-3  # replaced
    with pytest.raises(UsageError, match="damaged"):
        HardwareProfile.from_json({**data, "pairs": {"t:d": {**data["pairs"]["t:d"],
                                                             "cycle_s": [1]}}})  # fmt: skip
    with pytest.raises(UsageError, match="damaged"):
        HardwareProfile.from_json({**data, "pairs": [1]})


def test_a_pair_keeps_the_lengths_it_was_timed_at_and_older_profiles_still_read() -> None:
    pair = fit_server_pair("t", "d", 3e-3, cycles(1.5e-3, 0.4e-3), VERIFY, prompt_tokens=390,
                           gen_tokens=256)  # fmt: skip
    assert (pair.prompt_tokens, pair.gen_tokens) == (390, 256)
    p = profile().with_pairs([pair])
    data = json.loads(json.dumps(p.to_json()))
    assert data["pairs"]["t:d"]["prompt_tokens"] == 390
    assert HardwareProfile.from_json(data) == p
    # a profile written before the lengths were recorded: read, lengths unknown
    for key in ("prompt_tokens", "gen_tokens"):
        del data["pairs"]["t:d"][key]
    old = HardwareProfile.from_json(data).pairs["t:d"]
    assert (old.prompt_tokens, old.gen_tokens) == (None, None)
    assert old.overhead_s == pair.overhead_s
    plain = fit_server_pair("t", "d", 3e-3, cycles(1.5e-3, 0.4e-3), VERIFY)
    assert "prompt_tokens" not in profile().with_pairs([plain]).to_json()["pairs"]["t:d"]


def test_server_timing_lengths_are_checked_before_anything_runs() -> None:
    from servelab.runner.calibrate import calibrate

    for bad in ({"server_tokens": 8}, {"prompt_tokens": 0}, {"prompt_tokens": 70000}):
        with pytest.raises(UsageError, match="--server-tokens must be 16 or more"):
            calibrate("no-such-model", **bad)  # type: ignore[arg-type]


def test_verify_and_draft_cost_use_the_server_pair_only_for_its_draft() -> None:
    p, _ = _paired_profile()
    assert p.verify_cost("t", 3, "d") == pytest.approx((VERIFY.seconds(4) + 1.5e-3) / 3e-3)
    assert p.draft_cost("d", "t") == pytest.approx(0.9e-3 / 3e-3)
    # no pair (no draft named, another draft): llama-bench's ratios
    plain_r = VERIFY.seconds(4) / VERIFY.seconds(1)
    assert p.verify_cost("t", 3) == pytest.approx(plain_r)
    assert p.verify_cost("t", 3, "other") == pytest.approx(plain_r)
    assert p.draft_cost("d", "other") is None
    assert profile(dict(p.models)).draft_cost("d", "t") == pytest.approx(0.6e-3 / 2.4e-3)
    assert p.verify_cost("unknown", 3, "d") is None  # a pair needs the target's batch fit


def test_predict_spec_and_predict_use_the_pair_through_draft_sha256() -> None:
    arch = moe_arch()
    hw = find_hardware("h200")
    p, pair = _paired_profile()
    r = (VERIFY.seconds(4) + pair.overhead_s) / pair.step_s
    c = pair.draft_token_s / pair.step_s
    common = {"k": 3, "accept": 0.8, "position": 512, "type_k": F16, "type_v": F16,
              "profile": p, "model_sha256": "t", "k_max": 8}  # fmt: skip
    with_pair = predict_spec(arch, draft_cost=c, draft_sha256="d", **common)  # type: ignore[arg-type]
    without = predict_spec(arch, draft_cost=c, **common)  # type: ignore[arg-type]
    assert with_pair.verify_cost == pytest.approx(r)
    assert without.verify_cost == pytest.approx(VERIFY.seconds(4) / VERIFY.seconds(1))
    assert with_pair.speedup == pytest.approx(expected_tokens(0.8, 3) / (r + 3 * c))
    inputs = PredictInput(ctx_per_slot=512, spec_k=3, accept=0.8)
    cal = predict(arch, hw, inputs, profile=p, model_sha256="t", draft_sha256="d")
    assert cal.spec is not None
    assert cal.spec.verify_cost == pytest.approx(r) and cal.spec.draft_cost == pytest.approx(c)
    assert cal.spec.speedup == pytest.approx(expected_tokens(0.8, 3) / (r + 3 * c))
    bench_only = predict(arch, hw, inputs, profile=profile(dict(p.models)), model_sha256="t",
                         draft_sha256="d")  # fmt: skip
    assert bench_only.spec is not None
    assert bench_only.spec.draft_cost == pytest.approx(0.25)
    assert bench_only.spec.verify_cost == pytest.approx(VERIFY.seconds(4) / VERIFY.seconds(1))
