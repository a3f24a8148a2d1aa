"""Finding, reading and parsing workload files into validated ``Workload`` objects.

Owns name resolution (a built-in name, or a path to a .yaml/.yml/.json/.jsonl file), the three
file formats, reading a request trace (``load_trace``; its format is ``trace``'s), and the one
place where YAML, JSON and pydantic errors become a one-line ``WorkloadError`` naming the file
and the field path (``prompts.3.expect.tool``).

Must not: write files, speak HTTP, start processes, or hold state between calls. Its only I/O is
reading the one workload (or trace) file asked for. YAML is read with the strict loader every
user file shares (``servelab.userfiles``): duplicate keys are errors, only true/false are booleans
(``on``/``off``/``yes``/``no`` stay strings) and dates stay strings.
"""

from __future__ import annotations

import json
import os
import types
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from servelab.errors import WorkloadError
from servelab.userfiles import load_yaml
from servelab.workloads.checks import FieldProblem, Loc
from servelab.workloads.schema import Workload
from servelab.workloads.trace import Trace, parse_trace

Format = Literal["yaml", "json", "jsonl"]

_SUFFIXES: dict[str, Format] = {".yaml": "yaml", ".yml": "yaml", ".json": "json", ".jsonl": "jsonl"}
_SUFFIX_LIST = ".yaml, .yml, .json or .jsonl"
_PACKAGE = "servelab.workloads"
_DATA = "data"


def list_builtin() -> list[str]:
    """The names of the built-in workloads, sorted."""
    data = resources.files(_PACKAGE).joinpath(_DATA)
    return sorted(
        entry.name.removesuffix(".yaml") for entry in data.iterdir() if entry.name.endswith(".yaml")
    )


def load_workload(name_or_path: str | os.PathLike[str]) -> Workload:
    """Load a built-in workload by name, or a workload file by path.

    A string ending in a workload suffix or containing a path separator is a path; anything
    else is a built-in name. Raises ``WorkloadError`` with a one-line message on any problem.
    """
    text = os.fspath(name_or_path)
    if isinstance(name_or_path, os.PathLike) or _looks_like_path(text):
        return _load_path(Path(text), source=text)
    builtins = list_builtin()
    if text not in builtins:
        raise WorkloadError(
            f"unknown workload '{text}'; built-ins: {', '.join(builtins)}; "
            f"a path to a {_SUFFIX_LIST} file also works"
        )
    data = resources.files(_PACKAGE).joinpath(_DATA, f"{text}.yaml")
    return parse_workload(data.read_text(encoding="utf-8"), source=f"{text} (built-in)")


def parse_workload(text: str, *, source: str, fmt: Format = "yaml") -> Workload:
    """Parse and validate workload ``text`` in format ``fmt``; ``source`` names it in errors.

    JSONL: the first non-blank line is the header object (every field but ``prompts``), then
    one prompt object per line.
    """
    line_of_prompt: list[int] | None = None
    if fmt == "yaml":
        data = _parse_yaml(text, source)
    elif fmt == "json":
        data = _parse_json(text, source)
    else:
        data, line_of_prompt = _parse_jsonl(text, source)
    if not isinstance(data, dict):
        raise WorkloadError(
            f"workload {source}: the top level must be a mapping with schema_version, name, "
            f"version, description and prompts (got {_type_name(data)})"
        )
    try:
        return Workload.model_validate(data)
    except ValidationError as exc:
        raise WorkloadError(_one_line(source, exc, line_of_prompt)) from exc


def load_trace(path: str | os.PathLike[str]) -> Trace:
    """Read and validate the JSONL trace at ``path`` (``trace.parse_trace``); raises
    ``WorkloadError`` with a one-line message naming the file and line."""
    source = os.fspath(path)
    return parse_trace(_read_text(Path(source), f"trace {source}"), source=source)


def _looks_like_path(text: str) -> bool:
    separators = {"/", os.sep} | ({os.altsep} if os.altsep else set())
    return Path(text).suffix.lower() in _SUFFIXES or any(sep in text for sep in separators)


def _load_path(path: Path, *, source: str) -> Workload:
    fmt = _SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise WorkloadError(
            f"workload {source}: unsupported file type '{path.suffix}'; use {_SUFFIX_LIST}"
        )
    text = _read_text(path, f"workload {source}")
    return parse_workload(text, source=source, fmt=fmt)


def _read_text(path: Path, what: str) -> str:
    """A workload or trace file's text (a byte-order mark tolerated), or one line naming
    ``what`` failed and why."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError as exc:
        raise WorkloadError(f"{what}: file not found; check the path") from exc
    except UnicodeDecodeError as exc:
        raise WorkloadError(f"{what}: not UTF-8 text ({exc.reason})") from exc
    except OSError as exc:
        raise WorkloadError(f"{what}: cannot read the file ({exc.strerror})") from exc


# --- YAML -------------------------------------------------------------------------------------


def _parse_yaml(text: str, source: str) -> Any:
    try:
        return load_yaml(text)  # the one strict loader for every user file
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = exc.problem or exc.context or "invalid YAML"
        raise WorkloadError(f"workload {source}: {where}YAML syntax error: {problem}") from exc
    except yaml.YAMLError as exc:
        raise WorkloadError(f"workload {source}: YAML error: {_flat(str(exc))}") from exc


# --- JSON and JSONL ---------------------------------------------------------------------------


class _DuplicateKeyError(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result: dict[str, object] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKeyError(f"duplicate key '{key}'")
        result[key] = value
    return result


def _json_value(text: str, source: str, line: int | None = None) -> Any:
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as exc:
        where = f"line {line if line is not None else exc.lineno}, column {exc.colno}"
        raise WorkloadError(f"workload {source}: {where}: JSON syntax error: {exc.msg}") from exc
    except _DuplicateKeyError as exc:
        where = f"line {line}: " if line is not None else ""
        raise WorkloadError(f"workload {source}: {where}{exc}") from exc


def _parse_json(text: str, source: str) -> Any:
    return _json_value(text, source)


def _parse_jsonl(text: str, source: str) -> tuple[Any, list[int]]:
    header: dict[str, object] | None = None
    prompts: list[Any] = []
    lines: list[int] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        value = _json_value(line, source, number)
        if not isinstance(value, dict):
            raise WorkloadError(
                f"workload {source}: line {number}: expected one JSON object "
                f"per line (got {_type_name(value)})"
            )
        if header is None:
            if "prompts" in value:
                raise WorkloadError(
                    f"workload {source}: line {number}: the header line must "
                    f"not hold prompts; put one prompt per line after it"
                )
            header = value
            continue
        prompts.append(value)
        lines.append(number)
    if header is None:
        raise WorkloadError(f"workload {source}: empty file; the first line must be the header")
    return {**header, "prompts": prompts}, lines


# --- pydantic errors as one line --------------------------------------------------------------


def _one_line(source: str, exc: ValidationError, line_of_prompt: list[int] | None) -> str:
    errors = exc.errors(include_url=False)
    loc, message = _describe(errors[0])
    where = ""
    index = loc[1] if len(loc) >= 2 and loc[0] == "prompts" else None
    if line_of_prompt and isinstance(index, int) and index < len(line_of_prompt):
        where = f"line {line_of_prompt[index]}: "
    path = ".".join(str(part) for part in loc) or "(top level)"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return _flat(f"workload {source}: {where}{path}: {message}{more}")


def _describe(error: ErrorDetails) -> tuple[Loc, str]:
    loc: Loc = tuple(error["loc"])
    kind = error["type"]
    cause = error.get("ctx", {}).get("error")
    if isinstance(cause, FieldProblem):
        return (*loc, *cause.loc), cause.message
    if kind == "value_error":
        return loc, str(cause) if cause is not None else error["msg"]
    if kind == "extra_forbidden":
        allowed = ", ".join(_allowed_keys(loc)) or "none"
        return loc, f"unknown key '{loc[-1]}'; remove it or fix its spelling (allowed: {allowed})"
    if kind == "missing":
        return loc, "required key is missing; add it"
    return loc, f"{error['msg']} (got {_short_repr(error['input'])})"


def _allowed_keys(loc: Loc) -> list[str]:
    """The keys the model holding the last part of ``loc`` accepts, walking from Workload."""
    current: Any = Workload
    for part in loc[:-1]:
        current = _strip_optional(current)
        if get_origin(current) in (list, dict):
            current = get_args(current)[-1]
        elif (
            isinstance(current, type)
            and issubclass(current, BaseModel)
            and part in current.model_fields
        ):
            current = current.model_fields[str(part)].annotation
        else:
            return []
    current = _strip_optional(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _strip_optional(annotation: Any) -> Any:
    if get_origin(annotation) in (Union, types.UnionType):
        members = [arg for arg in get_args(annotation) if arg is not type(None)]
        return members[0] if len(members) == 1 else annotation
    return annotation


def _short_repr(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _type_name(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", type(None): "nothing"}.get(
        type(value), type(value).__name__
    )


def _flat(text: str) -> str:
    return " ".join(text.split())
