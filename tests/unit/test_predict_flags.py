"""llama-server's flags read as llama-server 0c1e57098 reads them, and `predict --flags`.

Known answers taken from its source (common/arg.cpp, tools/server/server.cpp, common/fit.cpp,
src/llama-context.cpp) and checked against the real binary in
tests/integration/test_predict_flags.py: spellings, defaults, std::stoi, last value wins, -np
auto, --kv-unified-per-slot, --fit's per-stream context, and the words it refuses.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
import yaml
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from servelab.cli.predict_cmd import predict
from servelab.errors import UsageError
from servelab.prediction import with_server_flags
from servelab.theory.predict import PredictInput
from servelab.theory.server_flag_names import NO_VALUE, ONE_VALUE, TWO_VALUES
from servelab.theory.server_flags import (
    ServerSettings,
    equivalent_flags,
    parse_server_flags,
    server_settings,
    slot_context,
    total_context,
)

ARCH = {
    "name": "toy-swa", "layers": 6, "embedding": 256, "vocab": 1000, "context_train": 8192,
    "attention": {"heads": 4, "kv_heads": 1, "head_dim": 64, "sliding_window": 512},
    "pattern": ["sliding", "sliding", "full"], "ffn": 512, "weight_bits": 4,
}  # fmt: skip


def settings(text: str) -> ServerSettings:
    return server_settings(parse_server_flags(text))


def test_defaults_are_llama_servers() -> None:
    f = parse_server_flags("")
    assert (f.n_ctx, f.n_parallel, f.kv_unified, f.n_batch, f.n_ubatch) == (0, -1, None, 2048, 512)
    assert (f.cache_type_k, f.cache_type_v, f.flash_attn, f.swa_full) == (
        "f16",
        "f16",
        "auto",
        False,
    )
    s = server_settings(f)
    assert (s.n_ctx, s.n_parallel, s.kv_unified, s.flash_attn) == (0, 4, True, True)
    assert total_context(s, 32768) == 32768 and slot_context(s, 32768) == 32768


@pytest.mark.parametrize(
    "text",
    [
        "-c 16384 -np 2 -ctk q8_0 -ctv q8_0",
        "--ctx-size 16384 --parallel 2 --cache-type-k q8_0 --cache-type-v q8_0",
        "--ctx_size 16384 --parallel 2 --cache_type_k q8_0 --cache_type_v q8_0",
        "-c 4096 -c 16384 -np 2 -ctk q8_0 -ctv q8_0",  # the last value wins
        "-c 16384 -np 2 -ctk q8_0 -ctv q8_0 --port 8080 -t 4 -ngl 99 --jinja -md d.gguf",
        "-c '16384' -np 2 -ctk q8_0 -ctv q8_0 --alias 'my model' --no-webui",
        "./build/bin/llama-server -m m.gguf -c 16384 -np 2 -ctk q8_0 -ctv q8_0",
    ],
)
def test_spellings_read_alike(text: str) -> None:
    s = settings(text)
    assert (s.n_ctx, s.n_parallel, s.kv_unified) == (16384, 2, False)
    assert (s.cache_type_k, s.cache_type_v) == ("q8_0", "q8_0")
    assert slot_context(s, 32768) == 8192


def test_integers_are_read_like_stoi() -> None:
    f = parse_server_flags("-c 16k -ub +256")
    assert (f.n_ctx, f.n_ubatch) == (16, 256)
    assert "llama-server reads -c '16k' as 16 (stops at 'k')" in f.notes


def test_switches_and_values() -> None:
    s = settings("-np 2 -kvu --swa-full -fa off -b 1024 -ub 128")
    assert (s.kv_unified, s.swa_full, s.flash_attn, s.n_batch, s.n_ubatch) == (
        True, True, False, 1024, 128,
    )  # fmt: skip
    assert settings("-np 2 -kvu --no-kv-unified").kv_unified is False
    assert settings("-np 2 -fa enabled").flash_attn and settings("-np 2 -fa -1").flash_attn
    assert settings("-np 2 --embedding -b 4096 -ub 256").n_batch == 256


def test_np_auto_forces_a_unified_cache() -> None:
    s = settings("-np -1 -no-kvu -c 8192")
    assert (s.n_parallel, s.kv_unified) == (4, True)
    assert any("-no-kvu has no effect" in n for n in s.notes)
    assert settings("-np -7").n_parallel == 4


def test_no_ctx_with_separate_slots_is_the_trained_context_per_slot() -> None:
    s = settings("-np 3")  # --fit (on) resolves -c 0 to trained x streams
    assert (total_context(s, 32768), slot_context(s, 32768)) == (98304, 32768)
    off = settings("-np 3 -fit off")  # llama_context: one trained context over 3 streams
    assert (total_context(off, 32768), slot_context(off, 32768)) == (32768, 11008)
    assert total_context(settings("-np 3 -kvu"), 32768) == 32768


def test_kv_unified_per_slot_sizes_the_pool_without_c() -> None:
    assert settings("--kv-unified-per-slot 2048 -np 3").n_ctx == 6144
    assert settings("--kv-unified-per-slot 2048").n_ctx == 8192  # -np auto = 4
    assert settings("--kv-unified-per-slot 2048 -np 3 -c 0").n_ctx == 0  # -c 0 pins it
    assert settings("--kv-unified-per-slot 2048 -np 3 -c 4096").n_ctx == 4096
    capped = settings("-c 32768 -np 4 -kvu --kv-unified-per-slot 1000")
    assert slot_context(capped, 32768) == 1000


def test_slot_context_is_capped_by_the_trained_context() -> None:
    assert slot_context(settings("-c 65536 -np 1"), 32768) == 32768
    assert slot_context(settings("-c 1000 -np 3"), 32768) == 512  # pad256(1024 / 3)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("-c", "needs 1 value"),
        ("-np 0", "-np 0 is invalid"),
        ("--ctx-size=4096", "write --ctx-size 4096"),
        ("--frobnicate 3", "no flag '--frobnicate'"),
        ("model.gguf", "no flag 'model.gguf'"),
        ("-c lots", "needs an integer"),
        ("-c 99999999999", "out of range"),
        ("-ctk Q8_0", "supports f32, f16"),
        ("-ctv q3_k", "supports f32, f16"),
        ("-fa maybe", "takes on, off or auto"),
        ("--fit sometimes", "takes on or off"),
        ("--help", "print and exit"),
        ("--gpt-oss-20b-default", "is a preset"),
        ("-c 'unclosed", "check the quotes"),
    ],
)
def test_words_llama_server_refuses_are_refused(text: str, words: str) -> None:
    with pytest.raises(UsageError, match=r"^--flags: ") as caught:
        settings(text)
    assert words in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("-c -5", "-c -5 is negative"),
        ("-np 300", "at most 256"),
        ("-fa off -ctv q8_0", "needs flash attention"),
        ("-b 0 -ub 0", "both zero"),
    ],
)
def test_settings_llama_cpp_refuses_are_refused(text: str, words: str) -> None:
    with pytest.raises(UsageError, match=words):
        settings(text)


def test_ignored_flags_are_named_in_one_note() -> None:
    f = parse_server_flags("-t 4 --port 8080 -m x.gguf -c 4096 --override-kv a=int:1")
    assert "ignored (no effect on the KV cache): -t, --port" in f.notes
    assert "-m ignored: the model is the MODEL argument" in f.notes
    assert any(n.startswith("--override-kv not applied") for n in f.notes)


def test_flag_table_arities_do_not_overlap() -> None:
    assert not NO_VALUE & ONE_VALUE and not (NO_VALUE | ONE_VALUE) & TWO_VALUES
    assert {"-c", "-np", "-ctk", "-ctv", "-b", "-ub", "-fa"} <= ONE_VALUE
    assert {"-kvu", "-no-kvu", "--swa-full"} <= NO_VALUE


@given(
    n_ctx=st.integers(min_value=1, max_value=1 << 20),
    parallel=st.integers(min_value=1, max_value=64),
    unified=st.booleans(),
)
def test_equivalent_flags_read_back(n_ctx: int, parallel: int, unified: bool) -> None:
    """What the --ctx/--parallel path prints as llama-server's flags reads back to itself."""
    s = settings(equivalent_flags(n_ctx, parallel, "q8_0", "f16", unified=unified))
    assert (s.n_ctx, s.n_parallel, s.kv_unified, s.cache_type_k) == (
        n_ctx, parallel, unified, "q8_0",
    )  # fmt: skip


def test_with_server_flags_keeps_position_and_spec() -> None:
    base = PredictInput(ctx_per_slot=4096, position=100, spec_k=3, accept=0.5)
    i = with_server_flags(base, "-c 16384 -np 2 -ctk q8_0", 32768)
    assert (i.ctx_per_slot, i.parallel, i.total_ctx, i.kv_k, i.kv_v) == (
        8192,
        2,
        16384,
        "q8_0",
        "f16",
    )
    assert (i.position, i.spec_k, i.accept) == (100, 3, 0.5)
    assert i.server_flags is not None and i.server_flags.given == "-c 16384 -np 2 -ctk q8_0"


def app() -> typer.Typer:
    application = typer.Typer(pretty_exceptions_enable=False)
    application.command()(predict)
    return application


@pytest.fixture
def arch_file(tmp_path: Path) -> Path:
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(ARCH), encoding="utf-8")
    return path


def _defaults(args: tuple[str, ...]) -> list[str]:
    """--hw none --profile none unless the test gives its own."""
    return [x for flag in ("--hw", "--profile") if flag not in args for x in (flag, "none")]


def _json(arch_file: Path, *args: str) -> dict[str, object]:
    result = CliRunner().invoke(app(), [str(arch_file), "--json", *_defaults(args), *args])
    assert result.exit_code == 0, result.output
    data: dict[str, object] = json.loads(result.stdout)
    return data


def test_flags_and_ctx_parallel_say_the_same_cache(arch_file: Path) -> None:
    """--ctx is per slot: --ctx 4096 --parallel 2 is llama-server -c 8192 -np 2."""
    by_ctx = _json(arch_file, "--ctx", "4096", "--parallel", "2")
    by_flags = _json(arch_file, "--flags", "-c 8192 -np 2")
    assert by_ctx["kv"] == by_flags["kv"]
    by_ctx_settings, flag_settings = by_ctx["settings"], by_flags["settings"]
    assert isinstance(by_ctx_settings, dict) and isinstance(flag_settings, dict)
    assert by_ctx_settings["llama_server"] == "-c 8192 -np 2 -ctk f16 -ctv f16"
    assert by_ctx_settings["flags"] is None
    assert flag_settings["flags"]["given"] == "-c 8192 -np 2"
    assert flag_settings["flags"]["read"]["n_parallel"] == 2
    assert flag_settings["flags"]["effective"]["n_ctx"] == 8192


def test_flags_default_is_the_trained_context_and_auto_slots(arch_file: Path) -> None:
    data = _json(arch_file, "--flags", "")
    s, kv = data["settings"], data["kv"]
    assert isinstance(s, dict) and isinstance(kv, dict)
    assert (s["n_ctx"], s["parallel"], s["unified"], s["ctx_per_slot"]) == (8192, 4, True, 8192)
    assert s["flags"]["read"]["n_parallel"] == -1
    assert any("-np auto" in n for n in s["flags"]["notes"])
    assert (kv["n_ctx"], kv["n_ctx_seq"]) == (8192, 8192)


def test_text_output_says_what_ctx_means(arch_file: Path) -> None:
    args = [str(arch_file), "--hw", "none", "--profile", "none"]
    plain = CliRunner().invoke(app(), [*args, "--ctx", "16384", "--parallel", "2"])
    assert "--ctx 16384 is the context PER SLOT" in plain.stdout
    assert "-c 32768 -np 2" in plain.stdout
    flagged = CliRunner().invoke(app(), [*args, "--flags", "-c 16384 -np 2 -t 2"])
    assert "-c 16384 total, 2 slots, 8192 tokens per slot" in flagged.stdout
    assert "note: ignored (no effect on the KV cache): -t" in flagged.stdout


@pytest.mark.parametrize("extra", [["--ctx", "4096"], ["--parallel", "2"], ["--kv", "q8_0"],
                                   ["--kv-k", "q8_0"], ["--kv-v", "f16"]])  # fmt: skip
def test_flags_with_ctx_parallel_or_kv_is_refused(arch_file: Path, extra: list[str]) -> None:
    with pytest.raises(UsageError, match="--flags already holds llama-server's") as caught:
        CliRunner().invoke(
            app(), [str(arch_file), "--flags", "-c 4096", *extra], catch_exceptions=False
        )
    assert extra[0] in str(caught.value)


def test_profile_file_that_is_missing_is_refused(arch_file: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such file"):
        CliRunner().invoke(
            app(), [str(arch_file), "--profile", str(tmp_path / "nope.json")],
            catch_exceptions=False,
        )  # fmt: skip


def test_profile_file_sets_the_ceiling_and_is_named(arch_file: Path, tmp_path: Path) -> None:
    """--profile FILE: the decode ceiling is 1 / (fixed + bytes / bandwidth) of that file."""
    from servelab.theory.calibration import HardwareProfile, StepFit

    fit = StepFit(fixed_s=0.002, bandwidth_bytes_s=1e12, rms_rel_residual=0.0, n_points=2)
    profile = HardwareProfile("h100-sxm", "0c1e57098-cuda", "2026-12-01T00:00:00Z", fit, ())
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(profile.to_json()), encoding="utf-8")
    data = _json(arch_file, "--hw", "h100-sxm", "--profile", str(path))
    decode, named = data["decode"], data["profile"]
    assert isinstance(decode, dict) and isinstance(named, dict)
    total = decode["bytes_per_token"]["total_bytes"]
    assert decode["ceiling_tps"] == pytest.approx(1 / (0.002 + total / 1e12))
    assert (named["hardware"], named["fixed_s"]) == ("h100-sxm", 0.002)
    assert _json(arch_file, "--hw", "h100-sxm", "--profile", "none")["profile"] is None
