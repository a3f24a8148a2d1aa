"""The roles registry: named jobs a configuration can be promoted to, each with its thresholds.

Owns the YAML a team writes by hand (``roles.yaml``; path from ``--registry`` or
``$SERVELAB_REGISTRY``): ``schema_version: 1`` and ``roles: {NAME: {description, rules}}``,
where ``rules`` are gate rules (spec/gates.py) the promoted arm must pass in its run. Pure;
servelab never rewrites this file (promotions live beside it, under ``promoted/``).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from servelab.spec.gates import GatesSpec


class Role(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = ""
    rules: tuple[str, ...] = Field(default=(), description="gate rules the arm must pass")

    @field_validator("rules")
    @classmethod
    def _rules(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        GatesSpec(rules=v)  # same grammar and metric names as gates
        return v


class Registry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int = 1
    roles: dict[str, Role]

    @field_validator("roles")
    @classmethod
    def _names(cls, v: dict[str, Role]) -> dict[str, Role]:
        for name in v:
            if not name.replace("-", "").replace("_", "").isalnum():
                raise ValueError(f"role name {name!r}: use letters, digits, - and _")
        return v
