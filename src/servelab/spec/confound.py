"""The confound guard: arms may differ only in what the spec declared.

Owns the field-by-field diff of arms' effective configurations and the decision to refuse a run
whose arms differ in an undeclared field (naming the field and both values), or to record it as
an allowed confound when the user said ``--allow-confound FIELD``. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from servelab.errors import UsageError
from servelab.spec.settings import declared_fields, field_matches

V = TypeVar("V")  # one flat configuration value (the effective config's values)


class ConfoundError(UsageError):
    """Arms differ in a field the spec does not declare."""


def config_diff(effective: Mapping[str, Mapping[str, V]]) -> dict[str, dict[str, V | None]]:
    """``{field: {arm: value}}`` for every field whose value is not the same in every arm
    (None for an arm that lacks the field)."""
    fields = sorted({f for values in effective.values() for f in values})
    diff: dict[str, dict[str, V | None]] = {}
    for field in fields:
        values = {arm: eff.get(field) for arm, eff in effective.items()}
        if len({_key(v) for v in values.values()}) > 1:
            diff[field] = values
    return diff


def _key(value: object) -> str:
    return repr(value)


def _short(value: object, limit: int = 60) -> str:
    text = "(unset)" if value is None else str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def user_name(field: str) -> str:
    """How a user writes a field in ``declare`` / ``--allow-confound``."""
    if field.startswith("vllm."):
        return "--" + field.removeprefix("vllm.").replace("_", "-")
    return field.removeprefix("llama.")


def check_confounds(
    effective: Mapping[str, Mapping[str, object]],
    declared: Mapping[str, tuple[str, ...]],
    baseline: str,
    declare: tuple[str, ...] = (),
    allow: tuple[str, ...] = (),
) -> list[dict[str, object]]:
    """Refuse undeclared differences; return the allowed confounds, ``[{field, values}]``.

    The refusal names the first undeclared field with both values, and lists every other
    undeclared field, so a comparison of two engines is declared in one pass."""
    spec_declared = {f for name in declare for f in declared_fields(name)}
    allowed_fields = {f for name in allow for f in declared_fields(name)}
    allowed: list[dict[str, object]] = []
    allowed_names: set[str] = set()
    refused: list[tuple[str, str, object, object]] = []  # field, arm, baseline value, value
    for field, values in config_diff(effective).items():
        base_value = values.get(baseline)
        for arm, value in values.items():
            if arm == baseline or _key(value) == _key(base_value):
                continue
            ok = (
                field_matches(field, spec_declared)
                or field_matches(field, declared.get(arm, ()))
                or field_matches(field, declared.get(baseline, ()))
            )
            if ok:
                continue
            if field_matches(field, allowed_fields):
                allowed.append({"field": field, "values": values})
                allowed_names.add(field)
                break
            refused.append((field, arm, base_value, value))
            break
    if refused:
        field, arm, base_value, value = refused[0]
        name = user_name(field)
        more = [user_name(f) for f, *_ in refused[1:]]
        also = f"; they also differ undeclared in {', '.join(more)}" if more else ""
        raise ConfoundError(
            f"arms {baseline!r} and {arm!r} differ in {field} ({baseline}: "
            f"{_short(base_value)}, {arm}: {_short(value)}), which the spec does not "
            f"declare{also}; make it a named setting or add it to `declare:`, or run anyway "
            f"with --allow-confound {name}"
        )
    unknown = [n for n in allow if not any(field_matches(f, declared_fields(n))
                                           for f in allowed_names)]  # fmt: skip
    if unknown:
        raise UsageError(
            f"--allow-confound {unknown[0]}: the arms do not differ undeclared in that field; "
            "drop the option"
        )
    return allowed
