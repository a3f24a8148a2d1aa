"""The workload schema: prompt sets as validated, immutable data with a content hash.

Owns the pydantic models of a workload file (``Workload``, ``PromptItem``, ``Tool``,
``Expectation``, ``ArgExpectation``, ``Message``), every cross-field rule between them, the
canonical JSON form and its ``sha256:`` content hash, and the two views a client needs: the chat
messages and the OpenAI tool dicts offered with one prompt.

Must not: read files (that is ``loader``), speak HTTP, score replies (that is ``scoring/``), or
import anything that does I/O. Cross-field problems are raised as ``FieldProblem`` so the loader
can name the exact field path (``prompts.3.expect.tool``) in its one-line message.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator, model_validator

SCHEMA_VERSION = 1
"""The only workload ``schema_version`` this servelab reads."""

_CONFIG = ConfigDict(extra="forbid", frozen=True, strict=True)
_NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]*$"
_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"
_TOOL_NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
_LANG_PATTERN = r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$"
_VERSION_PATTERN = r"^[0-9]+(\.[0-9]+)*$"

Loc = tuple[str | int, ...]


class FieldProblem(ValueError):
    """A cross-field rule failed at ``loc``, a path relative to the model that raised it.

    Pydantic reports a model validator's error at the model's own location; the loader appends
    ``loc`` to it so the message names the exact field.
    """

    def __init__(self, loc: Loc, message: str) -> None:
        self.loc = loc
        self.message = message
        super().__init__(f"{'.'.join(str(part) for part in loc)}: {message}" if loc else message)


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


class Workload(BaseModel):
    """A named, versioned prompt set with expected outcomes and workload-level tools."""

    model_config = _CONFIG

    schema_version: int
    name: str = Field(pattern=_NAME_PATTERN)
    version: str
    description: str
    tools: list[Tool] = []
    system: str | None = None
    prompts: list[PromptItem] = Field(min_length=1)

    @field_validator("schema_version")
    @classmethod
    def _known_schema_version(cls, value: int) -> int:
        if value != SCHEMA_VERSION:
            raise ValueError(
                f"schema_version {value} is not supported (this servelab reads "
                f"{SCHEMA_VERSION}); upgrade servelab or convert the file"
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

    @model_validator(mode="after")
    def _cross_references(self) -> Workload:
        self._check_unique_tool_names()
        self._check_unique_ids()
        tools = {tool.name: tool for tool in self.tools}
        for index, item in enumerate(self.prompts):
            _check_item_tools(item, tools, ("prompts", index))
        return self

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

    def _check_unique_ids(self) -> None:
        first: dict[str, int] = {}
        for index, item in enumerate(self.prompts):
            if item.id in first:
                raise FieldProblem(
                    ("prompts", index, "id"),
                    f"duplicate id '{item.id}' "
                    f"(first used at prompts.{first[item.id]}); ids must be unique",
                )
            first[item.id] = index

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
        offered = _offered_names(item, self.tools)
        return [tool.model_dump(mode="json") for tool in self.tools if tool.name in offered]

    def prompt_by_id(self, prompt_id: str) -> PromptItem:
        """The prompt with id ``prompt_id``; raises ``KeyError`` if there is none."""
        for item in self.prompts:
            if item.id == prompt_id:
                return item
        raise KeyError(prompt_id)


def check_object_schema(schema: Mapping[str, JsonValue], loc: Loc) -> None:
    """Check that ``schema`` is a JSON Schema for an object of arguments (structure only).

    ``type`` must be ``object``; ``properties``, if present, maps names to schema objects;
    ``required``, if present, lists names defined in ``properties``.
    """
    if schema.get("type") != "object":
        raise FieldProblem((*loc, "type"), f"must be 'object' (got {schema.get('type')!r})")
    properties = schema.get("properties", {})
    if not isinstance(properties, dict):
        raise FieldProblem((*loc, "properties"), "must be a mapping of name to schema")
    for name, prop in properties.items():
        if not isinstance(prop, dict):
            raise FieldProblem((*loc, "properties", name), "must be a schema object")
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise FieldProblem((*loc, "required"), "must be a list of property names")
    for index, wanted in enumerate(required):
        if wanted not in properties:
            raise FieldProblem(
                (*loc, "required", index), f"'{wanted}' is required but not defined in properties"
            )


def _check_item_tools(item: PromptItem, tools: dict[str, Tool], loc: Loc) -> None:
    for index, name in enumerate(item.tools or []):
        if name not in tools:
            raise FieldProblem((*loc, "tools", index), _unknown_tool(name, tools))
    expected = item.expect.tool
    if expected is None:
        return
    if expected not in tools:
        raise FieldProblem((*loc, "expect", "tool"), _unknown_tool(expected, tools))
    if expected not in _offered_names(item, list(tools.values())):
        raise FieldProblem(
            (*loc, "expect", "tool"),
            f"tool '{expected}' is expected but not offered to this prompt; "
            f"add it to {'.'.join(map(str, loc))}.tools",
        )
    for arg, arg_expect in (item.expect.args or {}).items():
        _check_arg(tools[expected], arg, arg_expect, (*loc, "expect", "args", arg))


def _check_arg(tool: Tool, arg: str, expect: ArgExpectation, loc: Loc) -> None:
    properties = tool.function.properties
    if arg not in properties:
        known = ", ".join(sorted(properties)) or "none"
        raise FieldProblem(
            loc, f"'{arg}' is not a parameter of tool '{tool.name}' (parameters: {known})"
        )
    schema = properties[arg]
    numeric = expect.min is not None or expect.max is not None or expect.sign is not None
    if numeric and schema.get("type") not in ("integer", "number"):
        raise FieldProblem(
            loc, f"min, max and sign need a numeric parameter; '{arg}' is {schema.get('type')!r}"
        )
    values: list[tuple[Loc, JsonValue]] = []
    if expect.equals is not None:
        values.append((("equals",), expect.equals))
    values += [(("one_of", index), value) for index, value in enumerate(expect.one_of or [])]
    for where, value in values:
        problem = _value_problem(arg, schema, value)
        if problem:
            raise FieldProblem((*loc, *where), problem)


def _value_problem(arg: str, schema: Mapping[str, JsonValue], value: JsonValue) -> str | None:
    """Why ``value`` can never be a valid ``arg`` under its schema's type and enum, or None."""
    expected = schema.get("type")
    type_check = _JSON_TYPES.get(expected) if isinstance(expected, str) else None
    if type_check is not None and not type_check(value):
        return f"{value!r} is not of type {expected}, the type of '{arg}'"
    enum = schema.get("enum")
    if isinstance(enum, list) and value not in enum:
        return f"{value!r} is not in the enum of '{arg}' ({', '.join(map(repr, enum))})"
    return None


_JSON_TYPES: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
}


def _offered_names(item: PromptItem, tools: Sequence[Tool]) -> set[str]:
    return {tool.name for tool in tools} if item.tools is None else set(item.tools)


def _unknown_tool(name: str, tools: dict[str, Tool]) -> str:
    defined = ", ".join(tools) or "none"
    return (
        f"tool '{name}' is not defined in tools; define it under tools or fix the name "
        f"(defined: {defined})"
    )
