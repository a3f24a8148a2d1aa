"""Reading the files a user hands servelab: UTF-8 text, and YAML read one strict way.

Owns the one YAML loader every hand-written file goes through (experiment specs, roles
registries, workloads, architecture files): duplicate keys are errors, only ``true``/``false``
are booleans (``on``/``off``/``yes``/``no`` stay strings, so ``flash_attn: on`` means "on") and
dates stay strings, so a file means what it looks like it means. Also owns reading such a file
as text, where a missing, unreadable or non-UTF-8 file becomes one ``UsageError`` line naming it.

Must not: write files, or know what any file means (the callers validate the content).
"""

from __future__ import annotations

import re
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import yaml

from servelab.errors import UsageError


class StrictYamlLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2-like scalars and duplicate keys refused."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, Hashable) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key '{key}'", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_BOOL_TAG = "tag:yaml.org,2002:bool"
_DROPPED_TAGS = {_BOOL_TAG, "tag:yaml.org,2002:timestamp"}
StrictYamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in _DROPPED_TAGS]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
StrictYamlLoader.add_implicit_resolver(
    _BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def load_yaml(text: str) -> Any:
    """Parse YAML text with ``StrictYamlLoader`` (a SafeLoader: no arbitrary objects).

    Raises ``yaml.YAMLError``; ``yaml_problem`` turns one into a short description."""
    return yaml.load(text, Loader=StrictYamlLoader)  # a SafeLoader subclass


def yaml_problem(exc: yaml.YAMLError) -> str:
    """``line L, column C: problem`` for a YAML error (the position when it has one)."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        return where + (exc.problem or exc.context or "invalid YAML")
    return " ".join(str(exc).split())


def read_text(path: Path, what: str) -> str:
    """The text of the user's file ``path`` (UTF-8, a byte-order mark tolerated).

    ``what`` names the file's role in messages (``spec file``, ``roles registry``)."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError as exc:
        raise UsageError(f"{what} {path} does not exist; check the path") from exc
    except IsADirectoryError as exc:
        raise UsageError(f"{what} {path} is a directory; give the file itself") from exc
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"{what} {path} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset "
            f"{exc.start}); save it as UTF-8"
        ) from exc
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc


def read_yaml(path: Path, what: str) -> Any:
    """The parsed content of the user's YAML file ``path``; any problem is one ``UsageError``
    line naming the file (and the line, for a syntax error or a duplicate key)."""
    text = read_text(path, what)
    try:
        return load_yaml(text)
    except yaml.YAMLError as exc:
        raise UsageError(
            f"{what} {path} is not valid YAML ({yaml_problem(exc)}); fix the file"
        ) from exc
