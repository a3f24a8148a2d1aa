"""Source packs of llama.cpp: the filter rules, the pack format, reading packs and vocab files.

These tests pack tiny fabricated sdists (real tar files, real xz); the real 77 MB sdist is
packed in tests/integration/test_pack.py.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

import servelab.engines.pack as pack_module
from servelab.engines.installed import VOCAB_FILES, find_vocab
from servelab.engines.pack import (
    PACK_LIMIT_BYTES,
    check_pack,
    default_pack_path,
    extract_pack,
    pack_keeps,
    pack_llamacpp,
    read_pack,
)
from servelab.errors import BuildError, UsageError

SDIST_TOP = "llama_cpp_python-0.3.36"


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("SERVELAB_CACHE_DIR", str(root))
    monkeypatch.delenv("SERVELAB_LLAMA_SERVER", raising=False)
    return root


KEPT = [
    "CMakeLists.txt", "LICENSE", "licenses/LICENSE-jsonhpp", "cmake/build-info.cmake",
    "scripts/ui-assets.cmake", "ggml/src/ggml.c", "ggml/src/CMakeLists.txt",
    "ggml/src/ggml-cpu/arch/x86/quants.c", "ggml/src/ggml-cuda/ggml-cuda.cu",
    "ggml/src/ggml-cuda/template-instances/fattn-mma-f16-instance-ncols1_1-ncols2_8.cu",
    "ggml/include/ggml-vulkan.h", "models/ggml-vocab-llama-bpe.gguf",
    "models/ggml-vocab-gemma-4.gguf", "tools/ui/CMakeLists.txt", "tools/ui/ui.cpp.in",
    "tools/ui/sources.cmake", "tools/server/server.cpp", "tools/mtmd/clip.cpp",
    "vendor/miniaudio/miniaudio.h", "app/CMakeLists.txt", "common/arg.cpp",
]  # fmt: skip
DROPPED = [
    "docs/build.md", "tests/test-sampling.cpp", "examples/simple/simple.cpp", "benches/x.txt",
    "media/llama0-logo.png", ".github/workflows/build.yml", "gguf-py/gguf/gguf.py",
    "ggml/src/ggml-vulkan/ggml-vulkan.cpp", "ggml/src/ggml-metal/ggml-metal.m",
    "ggml/src/ggml-hip/CMakeLists.txt", "models/ggml-vocab-gpt-2.gguf",
    "models/ggml-vocab-llama-bpe.gguf.inp", "models/templates/Qwen-Qwen3-0.6B.jinja",
    "tools/ui/src/app.css", "tools/ui/package.json", "tools/server/tests/unit/test_basic.py",
    "tools/mtmd/test-1.jpeg", "tools/mtmd/tests/run.sh", "convert_hf_to_gguf.py", "README.md",
    "tools/server/README.md",
]  # fmt: skip


@pytest.mark.parametrize("rel", KEPT)
def test_pack_keeps_what_a_cpu_or_cuda_build_reads(rel: str) -> None:
    assert pack_keeps(rel)


@pytest.mark.parametrize("rel", DROPPED)
def test_pack_drops_docs_tests_other_backends_and_models(rel: str) -> None:
    assert not pack_keeps(rel)


def test_every_vocab_file_is_kept() -> None:
    assert all(pack_keeps(f"models/{name}") for name in VOCAB_FILES.values())


def fake_sdist(path: Path, files: dict[str, bytes]) -> Path:
    """A gzip tarball laid out like the llama-cpp-python sdist."""
    with tarfile.open(path, "w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(f"{SDIST_TOP}/{name}")
            info.size, info.mode = len(data), 0o600
            archive.addfile(info, io.BytesIO(data))
    return path


SDIST_FILES = {
    "setup.py": b"x",
    "vendor/llama.cpp/CMakeLists.txt": b"project(x)\n",
    "vendor/llama.cpp/docs/build.md": b"docs",
    "vendor/llama.cpp/ggml/src/ggml-cpu/ops.cpp": b"int ops;\n",
    "vendor/llama.cpp/ggml/src/ggml-sycl/sycl.cpp": b"int sycl;\n",
    "vendor/llama.cpp/models/ggml-vocab-qwen2.gguf": b"GGUF qwen2",
    "vendor/llama.cpp/models/ggml-vocab-falcon.gguf": b"GGUF falcon",
    # a git checkout inside the sdist has paths that also contain vendor/llama.cpp/
    ".git/modules/vendor/llama.cpp/objects/pack/pack-1.pack": b"git",
}


def _names(pack: Path) -> list[str]:
    with tarfile.open(pack) as archive:
        return sorted(archive.getnames())


def test_pack_holds_the_kept_files_under_llama_cpp_and_a_manifest(tmp_path: Path) -> None:
    sdist = fake_sdist(tmp_path / "sdist.tar.gz", SDIST_FILES)
    info = pack_llamacpp(sdist, "0.3.36", tmp_path / "p.tar.xz", progress=False)
    assert _names(info.path) == [
        "llama.cpp/CMakeLists.txt", "llama.cpp/SERVELAB-PACK.json",
        "llama.cpp/ggml/src/ggml-cpu/ops.cpp", "llama.cpp/models/ggml-vocab-qwen2.gguf",
    ]  # fmt: skip
    assert (info.commit, info.sdist_version, info.file_count) == ("0c1e57098", "0.3.36", 3)
    assert info.vocab == VOCAB_FILES and info.size_bytes == info.path.stat().st_size
    with tarfile.open(info.path) as archive:
        member = archive.getmember("llama.cpp/ggml/src/ggml-cpu/ops.cpp")
        assert (member.uid, member.uname, member.mode) == (0, "", 0o644)
        raw = archive.extractfile("llama.cpp/SERVELAB-PACK.json")
        assert raw is not None
        meta = json.loads(raw.read())
    assert meta["sdist"]["filename"] == "sdist.tar.gz" and len(meta["sdist"]["sha256"]) == 64
    assert meta["schema_version"] == 1 and meta["kind"] == "llamacpp"


def test_a_pack_over_the_limit_is_refused_and_not_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sdist = fake_sdist(tmp_path / "sdist.tar.gz", SDIST_FILES)
    monkeypatch.setattr(pack_module, "PACK_LIMIT_BYTES", 100)
    with pytest.raises(BuildError, match=r"bytes, over the 100 limit"):
        pack_llamacpp(sdist, "0.3.36", tmp_path / "p.tar.xz", progress=False)
    assert list(tmp_path.iterdir()) == [sdist]
    assert PACK_LIMIT_BYTES == 16_000_000


def test_pack_needs_a_tar_xz_name(tmp_path: Path) -> None:
    sdist = fake_sdist(tmp_path / "sdist.tar.gz", SDIST_FILES)
    with pytest.raises(UsageError, match=r"must end in \.tar\.xz"):
        pack_llamacpp(sdist, "0.3.36", tmp_path / "p.tgz", progress=False)


def test_read_pack_refuses_other_files_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist; make one with"):
        read_pack(tmp_path / "missing.tar.xz")
    sdist = fake_sdist(tmp_path / "sdist.tar.gz", SDIST_FILES)
    with pytest.raises(UsageError, match=r"is not a servelab llama\.cpp pack") as err:
        read_pack(sdist)
    assert "\n" not in str(err.value)


def _pack_with_commit(tmp_path: Path, commit: str) -> Path:
    sdist = fake_sdist(tmp_path / "sdist.tar.gz", SDIST_FILES)
    good = pack_llamacpp(sdist, "0.3.36", tmp_path / "good.tar.xz", progress=False).path
    out = tmp_path / f"{commit}.tar.xz"
    with tarfile.open(good) as src, tarfile.open(out, "w:xz") as dst:
        for member in src.getmembers():
            data = src.extractfile(member)
            assert data is not None
            raw = data.read()
            if member.name.endswith("SERVELAB-PACK.json"):
                raw = json.dumps({**json.loads(raw), "commit": commit}).encode()
                member.size = len(raw)
            dst.addfile(member, io.BytesIO(raw))
    return out


def test_check_pack_refuses_another_llama_cpp_commit(tmp_path: Path) -> None:
    other = _pack_with_commit(tmp_path, "deadbeef1")
    assert read_pack(other).commit == "deadbeef1"
    with pytest.raises(UsageError, match=r"holds llama\.cpp deadbeef1, this servelab builds"):
        check_pack(other)


def test_extract_pack_takes_only_the_top_folder(tmp_path: Path) -> None:
    sdist = fake_sdist(tmp_path / "sdist.tar.gz", SDIST_FILES)
    info = pack_llamacpp(sdist, "0.3.36", tmp_path / "p.tar.xz", progress=False)
    extract_pack(info.path, tmp_path / "src")
    files = sorted(
        p.relative_to(tmp_path / "src").as_posix() for p in (tmp_path / "src").rglob("*")
    )
    assert "CMakeLists.txt" in files and "models/ggml-vocab-qwen2.gguf" in files
    assert not any(f.startswith("llama.cpp") for f in files)


def test_find_vocab_extracts_from_the_cached_pack(cache: Path, tmp_path: Path) -> None:
    sdist = fake_sdist(tmp_path / "sdist.tar.gz", SDIST_FILES)
    pack_llamacpp(sdist, "0.3.36", default_pack_path(), progress=False)
    found = find_vocab("qwen2")
    assert found == cache / "vocab" / "ggml-vocab-qwen2.gguf"
    assert found.read_bytes() == b"GGUF qwen2"
    default_pack_path().unlink()
    assert find_vocab("qwen2") == found  # cached now: no pack or sdist needed


def test_find_vocab_prefers_the_installed_copy(cache: Path) -> None:
    from tests.unit.test_install import fake_install

    dest = fake_install()
    (dest / "vocab").mkdir()
    (dest / "vocab" / "ggml-vocab-gemma-4.gguf").write_bytes(b"GGUF gemma")
    assert find_vocab("gemma-4") == dest / "vocab" / "ggml-vocab-gemma-4.gguf"


def test_find_vocab_names_the_known_vocabs(cache: Path) -> None:
    with pytest.raises(UsageError, match="unknown vocab 'gpt-2'; known vocabs: gemma-4, llama-bpe"):
        find_vocab("gpt-2")
