"""llama-perplexity output parsing and argv building, on output captured from real runs.

The fixtures are SmolLM2-135M-Instruct (Q4_1) on the packaged text with ``-c 256 -t 2``,
llama.cpp 0c1e57098: ``base.log`` saved the f16 baseline's logits; ``kl-*.log`` compared a KV
cache type against them; ``too-short.log`` asked for ``-c 4096``; ``v-quant-no-fa.log`` asked for a
q8_0 V cache without flash attention.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from servelab.engines.perplexity import (
    PerplexityConfig,
    config_from_llama_options,
    last_error,
    parse_perplexity_output,
    perplexity_argv,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "perplexity"


def _read(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def test_save_mode_gives_the_final_estimate() -> None:
    result = parse_perplexity_output(_read("base.log"))
    assert (result.ppl, result.ppl_err) == (13.4278, 0.87015)
    assert (result.chunks, result.ctx) == (15, 256)
    assert result.kld is None


def test_kld_mode_gives_perplexity_and_divergence() -> None:
    result = parse_perplexity_output(_read("kl-q8_0.log"))
    assert (result.ppl, result.ppl_err) == (13.341092, 0.861830)
    assert (result.chunks, result.ctx) == (15, 256)
    kld = result.kld
    assert kld is not None
    assert (kld["mean"], kld["mean_err"]) == (0.008392, 0.000328)
    assert kld["median"] == 0.003982
    assert (kld["max"], kld["p99_9"], kld["p99"], kld["p95"]) == (
        0.226733, 0.129471, 0.075875, 0.031386
    )  # fmt: skip
    assert (kld["p90"], kld["p10"], kld["p5"], kld["p1"], kld["p0_1"], kld["min"]) == (
        0.020755, 0.000520, 0.000193, 0.000020, 0.000001, 0.0
    )  # fmt: skip
    assert (kld["same_top_p_pct"], kld["same_top_p_err_pct"]) == (95.696, 0.465)
    assert (kld["rms_dp_pct"], kld["rms_dp_err_pct"]) == (2.610, 0.141)
    assert (kld["mean_dp_pct"], kld["mean_dp_err_pct"]) == (0.008, 0.060)
    assert (kld["ppl_base"], kld["ppl_base_err"]) == (13.427794, 0.870151)
    assert (kld["ppl_ratio"], kld["ppl_ratio_err"]) == (0.993543, 0.003234)
    assert (kld["ln_ppl_ratio"], kld["ln_ppl_ratio_err"]) == (-0.006478, 0.003255)
    assert (kld["ppl_diff"], kld["ppl_diff_err"]) == (-0.086702, 0.044265)
    assert kld["cor_ln_ppl_pct"] == 99.87


def test_same_configuration_has_zero_divergence() -> None:
    kld = parse_perplexity_output(_read("kl-f16.log")).kld
    assert kld is not None
    assert kld["mean"] == 0.0
    assert kld["same_top_p_pct"] == 100.0


def test_divergence_grows_as_the_cache_gets_coarser() -> None:
    means = [parse_perplexity_output(_read(f"kl-{t}.log")).kld for t in ("f16", "q8_0", "q4_0")]
    values = [k["mean"] for k in means if k is not None]
    assert values == sorted(values) and len(set(values)) == 3
    q4 = parse_perplexity_output(_read("kl-q4_0.log"))
    assert q4.ppl > parse_perplexity_output(_read("base.log")).ppl


def test_too_short_text_is_an_error_with_the_fix() -> None:
    with pytest.raises(ValueError, match=r"3999 tokens but the context needs 8192.*--ctx"):
        parse_perplexity_output(_read("too-short.log"))


def test_failed_start_names_the_last_error() -> None:
    text = _read("v-quant-no-fa.log")
    assert last_error(text) == "llama_perplexity: failed to create context"
    with pytest.raises(ValueError, match="failed to create context"):
        parse_perplexity_output(text)


def test_empty_output_is_an_error() -> None:
    with pytest.raises(ValueError, match="no perplexity result"):
        parse_perplexity_output("")


def _config(**options: object) -> PerplexityConfig:
    return config_from_llama_options(
        Path("/b/llama-perplexity"), Path("/m.gguf"), Path("/t.txt"), 256, options
    )


def test_argv_carries_the_arm_kv_settings() -> None:
    config = _config(**{"cache-type-k": "q8_0", "cache-type-v": "q8_0", "flash-attn": "on"})
    argv = perplexity_argv(config, "kld", Path("/r/base.kld"))
    assert argv == [
        "/b/llama-perplexity", "-m", "/m.gguf", "-f", "/t.txt", "-c", "256", "-b", "2048",
        "-ctk", "q8_0", "-ctv", "q8_0", "-fa", "on",
        "--kl-divergence-base", "/r/base.kld", "--kl-divergence",
    ]  # fmt: skip


def test_save_mode_has_no_kl_flag_and_help_defaults_are_left_out() -> None:
    config = _config(
        **{"threads": "-1", "threads-batch": "same as --threads", "gpu-layers": "auto"}
    )
    argv = perplexity_argv(config, "save", Path("/r/base.kld"))
    assert "--kl-divergence" not in argv and "-t" not in argv and "-ngl" not in argv
    assert argv[-2:] == ["--kl-divergence-base", "/r/base.kld"]
    assert argv[argv.index("-fa") + 1] == "auto"


def test_explicit_threads_and_micro_batch_are_passed() -> None:
    config = _config(**{"threads": "2", "ubatch-size": "128", "flash-attn": "sideways"})
    argv = perplexity_argv(config, "save", Path("/x"))
    assert argv[argv.index("-t") + 1] == "2" and argv[argv.index("-ub") + 1] == "128"
    assert argv[argv.index("-fa") + 1] == "auto"


@pytest.mark.parametrize(("ctx", "batch"), [(256, 2048), (512, 2048), (300, 1800), (4096, 4096)])
def test_batch_holds_whole_sequences(ctx: int, batch: int) -> None:
    assert PerplexityConfig(Path("b"), Path("m"), Path("t"), ctx).batch == batch
