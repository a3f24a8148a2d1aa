"""What each imported prompt expected: the workload an import derives from its rows.

Owns ``RowExpectations`` (fed every reader's partial row: per prompt id the expected tool, the
prompt text and the language its rows name, one small entry per prompt; rows of one prompt that
disagree are refused with one line naming the prompt and both rows), ``derive_workload`` (one
``PromptItem`` per prompt whose expectation is known, the tools of ``--workload`` or tools known
by name only, the language from a row column, ``--lang``, the workload's matching prompt or the
preset, in that order) and ``write_run_workload``, which stores the derived workload in the run
directory (``inputs/workload.json``) so ``servelab report`` scores the replies against it as it
does a native run's. Writes that one file and reads nothing.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from servelab.errors import StoreError, UsageError
from servelab.importers.common import EXPECTATION_TARGETS, Partial
from servelab.store.jsonl import write_text_atomic
from servelab.store.rundir import RunDir
from servelab.workloads import PromptItem, Workload, load_workload, parse_workload

# as servelab.workloads.schema checks them (checked here first, to name the flag or column)
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]*")
_TOOL = re.compile(r"[A-Za-z0-9_-]{1,64}")
_LANG = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*")
_LABELS = {"expected_tool": "expected tool", "prompt_text": "text", "lang": "language"}
_SCHEMA_VERSION = 1  # prompts and tools only: version 1 holds it, so the hash stays put
_NAMED_ONLY = "known by name only: no --workload gave its JSON Schema"

Said = dict[str, tuple[str | None, str]]
"""What a prompt's rows say, by target: (value, where the first such row is)."""


def check_lang(lang: str | None, flag: str) -> None:
    """A language tag a workload accepts (``zh-TW``), or one line naming ``flag``."""
    if lang is not None and not _LANG.fullmatch(lang):
        raise UsageError(f"{flag} {lang!r}: not a language tag; use one like zh-TW or en")


def _where(partial: Mapping[str, object]) -> str:
    source = partial.get("source")
    ref = source if isinstance(source, dict) else {}
    name = Path(str(ref.get("file", "?"))).name
    if "line" in ref:
        return f"{name} line {ref['line']}"
    return f"{name} row {ref['index']}" if "index" in ref else name


def _shown(target: str, value: str | None) -> str:
    if value is None:
        return "none (no tool)" if target == "expected_tool" else "none"
    return repr(value)


@dataclass
class RowExpectations:
    """Per prompt id what the rows said (first-seen order), and the tool names replies called."""

    prompts: dict[str, Said] = field(default_factory=dict)
    called: dict[str, None] = field(default_factory=dict)

    def add(self, partial: Partial) -> None:
        """Take one reader's row; ``UsageError`` when it contradicts an earlier row."""
        self._calls(partial.get("tool_calls"))
        said = {t: partial[t] for t in EXPECTATION_TARGETS if t in partial}
        pid = partial.get("prompt_id")
        if pid is None or pid == "":
            if said:
                raise UsageError(
                    f"{_where(partial)}: the row names its {_LABELS[next(iter(said))]} but no "
                    "prompt id; an expectation belongs to a prompt: map the prompt id column "
                    "(--map COL=prompt_id)"
                )
            return
        prompt = self.prompts.setdefault(str(pid), {})
        for target, value in said.items():
            text = None if value is None else str(value)
            first = prompt.get(target)
            if first is None:
                prompt[target] = (text, _where(partial))
            elif first[0] != text:
                raise UsageError(
                    f"prompt {pid!r}: its rows disagree on the {_LABELS[target]} "
                    f"({_shown(target, first[0])} at {first[1]}, {_shown(target, text)} at "
                    f"{_where(partial)}); a prompt expects one thing in every trial and arm: fix "
                    "the source, or map a column that tells the prompts apart to prompt_id"
                )

    def _calls(self, calls: object) -> None:
        for call in calls if isinstance(calls, list) else ():
            name = call.get("name") if isinstance(call, dict) else None
            if isinstance(name, str) and _TOOL.fullmatch(name):
                self.called.setdefault(name, None)


@dataclass(frozen=True, slots=True)
class ExpectationSources:
    """Where expectations come from besides the rows: the workload given (``--workload`` or
    the preset's), the language given (``--lang``) and the preset's language."""

    base: Workload | None = None
    lang: str | None = None
    preset_lang: str | None = None
    preset: str | None = None
    columns: Mapping[str, str] = field(default_factory=dict)  # target -> source column

    @property
    def asked(self) -> bool:
        """Whether anything asks for expectations (else an import derives no workload)."""
        mapped = any(t in self.columns for t in EXPECTATION_TARGETS)
        return mapped or self.base is not None or self.lang is not None


@dataclass(frozen=True, slots=True)
class Derived:
    """The derived workload, and what the note says about where its parts came from."""

    workload: Workload
    said: tuple[str, ...]

    def note(self, stored: Workload, path: str) -> str:
        """The ``expectations`` note, naming the stored file (``path``, relative to the run
        directory) and its content hash."""
        return "; ".join((*self.said, f"stored as {path} ({stored.content_hash})"))


@dataclass
class _Build:
    """The prompts being derived, and the counts the note reports."""

    items: list[dict[str, object]] = field(default_factory=list)
    kinds: Counter[str] = field(default_factory=Counter)
    expected: list[tuple[str, str]] = field(default_factory=list)  # (prompt id, tool)
    langs: Counter[tuple[str, str]] = field(default_factory=Counter)  # (lang, where from)
    from_base: int = 0  # prompts whose expectation (or its argument checks) the workload gave
    unknown: list[str] = field(default_factory=list)  # prompts with no known expectation


def _user_text(item: PromptItem) -> str | None:
    users = [m.content for m in item.messages or () if m.role == "user"]
    return users[0] if len(users) == 1 else None


def _match(pid: str, text: str | None, base: Workload | None) -> PromptItem | None:
    """The workload's prompt for ``pid``: the one with that id (unless both texts are known
    and differ), else the one whose only user message is ``text``."""
    if base is None:
        return None
    for item in base.prompts:
        if item.id == pid and (text is None or _user_text(item) in (None, text)):
            return item
    return next((i for i in base.prompts if text is not None and _user_text(i) == text), None)


def _expect(pid: str, said: Said, match: PromptItem | None) -> dict[str, object] | None:
    """The prompt's expectation as workload data: the rows' expected tool (with the matching
    workload prompt's argument checks when it expects the same tool), else the workload's."""
    if "expected_tool" not in said:
        return match.expect.model_dump(mode="json", exclude_defaults=True) if match else None
    tool = said["expected_tool"][0]
    if tool is None:
        return {"kind": "no_tool"}
    if not _TOOL.fullmatch(tool):
        raise UsageError(
            f"prompt {pid!r}: expected tool {tool!r} is not a tool name (letters, digits, _ "
            "and -, at most 64); map the column that names the tool"
        )
    expect: dict[str, object] = {"kind": "tool", "tool": tool}
    if match and match.expect.tool == tool and match.expect.args:
        expect["args"] = {k: v.model_dump(mode="json", exclude_defaults=True)
                          for k, v in match.expect.args.items()}  # fmt: skip
    return expect


def _lang(said: Said, src: ExpectationSources, match: PromptItem | None) -> tuple[str | None, str]:
    """A row column, else ``--lang``, else the matching workload prompt's, else the preset's;
    with where it came from."""
    if "lang" in said and said["lang"][0] is not None:
        return said["lang"][0], f"column {src.columns.get('lang')}"
    if src.lang:
        return src.lang, "--lang"
    if match is not None and match.lang:
        return match.lang, f"workload {src.base.name if src.base else ''}"
    return src.preset_lang, f"preset {src.preset}"


def _item(pid: str, said: Said, src: ExpectationSources, build: _Build) -> None:
    text = said.get("prompt_text", (None, ""))[0]
    match = _match(pid, text, src.base)
    expect = _expect(pid, said, match)
    if expect is None:
        build.unknown.append(pid)
        return
    if not _ID.fullmatch(pid):
        raise UsageError(
            f"prompt id {pid!r} cannot name a workload prompt (letters, digits, . _ : -, "
            "starting with a letter or digit); map another prompt id column"
        )
    lang, lang_from = _lang(said, src, match)
    check_lang(lang, f"prompt {pid!r}: language")
    item: dict[str, object] = {"id": pid, "expect": expect}
    if text is not None:
        item["messages"] = [{"role": "user", "content": text}]
    elif match is not None and match.messages is not None:
        item["messages"] = [m.model_dump(mode="json") for m in match.messages]
    else:  # the source kept no text: the id stands in for it, visibly
        item["messages"] = [{"role": "user", "content": f"(prompt {pid}: text not in the source)"}]
    if lang is not None:
        item["lang"] = lang
    build.items.append(item)
    build.kinds[str(expect["kind"])] += 1
    if expect["kind"] == "tool":
        build.expected.append((pid, str(expect["tool"])))
    if lang is not None:
        build.langs[lang, lang_from] += 1
    build.from_base += match is not None and ("args" in expect or "expected_tool" not in said)


def _tools(build: _Build, src: ExpectationSources, called: Mapping[str, None]) -> list[object]:
    """The workload's tools (every expected tool must be one), else each expected or called
    tool known by name only (any JSON object of arguments is valid)."""
    if src.base is not None:
        known = {t.name for t in src.base.tools}
        for pid, tool in build.expected:
            if tool not in known:
                raise UsageError(
                    f"prompt {pid!r} expects tool {tool!r}, which workload {src.base.name!r} "
                    f"does not define (tools: {', '.join(sorted(known)) or 'none'}); give a "
                    "--workload whose tools include it"
                )
        return [t.model_dump(mode="json") for t in src.base.tools]
    names = dict.fromkeys([*(tool for _, tool in build.expected), *called])
    return [{"type": "function", "function": {"name": n, "description": _NAMED_ONLY,
             "parameters": {"type": "object"}}} for n in names]  # fmt: skip


def derive_workload(rows: RowExpectations, src: ExpectationSources) -> Derived | None:
    """The import's workload, or None when nothing asked for one (no expectation column
    mapped, no ``--workload``, no ``--lang``). One line when nothing could be derived."""
    if not src.asked:
        return None
    build = _Build()
    for pid, said in rows.prompts.items():
        _item(pid, said, src, build)
    if not build.items:
        raise UsageError(_nothing(rows, src))
    tools = _tools(build, src, rows.called)
    base = src.base.name if src.base is not None else None
    data = {
        "schema_version": _SCHEMA_VERSION,
        "name": f"import-{base}" if base else "import",
        "version": "1",
        "description": "The prompts of an import, with the expectations its rows name"
        + (f" and the tools of workload {base}" if base else " (tools known by name only)"),
        "tools": tools,
        "prompts": build.items,
    }
    workload = parse_workload(json.dumps(data), source="derived from the imported rows", fmt="json")
    return Derived(workload, _note(build, src, len(tools)))


def _nothing(rows: RowExpectations, src: ExpectationSources) -> str:
    ids = ", ".join(list(rows.prompts)[:5]) or "none"
    what = "--workload" if src.base is not None else "--lang"
    if any(t in src.columns for t in EXPECTATION_TARGETS):
        what = "the mapped expectation columns"
    return (
        f"{what}: no imported prompt has a known expectation (prompt ids: {ids}); map the "
        "expected tool (--map COL=expected_tool, empty or null = no tool) or import rows whose "
        "prompt ids (or texts) are the workload's"
    )


def _note(build: _Build, src: ExpectationSources, n_tools: int) -> tuple[str, ...]:
    column = src.columns.get("expected_tool")
    where = f"column {column} (empty or null: no tool)" if column else "the workload's prompts"
    kinds = ", ".join(f"{n} {k}" for k, n in sorted(build.kinds.items()))
    parts = [f"expected outcomes from {where} for {len(build.items)} prompts ({kinds})"]
    if src.base is not None:
        parts.append(f"tool schemas from workload {src.base.name} ({n_tools} tools)")
        if build.from_base:
            parts.append(f"{build.from_base} prompts' expectations or argument checks from it")
    else:
        parts.append(
            f"{n_tools} tools known by name only (no --workload): any JSON object of "
            "arguments counts as valid and a called tool is never unknown"
        )
    langs = ", ".join(f"{lang} from {by} ({n})" for (lang, by), n in build.langs.items())
    parts.append(f"language {langs}" if langs else "no language given")
    if build.unknown:
        parts.append(f"{len(build.unknown)} prompts without one are scored without expectations")
    return tuple(parts)


def write_run_workload(run: RunDir, workload: Workload) -> Workload:
    """Store ``workload`` as the run's ``inputs/workload.json`` (``RunDir.workload``), a
    workload file, and return it as read back: the manifest records the hash of what a report
    will load."""
    path = run.workload
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create {path.parent}: {exc.strerror}") from exc
    data = workload.model_dump(mode="json", exclude_defaults=True)
    write_text_atomic(path, json.dumps(data, ensure_ascii=False, indent=2) + "\n")
    return load_workload(path)
