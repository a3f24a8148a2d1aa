"""Issue 10: every bad input and every fault gets one clear line, an exit code, and loses nothing.

Pure and file-level checks (no engine): output limits against the context, the failure rule
behind exit 8, store write failures as ``StoreError``, user files that are not UTF-8, duplicate
keys, YAML booleans for on/off settings, and the exit codes the docs promise.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

import servelab.errors as errors_module
from servelab.analysis.request_failures import check_request_failures
from servelab.cli.main import main
from servelab.errors import RequestsFailed, ServelabError, StoreError, UsageError
from servelab.models.arch_files import load_architecture
from servelab.runner.experiment import load_spec
from servelab.runner.promote import load_registry
from servelab.spec.bench import BenchConfig
from servelab.spec.engine import EngineConfig
from servelab.spec.experiment import ExperimentSpec
from servelab.store.jsonl import JsonlWriter, read_jsonl
from servelab.store.summary import ArmSummary
from tests.conftest import Immutable

ROOT = Path(__file__).resolve().parents[2]
SPEC = """\
name: t
base:
  engine: {model: m.gguf}
  workload: structured
  max_tokens: 8
arms:
  a: {}
  b: {threads: 1}
"""


def write(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("servelab: error: "), err
    return err[0]


# --- max_tokens against the engine's context ---------------------------------------------------


def test_an_absurd_max_tokens_is_refused_naming_the_field(tmp_path: Path) -> None:
    spec = write(tmp_path, SPEC.replace("max_tokens: 8", "max_tokens: 99999999999999999999"))
    with pytest.raises(UsageError, match=r"base\.max_tokens: 99999999999999999999 is more than"):
        load_spec(spec)


def test_max_tokens_must_fit_the_context_per_slot(tmp_path: Path) -> None:
    spec = write(tmp_path, SPEC.replace("b: {threads: 1}", "b: {max_tokens: 4096}"))
    with pytest.raises(UsageError, match=r"arm 'b': max_tokens: 4096 does not fit .*ctx_per_slot"):
        load_spec(spec)
    base = SPEC.replace("max_tokens: 8", "max_tokens: 5000")
    with pytest.raises(UsageError, match=r"base\.max_tokens: 5000 does not fit"):
        load_spec(write(tmp_path, base))
    roomy = base.replace("{model: m.gguf}", "{model: m.gguf, ctx_per_slot: 8192}")
    assert load_spec(write(tmp_path, roomy))[0].base.max_tokens == 5000


def test_a_total_context_in_flags_is_shared_by_the_slots() -> None:
    engine = EngineConfig(model="m", flags=("-c", "16384"), parallel=4)
    assert engine.slot_context() == 4096
    assert engine.slot_context(parallel=2) == 8192
    assert EngineConfig(model="m", flags=("--ctx-size", "0")).slot_context() is None
    assert EngineConfig(kind="openai", model="m", endpoint="http://x").slot_context() is None
    spec = {"base": {"engine": {"model": "m", "flags": ["-c", "8192"]}, "max_tokens": 5000},
            "arms": {"a": {}, "b": {}}, "concurrency": 2}  # fmt: skip
    with pytest.raises(ValidationError, match=r"context per slot \(4096 tokens"):
        ExperimentSpec.model_validate(spec)  # 8192 over 2 slots


@pytest.mark.parametrize(
    ("max_tokens", "needle"),
    [("99999999999999999999", "is more than any engine's context"), ("4096", "-c N")],
)
def test_bench_refuses_a_max_tokens_the_engine_cannot_honour(
    max_tokens: str, needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "--max-tokens", max_tokens]) == 2
    line = one_error_line(capsys)
    assert "--max-tokens" in line and needle in line


def test_bench_context_counts_its_concurrency() -> None:
    engine = EngineConfig(model="m", flags=("-c", "8192"))
    assert BenchConfig(engine=engine, max_tokens=3000).max_tokens == 3000
    with pytest.raises(ValidationError, match="2048 tokens"):
        BenchConfig(engine=engine, concurrency=4, max_tokens=3000)


# --- the failure rule behind exit 8 ------------------------------------------------------------


def arm(n_ok: int, n_failed: int, **failures: int) -> ArmSummary:
    return ArmSummary(
        n_ok=n_ok, n_failed=n_failed, n_warmup=0, failures=failures, finish_reasons={},
        n_out_fallback=0, itl_unverified=0, invalid_utf8_requests=0, metrics={},
    )  # fmt: skip


def test_an_arm_with_no_successful_request_fails_the_run(tmp_path: Path) -> None:
    arms = {"a": arm(16, 0), "b": arm(0, 16, http_error=16)}
    with pytest.raises(RequestsFailed) as info:
        check_request_failures(arms, 1.0, tmp_path)  # even when any rate is tolerated
    assert info.value.exit_code == 8
    message = str(info.value)
    assert message.startswith("arm 'b': 16 of 16 trial requests failed (no trial request")
    assert "http_error: 16" in message and str(tmp_path / "requests.jsonl") in message


def test_the_failure_rate_threshold_is_the_users(tmp_path: Path) -> None:
    arms = {"a": arm(15, 1, timeout=1), "b": arm(14, 2, timeout=2)}
    check_request_failures(arms, 0.125, tmp_path)  # 2 of 16 is exactly 12.5 %: tolerated
    with pytest.raises(RequestsFailed, match=r"arm 'b': 2 of 16 .*above max_failure_rate 10.0%"):
        check_request_failures(arms, 0.10, tmp_path)
    with pytest.raises(RequestsFailed, match=r"\(and 1 more arm"):
        check_request_failures(arms, 0.05, tmp_path)


def test_max_failure_rate_is_a_spec_key_with_a_default(tmp_path: Path) -> None:
    assert load_spec(write(tmp_path, SPEC))[0].max_failure_rate == 0.1
    spec = load_spec(write(tmp_path, SPEC + "max_failure_rate: 0.5\n"))[0]
    assert spec.max_failure_rate == 0.5
    with pytest.raises(UsageError, match="max_failure_rate"):
        load_spec(write(tmp_path, SPEC + "max_failure_rate: 2\n"))


# --- store write failures ----------------------------------------------------------------------


def test_a_file_made_unwritable_mid_run_is_one_store_error(
    tmp_path: Path, immutable: Immutable
) -> None:
    path = tmp_path / "requests.jsonl"
    writer = JsonlWriter(path)
    writer.write({"seq": 0})
    immutable.make(path)
    # leaving the writer's block must not replace the StoreError with a PermissionError
    with pytest.raises(StoreError, match=f"cannot write to {path}") as info, writer:
        writer.write({"seq": 1})
    assert isinstance(info.value.__cause__, PermissionError)  # the cause is kept
    assert read_jsonl(path).rows == [{"seq": 0}]  # what was written before is kept


def test_closing_a_writer_whose_buffer_cannot_reach_the_disk_is_a_store_error(
    tmp_path: Path, immutable: Immutable
) -> None:
    path = tmp_path / "requests.jsonl"
    writer = JsonlWriter(path)
    immutable.make(path)
    writer._fh.write("{}\n")  # buffered, as a row is between its write and its flush
    with pytest.raises(StoreError, match=f"cannot write to {path}"):
        writer.close()
    writer.close()  # already closed: nothing more to report


def test_an_unwritable_file_is_refused_at_open(tmp_path: Path, immutable: Immutable) -> None:
    path = tmp_path / "requests.jsonl"
    path.write_text('{"seq": 0}\n', encoding="utf-8")
    immutable.make(path)
    with pytest.raises(StoreError, match=f"cannot open {path}"):
        JsonlWriter(path)


# --- user files: not UTF-8, duplicate keys, YAML booleans --------------------------------------


def latin1(tmp_path: Path, text: str, name: str) -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("latin-1"))
    return path


def test_user_files_that_are_not_utf8_are_one_usage_error(tmp_path: Path) -> None:
    spec = latin1(tmp_path, "# caf\xe9\n" + SPEC, "spec.yaml")
    with pytest.raises(UsageError, match=r"spec file .* is not UTF-8 text \(byte 0xe9"):
        load_spec(spec)
    roles = latin1(tmp_path, "roles: {fast: {description: caf\xe9}}\n", "roles.yaml")
    with pytest.raises(UsageError, match=r"roles registry .* is not UTF-8"):
        load_registry(roles)
    arch = latin1(tmp_path, "name: caf\xe9\n", "arch.yaml")
    with pytest.raises(UsageError, match="is not UTF-8"):
        load_architecture(str(arch))


def test_run_with_a_latin1_spec_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = latin1(tmp_path, "description: caf\xe9\n" + SPEC, "spec.yaml")
    assert main(["run", str(spec)]) == 2
    assert "not UTF-8" in one_error_line(capsys)


def test_duplicate_keys_are_refused_in_specs_and_registries(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"line 10, column 1: duplicate key 'name'"):
        load_spec(write(tmp_path, SPEC + "blocks: 2\nname: again\n"))
    roles = write(tmp_path, "roles:\n  fast: {}\n  fast: {}\n", "roles.yaml")
    with pytest.raises(UsageError, match="duplicate key 'fast'"):
        load_registry(roles)


@pytest.mark.parametrize("value", ["on", "true", "'on'", "yes"])
def test_flash_attn_on_means_on(tmp_path: Path, value: str) -> None:
    text = SPEC.replace("b: {threads: 1}", f"b: {{flash_attn: {value}}}")
    if value == "yes":
        with pytest.raises(UsageError, match=r"flash_attn: Input should be 'on', 'off' or 'auto'"):
            load_spec(write(tmp_path, text))
        return
    spec, _ = load_spec(write(tmp_path, text))
    assert spec.expand()[1].override.flash_attn == "on"


def test_yaml_booleans_as_factor_levels_keep_their_on_off_names(tmp_path: Path) -> None:
    text = SPEC.split("arms:")[0] + "factors:\n  flash_attn: [on, off]\n"
    names = [a.name for a in load_spec(write(tmp_path, text))[0].expand()]
    assert names == ["flash_attn=on", "flash_attn=off"]
    text = SPEC.split("arms:")[0] + "factors:\n  flash_attn: [true, false]\n"
    names = [a.name for a in load_spec(write(tmp_path, text))[0].expand()]
    assert names == ["flash_attn=on", "flash_attn=off"]


def test_a_failing_run_prints_its_error_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = write(tmp_path, SPEC.replace("workload: structured", "workload: no-such-workload"))
    assert main(["run", str(spec)]) == 2
    assert "no-such-workload" in one_error_line(capsys)


# --- exit codes are documented -----------------------------------------------------------------


def error_kinds() -> list[type[ServelabError]]:
    """The kinds that set their own exit code (subkinds share their parent's)."""
    return [c for _, c in inspect.getmembers(errors_module, inspect.isclass)
            if issubclass(c, ServelabError) and "exit_code" in vars(c)]  # fmt: skip


def test_every_exit_code_is_in_the_tree_and_in_docs_errors() -> None:
    doc = errors_module.__doc__ or ""
    page = (ROOT / "docs" / "errors.md").read_text(encoding="utf-8")
    for kind in error_kinds():
        assert re.search(rf"{kind.__name__}\s+\(exit {kind.exit_code}\)", doc), kind.__name__
        assert f"| {kind.exit_code} |" in page, kind.exit_code
        assert f"`{kind.__name__}`" in page, kind.__name__
    assert "docs/errors.md" in (ROOT / "README.md").read_text(encoding="utf-8")
