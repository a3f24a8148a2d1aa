"""The workload schema: prompt sets as validated, immutable data with a content hash.

Owns the pydantic models of a workload file (``Workload``, ``PromptItem``, ``Tool``,
``Expectation``, ``ArgExpectation``, ``Message``, and from schema_version 2 the multi-turn
``Session`` with its ``Turn``s and scripted ``ToolResult``s), the rules between them (the
helpers that read several models live in ``checks``), the canonical JSON form and its
``sha256:`` content hash, the named alternative system prompts (``systems``: the variants an
arm's ``system_prompt`` setting picks, and the label each run records for its choice), and the
views a client needs: the chat messages and the OpenAI tool dicts offered with one prompt or
session. Building a session's next request from the model's
replies is ``conversation``'s.

Must not: read files (that is ``loader``), speak HTTP, score replies (that is ``scoring/``), or
import anything that does I/O. Cross-field problems are raised as ``FieldProblem`` so the loader
can name the exact field path (``prompts.3.expect.tool``) in its one-line message.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator, model_validator

from servelab.workloads.checks import (
    FieldProblem,
    Loc,
    check_expectation,
    check_object_schema,
    check_offered,
)

SCHEMA_VERSION = 2
"""The newest workload ``schema_version`` this servelab reads (it reads every version in
``SCHEMA_VERSIONS``): 2 adds multi-turn ``sessions``."""
SCHEMA_VERSIONS = (1, 2)

_CONFIG = ConfigDict(extra="forbid", frozen=True, strict=True)
_NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]*$"
_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"
_TOOL_NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
_LANG_PATTERN = r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$"
_VERSION_PATTERN = r"^[0-9]+(\.[0-9]+)*$"
SYSTEM_VARIANT_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"
DEFAULT_SYSTEM = "default"
"""The variant name that means the workload's own ``system`` (reserved: not a ``systems`` key)."""


class Message(BaseModel):
    """One chat message: a role and its text."""

    model_config = _CONFIG

    role: Literal["system", "user", "assistant", "tool"]
    content: str


class FunctionDef(BaseModel):
    """The ``function`` part of an OpenAI tool: a name, a description, a JSON Schema object."""

    model_config = _CONFIG

    name: str = Field(pattern=_TOOL_NAME_PATTERN)
    description: str
    parameters: dict[str, JsonValue]

    @model_validator(mode="after")
    def _parameters_are_an_object_schema(self) -> FunctionDef:
        check_object_schema(self.parameters, ("parameters",))
        return self

    @property
    def properties(self) -> dict[str, dict[str, JsonValue]]:
        """The parameter schemas by name (empty when the tool takes no arguments)."""
        props = self.parameters.get("properties", {})
        if not isinstance(props, dict):
            return {}
        return {name: prop for name, prop in props.items() if isinstance(prop, dict)}


class Tool(BaseModel):
    """One OpenAI-format tool: ``{type: function, function: {name, description, parameters}}``."""

    model_config = _CONFIG

    type: Literal["function"]
    function: FunctionDef

    @property
    def name(self) -> str:
        """The function's name."""
        return self.function.name


class ArgExpectation(BaseModel):
    """What one argument of an expected tool call should be; every given constraint must hold.

    An empty expectation only requires the argument to be present. ``equals: null`` is the
    same as leaving ``equals`` out (no constraint): a null argument value cannot be required.
    """

    model_config = _CONFIG

    equals: JsonValue = None
    min: float | None = None
    max: float | None = None
    sign: Literal["positive", "negative"] | None = None  # strictly: 0 is neither
    one_of: list[JsonValue] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _bounds_are_ordered(self) -> ArgExpectation:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise FieldProblem(("min",), f"min {self.min:g} is greater than max {self.max:g}")
        return self


class Expectation(BaseModel):
    """The expected outcome of one prompt: no tool call, a specific tool call, or plain text."""

    model_config = _CONFIG

    kind: Literal["no_tool", "tool", "text"]
    tool: str | None = None
    args: dict[str, ArgExpectation] | None = None

    @model_validator(mode="after")
    def _tool_iff_kind_tool(self) -> Expectation:
        if self.kind == "tool" and self.tool is None:
            raise FieldProblem(("tool",), "kind is 'tool' but no tool is named; add tool: <name>")
        if self.kind != "tool" and self.tool is not None:
            raise FieldProblem(
                ("tool",),
                f"tool is only allowed with kind 'tool' (kind is '{self.kind}'); "
                "remove it or set kind: tool",
            )
        if self.kind != "tool" and self.args is not None:
            raise FieldProblem(
                ("args",),
                f"args are only allowed with kind 'tool' (kind is '{self.kind}'); "
                "remove them or set kind: tool",
            )
        return self


class PromptItem(BaseModel):
    """One prompt: chat ``messages`` or a raw completion ``prompt``, and its expected outcome."""

    model_config = _CONFIG

    id: str = Field(pattern=_ID_PATTERN)
    messages: list[Message] | None = Field(default=None, min_length=1)
    prompt: str | None = None
    tools: list[str] | None = None
    lang: str | None = Field(default=None, pattern=_LANG_PATTERN)
    expect: Expectation
    max_tokens: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _exactly_one_input(self) -> PromptItem:
        if self.messages is not None and self.prompt is not None:
            raise FieldProblem(
                (),
                "has both messages and prompt; keep one (messages for chat models, "
                "prompt for raw completion on base models)",
            )
        if self.messages is None and self.prompt is None:
            raise FieldProblem((), "has neither messages nor prompt; add one")
        for index, message in enumerate(self.messages or []):
            if message.role == "system" and index > 0:
                raise FieldProblem(
                    ("messages", index, "role"), "a system message may only come first"
                )
        if self.prompt is not None:
            self._check_raw_prompt()
        return self

    def _check_raw_prompt(self) -> None:
        # A raw completion request carries no tools, so it can neither offer nor expect one.
        if self.tools:
            raise FieldProblem(("tools",), "a raw prompt cannot be offered tools; use messages")
        if self.expect.kind == "tool":
            raise FieldProblem(
                ("expect", "kind"), "a raw prompt cannot expect a tool call; use messages"
            )

    @property
    def is_chat(self) -> bool:
        """True for a chat prompt (``messages``), False for a raw completion ``prompt``."""
        return self.messages is not None


class ToolResult(BaseModel):
    """A scripted tool result: what tool ``tool`` returns when the conversation reaches it.

    ``content`` is sent back as the ``tool`` message's text (a mapping or list as compact JSON).
    ``arguments`` is the call servelab writes into the model's last reply when the model did
    not call ``tool`` itself, so every arm continues the same conversation.
    """

    model_config = _CONFIG

    tool: str = Field(pattern=_TOOL_NAME_PATTERN)
    content: str | dict[str, JsonValue] | list[JsonValue]
    arguments: dict[str, JsonValue] = {}

    @property
    def text(self) -> str:
        """``content`` as the tool message's text."""
        if isinstance(self.content, str):
            return self.content
        return json.dumps(self.content, ensure_ascii=False, separators=(", ", ": "))


class Turn(BaseModel):
    """One request of a session: a user message, or the scripted results of tool calls.

    ``think_s`` is the pause after the previous turn's reply before this turn is sent (the
    user's thinking, or the tool's latency): seconds, or ``[low, high]`` drawn uniformly from
    the run's seed. The first turn has none: the load schedules a session's start.
    """

    model_config = _CONFIG

    user: str | None = None
    tool_results: list[ToolResult] | None = Field(default=None, min_length=1)
    think_s: float | list[float] = 0.0
    expect: Expectation | None = None
    max_tokens: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _one_input_and_a_valid_pause(self) -> Turn:
        if (self.user is None) == (self.tool_results is None):
            raise FieldProblem(
                (), "needs exactly one of user (a message) or tool_results (scripted results)"
            )
        pair = isinstance(self.think_s, list)
        bounds = self.think_s if isinstance(self.think_s, list) else [self.think_s]
        if (pair and len(bounds) != 2) or any(b < 0 for b in bounds) or bounds != sorted(bounds):
            raise FieldProblem(
                ("think_s",), "must be seconds >= 0, or [low, high] with 0 <= low <= high"
            )
        return self


class Session(BaseModel):
    """A multi-turn conversation: turns sent one after another, each with the model's own
    earlier replies fed back. ``system`` replaces the workload's; ``tools`` names the workload
    tools offered on every turn (None: all of them, ``[]``: none)."""

    model_config = _CONFIG

    id: str = Field(pattern=_ID_PATTERN)
    system: str | None = None
    tools: list[str] | None = None
    lang: str | None = Field(default=None, pattern=_LANG_PATTERN)
    turns: list[Turn] = Field(min_length=1)

    @model_validator(mode="after")
    def _starts_with_the_user(self) -> Session:
        first = self.turns[0]
        if first.user is None:
            raise FieldProblem(
                ("turns", 0, "tool_results"), "a session starts with a user turn; add one first"
            )
        if first.think_s != 0.0:
            raise FieldProblem(
                ("turns", 0, "think_s"),
                "the first turn has no think time (the load schedules a session's start); "
                "remove it",
            )
        return self


class Workload(BaseModel):
    """A named, versioned prompt set with expected outcomes and workload-level tools."""

    model_config = _CONFIG

    schema_version: int
    name: str = Field(pattern=_NAME_PATTERN)
    version: str
    description: str
    tools: list[Tool] = []
    system: str | None = None
    systems: dict[str, str] = {}
    prompts: list[PromptItem] = []
    sessions: list[Session] = []

    @field_validator("schema_version")
    @classmethod
    def _known_schema_version(cls, value: int) -> int:
        if value not in SCHEMA_VERSIONS:
            raise ValueError(
                f"schema_version {value} is not supported (this servelab reads "
                f"{', '.join(map(str, SCHEMA_VERSIONS))}); upgrade servelab or convert the file"
            )
        return value

    @field_validator("version", mode="before")
    @classmethod
    def _version_is_a_string(cls, value: Any) -> Any:
        if isinstance(value, int | float) and not isinstance(value, bool):
            raise ValueError(f'version must be a string; quote it: version: "{value}"')
        if isinstance(value, str) and re.fullmatch(_VERSION_PATTERN, value) is None:
            raise ValueError(f'version {value!r} must be dotted numbers like "1.0"')
        return value

    @field_validator("systems")
    @classmethod
    def _system_variants(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if name == DEFAULT_SYSTEM:
                raise FieldProblem(
                    (name,), f"'{DEFAULT_SYSTEM}' is reserved for the workload's own system; "
                    "give it under system, or rename the variant",
                )  # fmt: skip
            if re.fullmatch(SYSTEM_VARIANT_PATTERN, name) is None:
                raise FieldProblem((name,), "a variant name is lower case, digits, _ and -")
            if not text.strip():
                raise FieldProblem((name,), "the system prompt is empty; write its text")
        return value

    @model_validator(mode="after")
    def _cross_references(self) -> Workload:
        self._check_prompts_or_sessions()
        self._check_unique_tool_names()
        _check_unique("prompts", [item.id for item in self.prompts])
        _check_unique("sessions", [session.id for session in self.sessions])
        tools = {tool.name: tool for tool in self.tools}
        for index, item in enumerate(self.prompts):
            _check_item_tools(item, tools, ("prompts", index))
        for index, session in enumerate(self.sessions):
            _check_session_tools(session, tools, ("sessions", index))
        return self

    def _check_prompts_or_sessions(self) -> None:
        if self.sessions and self.schema_version < 2:
            raise FieldProblem(
                ("sessions",), "sessions need schema_version: 2; raise the file's schema_version"
            )
        if self.prompts and self.sessions:
            raise FieldProblem(
                ("sessions",),
                "a workload holds prompts or sessions, not both; split it into two workloads",
            )
        if not self.prompts and not self.sessions:
            need = "prompts" if self.schema_version < 2 else "prompts or sessions"
            raise FieldProblem(("prompts",), f"the workload has no {need}; add at least one")

    def _check_unique_tool_names(self) -> None:
        first: dict[str, int] = {}
        for index, tool in enumerate(self.tools):
            if tool.name in first:
                raise FieldProblem(
                    ("tools", index, "function", "name"),
                    f"duplicate tool name '{tool.name}' "
                    f"(first defined at tools.{first[tool.name]})",
                )
            first[tool.name] = index

    @property
    def canonical_json(self) -> str:
        """The validated model as canonical JSON: sorted keys, no spaces, defaults left out.

        Fields equal to their default are left out so a file that spells a default
        (``tools: []``) hashes like one that omits it, and adding an optional field to a later
        schema does not change the hash of workloads that do not use it.
        """
        data = self.model_dump(mode="json", exclude_defaults=True)
        return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    @property
    def content_hash(self) -> str:
        """``sha256:<hex>`` of ``canonical_json``: blind to formatting, comments and key order.

        Computed on each access (about a millisecond), never cached: ``model_copy`` copies the
        instance dict, so a cached value would survive an update and go stale.
        """
        return "sha256:" + hashlib.sha256(self.canonical_json.encode("utf-8")).hexdigest()

    @property
    def system_variants(self) -> tuple[str, ...]:
        """The names an arm's ``system_prompt`` may take: ``default`` (the workload's own
        ``system``), then the ``systems`` in file order."""
        return (DEFAULT_SYSTEM, *self.systems)

    def system_for(self, variant: str | None) -> str | None:
        """The system prompt text ``variant`` selects: a ``systems`` entry, or the workload's
        own ``system`` for None or ``default``. Raises ``ValueError`` naming the variants."""
        if variant is None or variant == DEFAULT_SYSTEM:
            return self.system
        if variant not in self.systems:
            raise ValueError(
                f"system_prompt '{variant}' is not a system prompt of workload {self.name} "
                f"(it has: {', '.join(self.system_variants)}); use one of those, or add it "
                "under the workload's systems"
            )
        return self.systems[variant]

    def system_label(self, variant: str | None) -> str | None:
        """What a run records for ``variant`` (``workload.system``): its name and the sha256
        of its text, ``full sha256:<hex>``; None when it selects no system prompt at all."""
        text = self.system_for(variant)
        if text is None:
            return None
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        return f"{variant or DEFAULT_SYSTEM} sha256:{digest}"

    def with_system(self, system: str | None) -> Workload:
        """This workload with ``system`` as its system prompt (an arm's variant); itself when
        ``system`` is None or already its own. Prompts and sessions with a system message of
        their own keep it, as they do with the workload's ``system``."""
        if system is None or system == self.system:
            return self
        return self.model_copy(update={"system": system})

    def chat_messages(self, item: PromptItem) -> list[dict[str, str]]:
        """The chat messages for ``item``: the workload system prompt, unless the item has its
        own system message, then the item's messages. Raises ``ValueError`` for a raw prompt."""
        if item.messages is None:
            raise ValueError(f"prompt '{item.id}' is a raw completion prompt; use item.prompt")
        messages = [{"role": m.role, "content": m.content} for m in item.messages]
        if self.system is not None and item.messages[0].role != "system":
            messages.insert(0, {"role": "system", "content": self.system})
        return messages

    def tools_for(self, item: PromptItem) -> list[dict[str, JsonValue]]:
        """The OpenAI tool dicts offered with ``item``, in workload order (fresh copies).

        ``item.tools`` None offers every workload tool, ``[]`` none; raw prompts get none.
        """
        if not item.is_chat:
            return []
        offered = _offered(item.tools, self.tools)
        return [tool.model_dump(mode="json") for tool in self.tools if tool.name in offered]

    def prompt_by_id(self, prompt_id: str) -> PromptItem:
        """The prompt with id ``prompt_id``; raises ``KeyError`` if there is none."""
        for item in self.prompts:
            if item.id == prompt_id:
                return item
        raise KeyError(prompt_id)

    def session_system(self, session: Session) -> str | None:
        """The system prompt of ``session``: its own, else the workload's."""
        return session.system if session.system is not None else self.system

    def session_tools(self, session: Session) -> list[dict[str, JsonValue]]:
        """The OpenAI tool dicts offered on every turn of ``session`` (fresh copies)."""
        offered = _offered(session.tools, self.tools)
        return [tool.model_dump(mode="json") for tool in self.tools if tool.name in offered]

    def session_by_id(self, session_id: str) -> Session:
        """The session with id ``session_id``; raises ``KeyError`` if there is none."""
        for session in self.sessions:
            if session.id == session_id:
                return session
        raise KeyError(session_id)

    def scoring_items(self) -> dict[str, PromptItem]:
        """What each row's ``prompt_id`` is scored against: every prompt, and every session
        turn with an expectation as a one-message prompt under its ``turn_id``."""
        items = {item.id: item for item in self.prompts}
        for session in self.sessions:
            for index, turn in enumerate(session.turns):
                if turn.expect is not None:
                    item = _turn_item(session, index, turn)
                    items[item.id] = item
        return items


def turn_id(session_id: str, turn: int) -> str:
    """The ``prompt_id`` of a session's turn: ``<session id>/<turn>`` (a prompt id never holds
    a ``/``, so the two cannot collide)."""
    return f"{session_id}/{turn}"


def _turn_item(session: Session, index: int, turn: Turn) -> PromptItem:
    assert turn.expect is not None
    text = turn.user if turn.user is not None else "(tool results)"
    # built from validated parts; model_construct because a turn id holds a "/" on purpose
    return PromptItem.model_construct(
        id=turn_id(session.id, index), messages=[Message(role="user", content=text)],
        prompt=None, tools=session.tools, lang=session.lang, expect=turn.expect,
        max_tokens=turn.max_tokens,
    )  # fmt: skip


def _check_unique(field: str, ids: list[str]) -> None:
    first: dict[str, int] = {}
    for index, value in enumerate(ids):
        if value in first:
            raise FieldProblem(
                (field, index, "id"),
                f"duplicate id '{value}' (first used at {field}.{first[value]}); "
                "ids must be unique",
            )
        first[value] = index


def _check_item_tools(item: PromptItem, tools: dict[str, Tool], loc: Loc) -> None:
    check_offered(item.tools or [], tools, (*loc, "tools"))
    offered = _offered(item.tools, list(tools.values()))
    where = f"{'.'.join(map(str, loc))}.tools"
    check_expectation(item.expect, tools, offered, loc, where)


def _check_session_tools(session: Session, tools: dict[str, Tool], loc: Loc) -> None:
    check_offered(session.tools or [], tools, (*loc, "tools"))
    offered = _offered(session.tools, list(tools.values()))
    where = f"{'.'.join(map(str, loc))}.tools"
    for index, turn in enumerate(session.turns):
        turn_loc = (*loc, "turns", index)
        for r_index, result in enumerate(turn.tool_results or []):
            if result.tool not in offered:
                raise FieldProblem(
                    (*turn_loc, "tool_results", r_index, "tool"),
                    f"tool '{result.tool}' is not offered to this session; add it to {where}",
                )
        if turn.expect is not None:
            check_expectation(turn.expect, tools, offered, turn_loc, where)


def _offered(names: list[str] | None, tools: Sequence[Tool]) -> set[str]:
    return {tool.name for tool in tools} if names is None else set(names)
