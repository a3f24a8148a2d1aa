"""Workloads: prompt sets as versioned data files with expected outcomes and a content hash.

Owns the public face of the workloads package: the schema models, ``load_workload`` and
``list_builtin``. A workload is pure data; every run records its ``content_hash`` so two runs
can tell whether they asked the same questions.

Must not: speak HTTP, start processes, use asyncio, or score replies (``scoring/`` does that).
The only I/O in this package is reading the one workload file asked for.
"""

from servelab.workloads.loader import list_builtin, load_trace, load_workload, parse_workload
from servelab.workloads.schema import (
    DEFAULT_SYSTEM,
    SCHEMA_VERSION,
    SCHEMA_VERSIONS,
    ArgExpectation,
    Expectation,
    FunctionDef,
    Message,
    PromptItem,
    Session,
    Tool,
    ToolResult,
    Turn,
    Workload,
    turn_id,
)

__all__ = [
    "DEFAULT_SYSTEM",
    "SCHEMA_VERSION",
    "SCHEMA_VERSIONS",
    "ArgExpectation",
    "Expectation",
    "FunctionDef",
    "Message",
    "PromptItem",
    "Session",
    "Tool",
    "ToolResult",
    "Turn",
    "Workload",
    "list_builtin",
    "load_trace",
    "load_workload",
    "parse_workload",
    "turn_id",
]
