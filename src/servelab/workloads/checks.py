"""Cross-field rules of the workload schema that read more than one model.

Owns ``FieldProblem`` (a rule's failure at a field path the loader names in its one-line
message), the structural check of a tool's JSON Schema, the checks of an expected tool call
against the tool it names (argument names, types, enums, numeric constraints), and of the
tool names a prompt or a session offers and scripts.

Must not: read files, speak HTTP, or import anything that does I/O. The models live in
``schema``; this module only sees them as typed values (imported for type checking alone, so
``schema`` can import it without a cycle).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from pydantic import JsonValue

if TYPE_CHECKING:
    from servelab.workloads.schema import ArgExpectation, Expectation, Tool

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


def check_offered(names: Iterable[str], tools: Mapping[str, Tool], loc: Loc) -> None:
    """Every name in ``names`` (at ``loc.<index>``) is a defined tool."""
    for index, name in enumerate(names):
        if name not in tools:
            raise FieldProblem((*loc, index), unknown_tool(name, tools))


def check_expectation(
    expect: Expectation, tools: Mapping[str, Tool], offered: set[str], loc: Loc, where: str
) -> None:
    """An expected tool is defined and offered (``where`` names the field that offers tools),
    and its expected arguments fit the tool's parameters."""
    expected = expect.tool
    if expected is None:
        return
    if expected not in tools:
        raise FieldProblem((*loc, "expect", "tool"), unknown_tool(expected, tools))
    if expected not in offered:
        raise FieldProblem(
            (*loc, "expect", "tool"),
            f"tool '{expected}' is expected but not offered to this prompt; add it to {where}",
        )
    for arg, arg_expect in (expect.args or {}).items():
        check_arg(tools[expected], arg, arg_expect, (*loc, "expect", "args", arg))


def check_arg(tool: Tool, arg: str, expect: ArgExpectation, loc: Loc) -> None:
    """``expect`` can be met by argument ``arg`` of ``tool``: a parameter, of its type."""
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
        problem = value_problem(arg, schema, value)
        if problem:
            raise FieldProblem((*loc, *where), problem)


def value_problem(arg: str, schema: Mapping[str, JsonValue], value: JsonValue) -> str | None:
    """Why ``value`` can never be a valid ``arg`` under its schema's type and enum, or None."""
    expected = schema.get("type")
    type_check = JSON_TYPES.get(expected) if isinstance(expected, str) else None
    if type_check is not None and not type_check(value):
        return f"{value!r} is not of type {expected}, the type of '{arg}'"
    enum = schema.get("enum")
    if isinstance(enum, list) and value not in enum:
        return f"{value!r} is not in the enum of '{arg}' ({', '.join(map(repr, enum))})"
    return None


JSON_TYPES: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
}


def unknown_tool(name: str, tools: Mapping[str, Tool]) -> str:
    defined = ", ".join(tools) or "none"
    return (
        f"tool '{name}' is not defined in tools; define it under tools or fix the name "
        f"(defined: {defined})"
    )
