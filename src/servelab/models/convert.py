"""HF-format copies of registry models, for engines that load HF directories (vLLM).

Owns ``cache_dir()/models/<name>/hf/`` (safetensors weights, config, tokenizer and a
``servelab-convert.json`` that names the source GGUF, its sha256 and quantisation, and how it
was converted), the ``hf-convert.log`` beside it, and describing any HF directory
(``hf_model_info``: a content hash over its files, its dtype and chat template).
The conversion itself runs ``hf_convert_script.py`` with the Python of a vLLM venv, where
transformers and torch live; servelab must not import either. Must not find that Python itself
(``engines`` does; the caller passes a finder) or leave a half-written directory where a reader
looks: the copy is written to a hidden directory beside ``hf/`` and renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import tempfile
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.status import Status

from servelab.errors import BuildError, UsageError
from servelab.models.gguf_info import read_gguf_info
from servelab.models.pull import file_sha256, models_dir, registry_model, resolve_model
from servelab.models.registry import MODELS
from servelab.paths import file_lock, move_into_place, remove_stale, write_json_atomic

SCHEMA_VERSION = 1
TARGETS = ("hf",)
HF_DIRNAME = "hf"
CONVERT_FILE = "servelab-convert.json"
SCRIPT = Path(__file__).with_name("hf_convert_script.py")
_RESULT_MARK = "servelab-convert:"
_OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "PYTHONUNBUFFERED": "1",
}


@dataclass(frozen=True, slots=True)
class HfModelInfo:
    """An HF model directory as an engine loads it; ``sha256`` covers every file's name, size
    and sha256 (``servelab-convert.json`` aside), so two copies with equal bytes hash equal."""

    path: Path
    sha256: str
    source_gguf_sha256: str | None
    source_quant: str | None
    dtype: str | None
    chat_template_sha256: str | None


# --- describing a directory ------------------------------------------------------------------


def _model_files(folder: Path) -> list[Path]:
    files = (p for p in folder.rglob("*") if p.is_file())
    return sorted(
        (p for p in files if p.name != CONVERT_FILE and not p.name.startswith(".")),
        key=lambda p: p.relative_to(folder).as_posix(),
    )


def manifest_sha256(folder: Path) -> str:
    """sha256 over ``name<TAB>size<TAB>sha256`` lines of the directory's files, sorted by name."""
    digest = hashlib.sha256()
    for path in _model_files(folder):
        rel = path.relative_to(folder).as_posix()
        digest.update(f"{rel}\t{path.stat().st_size}\t{file_sha256(path)}\n".encode())
    return digest.hexdigest()


def read_json_object(path: Path) -> dict[str, object]:
    """The JSON object in ``path``; empty when the file is missing, unreadable or not an
    object (an HF directory's optional files)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _chat_template_sha256(folder: Path) -> str | None:
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return hashlib.sha256(jinja.read_bytes()).hexdigest()
    template = read_json_object(folder / "tokenizer_config.json").get("chat_template")
    if template is None:
        return None
    text = template if isinstance(template, str) else json.dumps(template, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _optional_str(value: object) -> str | None:
    return str(value) if value is not None else None


def hf_model_info(folder: Path) -> HfModelInfo:
    """Describe an HF model directory (one servelab converted, or any other)."""
    folder = Path(folder).expanduser().absolute()
    config = read_json_object(folder / "config.json")
    convert = read_json_object(folder / CONVERT_FILE)
    return HfModelInfo(
        path=folder,
        sha256=manifest_sha256(folder),
        source_gguf_sha256=_optional_str(convert.get("source_gguf_sha256")),
        source_quant=_optional_str(convert.get("source_quant")),
        dtype=_optional_str(config.get("dtype", config.get("torch_dtype"))),
        chat_template_sha256=_chat_template_sha256(folder),
    )


# --- finding a directory ---------------------------------------------------------------------


def hf_dir_for(name: str) -> Path:
    return models_dir() / name / HF_DIRNAME


def converted_dir(name: str) -> Path | None:
    """The complete HF copy of registry model ``name``, or None."""
    folder = hf_dir_for(name)
    convert = read_json_object(folder / CONVERT_FILE)
    complete = (folder / "config.json").is_file()
    current = convert.get("source_gguf_sha256") == registry_model(name).sha256
    return folder if complete and current else None


def hf_model_dir(name_or_path: str) -> Path:
    """An HF model directory: a path to a directory with config.json, or a registry model's
    converted copy."""
    if name_or_path in MODELS:
        found = converted_dir(name_or_path)
        if found is None:
            raise UsageError(
                f"model {name_or_path} has no HF-format copy; run "
                f"`servelab models convert {name_or_path} --to hf`"
            )
        return found
    path = Path(name_or_path).expanduser().absolute()
    if (path / "config.json").is_file():
        return path
    if path.is_dir():
        raise UsageError(f"{path} is not an HF model directory: it has no config.json")
    raise UsageError(
        f"{name_or_path!r} is neither a registry model ({', '.join(MODELS)}) nor an HF model "
        "directory (a directory with config.json)"
    )


# --- converting ------------------------------------------------------------------------------


def _log_tail(log_path: Path, lines: int = 8) -> str:
    with log_path.open(encoding="utf-8", errors="replace") as handle:
        tail = deque((s for line in handle if (s := line.rstrip())), maxlen=lines)
    return "\n".join(f"  | {line}" for line in tail)


def _run_script(
    argv: list[str], log_path: Path, on_line: Callable[[str], None]
) -> dict[str, object]:
    """Run the conversion script, logging its output; its result line as a dict."""
    result: dict[str, object] = {}
    with log_path.open("w", encoding="utf-8") as log:
        log.write(f"$ {shlex.join(argv)}\n")
        log.flush()
        env = {**os.environ, **_OFFLINE_ENV}
        pipe = subprocess.PIPE
        with subprocess.Popen(
            argv, stdout=pipe, stderr=subprocess.STDOUT, text=True, errors="replace", env=env
        ) as proc:
            assert proc.stdout is not None
            try:
                for line in proc.stdout:
                    log.write(line)
                    if line.startswith(_RESULT_MARK):
                        result = json.loads(line.removeprefix(_RESULT_MARK))
                    elif line.strip():
                        on_line(line.strip())
            except BaseException:
                proc.kill()
                raise
        log.write(f"# exited with {proc.returncode}\n")
    if proc.returncode != 0 or not result:
        detail = f"exit code {proc.returncode}" if proc.returncode else "no result line"
        raise BuildError(
            f"converting to HF failed ({detail}); log: {log_path}\n{_log_tail(log_path)}"
        )
    return result


def _status(console: Console, enabled: bool, text: str) -> AbstractContextManager[Status | None]:
    return console.status(text) if enabled else nullcontext(None)


def _convert(name: str, python: Path, console: Console, progress: bool) -> None:
    model = resolve_model(name)
    folder, dest = model.path.parent, hf_dir_for(name)
    remove_stale(folder, (".hf", ".old"))
    stage = Path(tempfile.mkdtemp(prefix=f".hf-{os.getpid()}-", dir=folder))
    argv = [str(python), "-I", str(SCRIPT), str(model.path), str(stage)]  # -I: no script dir
    try:
        with _status(console, progress, f"converting {name} to HF with transformers") as status:

            def on_line(line: str) -> None:
                if status is not None:
                    status.update(f"converting {name}: {line[:90]}")

            result = _run_script(argv, folder / "hf-convert.log", on_line)
        for path in [stage, *stage.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)  # save_pretrained makes some 0600
        meta = {
            "schema_version": SCHEMA_VERSION,
            "name": name,
            "source_gguf": str(model.path),
            "source_gguf_sha256": model.sha256,
            "source_quant": read_gguf_info(model.path).quantisation,
            "python": str(python),
            "converted_at": datetime.now(UTC).isoformat(timespec="seconds"),
            **result,
        }
        write_json_atomic(stage / CONVERT_FILE, meta)
        move_into_place(stage, dest)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def convert_model(
    name: str,
    find_python: Callable[[], Path],
    *,
    to: str = "hf",
    force: bool = False,
    progress: bool = True,
) -> HfModelInfo:
    """Convert pulled registry model ``name`` to an HF directory with the Python that
    ``find_python`` returns (a vLLM venv's); idempotent, ``force`` converts again."""
    if to not in TARGETS:
        raise UsageError(f"cannot convert to {to!r}; the only target is `--to hf`")
    resolve_model(registry_model(name).name)  # unknown or not pulled: the error says what to do
    existing = converted_dir(name)
    if existing is not None and not force:
        return hf_model_info(existing)
    python = find_python()
    with file_lock(models_dir() / f".{name}.convert.lock"):
        existing = converted_dir(name)
        if existing is None or force:
            _convert(name, python, Console(stderr=True), progress)
    return hf_model_info(hf_dir_for(name))
