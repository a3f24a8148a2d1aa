"""Where servelab keeps what it downloads and builds, and how it writes there safely.

Owns the one rule for the cache directory, plus the write primitives every cache writer
shares: an atomic JSON write, an exclusive lock file, and the swap of a finished directory into
place (with the clean-up of ones an interrupted process left). Must not know what is cached
(engines, models) and must not create anything on import.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil

CACHE_DIR_ENV = "SERVELAB_CACHE_DIR"


def cache_dir() -> Path:
    """The cache root: ``$SERVELAB_CACHE_DIR``, else ``$XDG_CACHE_HOME/servelab``, else
    ``~/.cache/servelab``. Empty variables count as unset (as the XDG spec says)."""
    explicit = os.environ.get(CACHE_DIR_ENV, "")
    if explicit:
        return Path(explicit).expanduser().absolute()
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    if xdg:
        return Path(xdg).expanduser().absolute() / "servelab"
    return Path.home() / ".cache" / "servelab"


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary file beside ``path`` to write; when the block ends without an error it
    becomes ``path`` (mode 0644) in one rename, so readers see the old file or the new one,
    never half of one. On an error the temporary file is removed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; these files are meant to be read
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as JSON so readers see the old file or the new one, never half of one."""
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write("\n")


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` (created if needed) for the block; a second
    process asking for the same lock waits, so two pulls or builds never race on one target."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def move_into_place(stage: Path, dest: Path) -> None:
    """Rename a finished ``stage`` directory to ``dest``: an older ``dest`` is renamed aside
    first (``.old-<pid>-<name>``) and removed once the new one is in place, so a reader sees
    the old directory or the new one, never half of one."""
    old = dest.with_name(f".old-{os.getpid()}-{dest.name}")
    if dest.exists():
        dest.rename(old)
    try:
        stage.rename(dest)
    except OSError:
        if old.exists():
            old.rename(dest)
        raise
    shutil.rmtree(old, ignore_errors=True)


def remove_stale(root: Path, prefixes: tuple[str, ...] = (".build", ".old")) -> None:
    """Remove the ``<prefix>-<pid>-*`` directories under ``root`` left by processes that no
    longer run (an interrupted build or conversion)."""
    for path in root.glob(".*-*"):
        parts = path.name.split("-")
        ours = path.is_dir() and parts[0] in prefixes and parts[1].isdigit()
        if ours and not psutil.pid_exists(int(parts[1])):
            shutil.rmtree(path, ignore_errors=True)
