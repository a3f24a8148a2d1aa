"""Slim source packs of llama.cpp for hosts without a network.

Owns the pack format: a ``.tar.xz`` whose one top folder ``llama.cpp/`` holds the sdist's
``vendor/llama.cpp`` minus what a CPU or CUDA build of TOOLS never reads (docs, tests,
examples, benches, the web UI's sources, media, other backends' sources, model files other than
VOCAB_FILES), plus ``llama.cpp/SERVELAB-PACK.json`` naming the commit and the sdist it came
from. Also owns fetching the pinned llama-cpp-python sdist (pip, sha256-checked), reading and
extracting a pack, and extracting a vocab file from the cached pack or sdist.
Must not build (``install.py`` does) and must not write a pack over the size limit: a pack is
written beside its destination and renamed into place only when complete and small enough.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

from servelab.engines.installed import KIND, LLAMA_CPP_COMMIT, VOCAB_FILES
from servelab.errors import BuildError, DownloadError, EnvironmentProblem, UsageError
from servelab.models.pull import pip_download, sha256_file
from servelab.paths import atomic_path, cache_dir

SDIST_REQUIREMENT = "llama-cpp-python==0.3.36"
SDIST_VERSION = "0.3.36"
SDIST_FILENAME = "llama_cpp_python-0.3.36.tar.gz"
SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
PACK_TOP = "llama.cpp"
PACK_MANIFEST = "SERVELAB-PACK.json"
PACK_SCHEMA_VERSION = 1
PACK_LIMIT_BYTES = 16_000_000  # "at most 16 MB" in decimal megabytes: the stricter reading
SDIST_VENDOR = "vendor/llama.cpp/"

# Top-level folders no build of the tools reads (tests/examples/pocs are off in CMAKE_FLAGS).
_DROP_TOP = frozenset({
    ".devops", ".github", ".pi", "benches", "ci", "conversion", "docs", "examples", "gguf-py",
    "grammars", "media", "pocs", "requirements", "skills", "tests",
})  # fmt: skip
_KEEP_BACKENDS = frozenset({"ggml-cpu", "ggml-cuda"})
_DROP_SUFFIXES = frozenset({
    ".md", ".py", ".png", ".jpg", ".jpeg", ".gif", ".svg", ".webp", ".ico", ".mp3", ".mp4",
    ".wav", ".ipynb", ".sh", ".bat", ".ps1", ".nix", ".swift",
})  # fmt: skip
# tools/ui holds the web UI's sources; with LLAMA_BUILD_UI=OFF CMake reads only its build files.
_UI_KEEP_SUFFIXES = (".txt", ".cmake", ".in")


@dataclass(frozen=True, slots=True)
class PackInfo:
    """What SERVELAB-PACK.json says about a pack, plus the pack file's own facts."""

    path: Path
    commit: str
    sdist_version: str
    sdist_sha256: str
    file_count: int
    vocab: dict[str, str]
    size_bytes: int
    sha256: str


def fetch_sdist(console: Console, progress: bool) -> Path:
    """The llama-cpp-python sdist in ``cache_dir()/downloads``, downloaded once and verified."""
    downloads = cache_dir() / "downloads"
    target = downloads / SDIST_FILENAME
    if target.is_file() and sha256_file(target) == SDIST_SHA256:
        return target
    downloads.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".pip-", dir=downloads) as tmp:
        spinner = console.status(f"pip download {SDIST_REQUIREMENT} (sdist, 77 MB)")
        with spinner if progress else nullcontext():
            pip_download([SDIST_REQUIREMENT], Path(tmp), extra_args=["--no-binary=:all:"])
        got = Path(tmp) / SDIST_FILENAME
        if not got.is_file() or sha256_file(got) != SDIST_SHA256:
            raise DownloadError(
                f"pip download {SDIST_REQUIREMENT} gave no {SDIST_FILENAME} with sha256 "
                f"{SDIST_SHA256}; the file on PyPI changed: do not build from it"
            )
        os.replace(got, target)
    return target


def default_pack_path() -> Path:
    """Where ``engines install`` keeps the pack it makes from the fetched sdist."""
    return cache_dir() / "downloads" / f"{PACK_TOP}-{LLAMA_CPP_COMMIT}-src.tar.xz"


def pack_keeps(rel: str) -> bool:
    """True if the file ``rel`` (a path inside vendor/llama.cpp) goes into the pack."""
    path = PurePosixPath(rel)
    parts = path.parts
    if not parts or parts[0] in _DROP_TOP:
        return False
    if parts[0] == "models":
        return len(parts) == 2 and parts[1] in VOCAB_FILES.values()
    if parts[:2] == ("ggml", "src") and len(parts) > 3 and parts[2].startswith("ggml-"):
        return parts[2] in _KEEP_BACKENDS
    if parts[:2] == ("tools", "ui"):
        return len(parts) == 3 and path.name.endswith(_UI_KEEP_SUFFIXES)
    if parts[0] == "tools" and "tests" in parts[2:]:
        return False
    return path.suffix.lower() not in _DROP_SUFFIXES or rel == "LICENSE"


# --- writing a pack --------------------------------------------------------------------------


def _sdist_members(archive: tarfile.TarFile) -> Iterator[tuple[str, tarfile.TarInfo]]:
    """``(path inside vendor/llama.cpp, member)`` for each kept regular file of the sdist."""
    for member in archive.getmembers():
        _top, _, inside = member.name.partition("/")  # llama_cpp_python-<version>/...
        rel = inside.removeprefix(SDIST_VENDOR)
        if rel != inside and rel and member.isfile() and pack_keeps(rel):
            yield rel, member


def _clean(info: tarfile.TarInfo, name: str) -> tarfile.TarInfo:
    """A copy of ``info`` named ``name`` with no owner, so packs differ only by content."""
    out = tarfile.TarInfo(name)
    out.size, out.mtime, out.mode = info.size, info.mtime, info.mode & 0o755 | 0o644
    return out


def _manifest(sdist: Path, sdist_version: str, files: int) -> dict[str, Any]:
    return {
        "schema_version": PACK_SCHEMA_VERSION,
        "kind": KIND,
        "commit": LLAMA_CPP_COMMIT,
        "sdist": {"filename": sdist.name, "version": sdist_version, "sha256": sha256_file(sdist)},
        "file_count": files,
        "vocab": dict(VOCAB_FILES),
        "packed_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _progress(enabled: bool, console: Console) -> Progress:
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn())
    return Progress(*columns, TimeElapsedColumn(), console=console, disable=not enabled)


def _add_manifest(out: tarfile.TarFile, meta: dict[str, Any]) -> None:
    raw = (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode()
    info = tarfile.TarInfo(f"{PACK_TOP}/{PACK_MANIFEST}")
    info.size, info.mtime, info.mode = len(raw), int(datetime.now(UTC).timestamp()), 0o644
    out.addfile(info, io.BytesIO(raw))


def _write_pack(sdist: Path, sdist_version: str, tmp: Path, bar: Progress) -> None:
    """Write the pack to ``tmp``: the manifest first (so reading it decompresses a few
    kilobytes, not the whole pack), then the kept files in the sdist's order."""
    with tarfile.open(sdist) as src, tarfile.open(tmp, "w:xz", preset=9) as out:
        kept = list(_sdist_members(src))
        _add_manifest(out, _manifest(sdist, sdist_version, len(kept)))
        task = bar.add_task("packing llama.cpp", total=sum(m.size for _, m in kept))
        for rel, member in kept:
            data = src.extractfile(member)
            if data is None:
                raise BuildError(f"{sdist}: cannot read {member.name}; fetch the sdist again")
            out.addfile(_clean(member, f"{PACK_TOP}/{rel}"), data)
            bar.advance(task, member.size)


def pack_llamacpp(sdist: Path, sdist_version: str, out: Path, *, progress: bool = True) -> PackInfo:
    """Write the slim pack of ``sdist`` to ``out`` (atomically); BuildError if it would exceed
    PACK_LIMIT_BYTES."""
    out = out.expanduser().absolute()
    if not out.name.endswith(".tar.xz"):
        raise UsageError(f"pack file {out} must end in .tar.xz; choose e.g. {out.name}.tar.xz")
    with atomic_path(out) as tmp:
        with _progress(progress, Console(stderr=True)) as bar:
            _write_pack(sdist, sdist_version, tmp, bar)
        size = tmp.stat().st_size
        if size > PACK_LIMIT_BYTES:
            raise BuildError(
                f"the pack of {sdist.name} is {size:,} bytes, over the {PACK_LIMIT_BYTES:,} limit; "
                "the sdist holds more than servelab's filter expects: report it"
            )
    return read_pack(out)


# --- reading a pack --------------------------------------------------------------------------


def read_pack(path: Path) -> PackInfo:
    """The manifest of the pack at ``path``; UsageError if it is not a servelab pack."""
    path = path.expanduser().absolute()
    if not path.is_file():
        raise UsageError(f"pack {path} does not exist; make one with `servelab engines pack`")
    try:
        with tarfile.open(path) as archive:
            first = archive.next()  # the manifest comes first; looking it up by name reads all
            name = f"{PACK_TOP}/{PACK_MANIFEST}"
            handle = archive.extractfile(first if first and first.name == name else name)
            meta = json.loads(handle.read()) if handle else None
        if not isinstance(meta, dict):
            raise KeyError(PACK_MANIFEST)
        return PackInfo(
            path=path,
            commit=str(meta["commit"]),
            sdist_version=str(meta["sdist"]["version"]),
            sdist_sha256=str(meta["sdist"]["sha256"]),
            file_count=int(meta["file_count"]),
            vocab={str(k): str(v) for k, v in meta["vocab"].items()},
            size_bytes=path.stat().st_size,
            sha256=sha256_file(path),
        )
    except (tarfile.TarError, OSError, KeyError, ValueError, TypeError) as exc:
        raise UsageError(
            f"{path} is not a servelab llama.cpp pack ({_one_line(exc)}); make one with "
            "`servelab engines pack llamacpp --out FILE`"
        ) from exc


def check_pack(path: Path) -> PackInfo:
    """The pack's manifest, refused unless it holds the llama.cpp commit servelab builds."""
    info = read_pack(path)
    if info.commit != LLAMA_CPP_COMMIT:
        raise UsageError(
            f"{path} holds llama.cpp {info.commit}, this servelab builds {LLAMA_CPP_COMMIT}; "
            "make the pack with this servelab version"
        )
    return info


def extract_pack(pack: Path, dest: Path) -> None:
    """Extract the pack's ``llama.cpp/`` into ``dest`` (the ``data`` filter refuses absolute
    paths, links out of ``dest`` and device files)."""
    prefix = f"{PACK_TOP}/"

    def only_top(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo | None:
        name = member.name.removeprefix(prefix)
        if name == member.name or not name:
            return None
        return tarfile.data_filter(member.replace(name=name, deep=False), path)

    with tarfile.open(pack) as archive:
        archive.extractall(dest, filter=only_top)
    if not (dest / "CMakeLists.txt").is_file():
        raise BuildError(f"{pack} has no {PACK_TOP}/CMakeLists.txt; make the pack again")


# --- vocab files -----------------------------------------------------------------------------


def _copy_member(archive_path: Path, member_name: str, dest: Path) -> bool:
    """Copy one member of a tarball to ``dest`` atomically; False if it has no such member."""
    with tarfile.open(archive_path) as archive:
        try:
            handle = archive.extractfile(member_name)
        except KeyError:
            return False
        if handle is None:
            return False
        with atomic_path(dest) as tmp, tmp.open("wb") as out:
            shutil.copyfileobj(handle, out, 1 << 20)
    return True


def extract_vocab(filename: str, dest: Path) -> Path:
    """Put the vocab file ``filename`` at ``dest``: from the cached pack, else from the cached
    sdist, fetching the sdist when neither is cached."""
    pack = default_pack_path()
    if pack.is_file() and _copy_member(pack, f"{PACK_TOP}/models/{filename}", dest):
        return dest
    try:
        sdist = fetch_sdist(Console(stderr=True), progress=True)
    except DownloadError as exc:
        raise EnvironmentProblem(
            f"vocab {filename} is not cached and the llama.cpp sources cannot be fetched ({exc}); "
            "run `servelab engines install llamacpp --source PACK` with a pack made elsewhere"
        ) from exc
    member = f"llama_cpp_python-{SDIST_VERSION}/{SDIST_VENDOR}models/{filename}"
    if not _copy_member(sdist, member, dest):
        raise EnvironmentProblem(f"{sdist} has no {member}; delete it and fetch it again")
    return dest


def _one_line(exc: BaseException) -> str:
    """An exception as one short line (tarfile's open error lists every method it tried)."""
    if isinstance(exc, tarfile.ReadError):
        return "not an xz tar archive"
    return " ".join(str(exc).split())[:200]
