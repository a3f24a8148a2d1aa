"""Where a spread run's Ray cluster is: the ``--ray`` / ``ray.address`` value, parsed.

Owns ``parse_target`` and ``RayTarget``: ``local:N`` (N worker nodes started on this machine
for the run, 1 to ``MAX_LOCAL_NODES``) or the address of a running cluster (``HOST:PORT``,
``auto``, ``ray://HOST:PORT``). Pure: starting or joining the cluster is
``runner.distributed.cluster``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from servelab.errors import UsageError

LOCAL = re.compile(r"^local:(\d+)$")
MAX_LOCAL_NODES = 8


@dataclass(frozen=True, slots=True)
class RayTarget:
    """Where the cluster is: ``local`` worker nodes to start, or an ``address`` to join."""

    text: str  # as given: ``local:2`` or ``10.0.0.5:6379`` (what the manifest records)
    local: int = 0

    @property
    def address(self) -> str | None:
        return None if self.local else self.text


def parse_target(text: str) -> RayTarget:
    """``local:N`` (1 to 8 nodes on this machine) or a Ray address (``HOST:PORT``, ``auto``,
    ``ray://HOST:PORT``)."""
    value = text.strip()
    m = LOCAL.match(value)
    if m:
        n = int(m.group(1))
        if not 1 <= n <= MAX_LOCAL_NODES:
            raise UsageError(f"--ray {value}: a local cluster has 1 to {MAX_LOCAL_NODES} nodes")
        return RayTarget(value, n)
    if not value or value.startswith("local"):
        raise UsageError(
            f"--ray {value!r}: give local:N (N worker nodes on this machine) or the address of "
            "a running Ray cluster (HOST:PORT, or auto)"
        )
    return RayTarget(value)
