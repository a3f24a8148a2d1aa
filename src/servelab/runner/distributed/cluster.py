"""A Ray cluster to spread work over: one that runs already (``--ray HOST:PORT``), or a local
one of N worker nodes started for the run (``--ray local:N``), on 127.0.0.1.

Owns parsing the ``--ray`` / ``ray.address`` value (``parse_target``), starting or joining the
cluster (``RayCluster``, a context manager that shuts down what it started), and listing the
worker nodes work may be placed on (``RayNode``: a label, Ray's node id, its address and its
resources). Ray is an optional extra (``pip install 'servelab[ray]'``): it is imported only
here and in the modules that run on the nodes, and a missing Ray is a one-line error.

Assumptions, stated once:

- A worker node is a node with CPUs. A local cluster's head node has none (it only runs Ray's
  control processes), so work never lands on it.
- A local node's label is ``n0``, ``n1``, ...; it carries the Ray resource ``servelab_n0``
  (and so on), which placement pins actors with. A node of a cluster that runs already is
  labelled by the first custom resource it was started with (``ray start --resources
  '{"h100": 1}'`` -> ``h100``), else by its address; labels are made unique with ``-2``,
  ``-3`` in node-id order.
- Several nodes of one local cluster share this machine: each takes a lock of its own
  (``distributed.node``), not the machine's.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from servelab.errors import EnvironmentProblem
from servelab.spec.ray import RayTarget, parse_target

__all__ = ["RayCluster", "RayNode", "RayTarget", "import_ray", "parse_target", "worker_nodes"]

LOCAL_IP = "127.0.0.1"
NAMESPACE = "servelab"
RAY_EXTRA = "pip install 'servelab[ray]' (make test installs it)"
_BUILTIN_RESOURCES = ("CPU", "GPU", "memory", "object_store_memory", "accelerator_type")


def ray_get(ray: ModuleType, ref: Any, what: str) -> Any:
    """``ray.get``: the exception the remote code raised (a busy lock, a missing engine),
    unwrapped; a lost node or worker as one line naming ``what``."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        raise exc.as_instanceof_cause() from None
    except ray.exceptions.RayError as exc:
        raise EnvironmentProblem(f"{what} failed: {str(exc).splitlines()[0]}") from None


def driver_address() -> str | None:
    """This machine's address as a Ray node would report it (None when it cannot tell)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.255.255.255", 1))
            return str(s.getsockname()[0])
    except OSError:
        return None


def import_ray() -> ModuleType:
    """Ray, or a one-line error saying how to install it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Ray's own import-time deprecation notices
        try:
            import ray
        except ImportError as exc:
            raise EnvironmentProblem(f"Ray is not installed ({exc}); {RAY_EXTRA}") from None
    return ray


def loopback_only(ray: ModuleType) -> None:
    """Every process of a local cluster on 127.0.0.1 (Ray otherwise takes the machine's
    address, reachable from other machines): Ray's switch for a loopback-only cluster, here and
    in the processes the cluster starts."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False


@dataclass(frozen=True, slots=True)
class RayNode:
    """One worker node: its label, Ray's id, its address and the Ray resources it offers."""

    label: str
    node_id: str
    ip: str
    resources: dict[str, float] = field(default_factory=dict)

    @property
    def pin(self) -> str:
        """The resource an actor asks for to land on this node (a sliver of it)."""
        return self.resource or f"node:{self.ip}"

    @property
    def resource(self) -> str | None:
        own = sorted(k for k in self.resources if k.startswith("servelab_"))
        return own[0] if own else None

    def matches(self, name: str) -> bool:
        """Placement: ``name`` is this node's label or one of its custom resources."""
        return name == self.label or name in self.resources


def node_label(resources: dict[str, float], ip: str) -> str:
    own = sorted(k for k in resources if k.startswith("servelab_"))
    if own:
        return own[0].removeprefix("servelab_")
    custom = sorted(k for k in resources if k not in _BUILTIN_RESOURCES and ":" not in k)
    return custom[0] if custom else ip


def worker_nodes(listed: list[dict[str, Any]]) -> list[RayNode]:
    """The alive nodes with CPUs, labelled (``ray.nodes()`` entries)."""
    out: list[RayNode] = []
    seen: dict[str, int] = {}
    for n in sorted(listed, key=lambda n: str(n.get("NodeID"))):
        resources = {str(k): float(v) for k, v in (n.get("Resources") or {}).items()}
        if not n.get("Alive") or resources.get("CPU", 0) <= 0:
            continue
        ip = str(n.get("NodeManagerAddress") or "")
        label = node_label(resources, ip)
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1:
            label = f"{label}-{seen[label]}"
        out.append(RayNode(label, str(n.get("NodeID")), ip, resources))
    order = {n.label: i for i, n in enumerate(out)}
    return sorted(out, key=lambda n: (_local_index(n.label), order[n.label]))


def _local_index(label: str) -> int:
    m = re.fullmatch(r"n(\d+)", label)
    return int(m.group(1)) if m else 1 << 30


class RayCluster:
    """Join ``target``'s cluster, or start a local one; ``close`` (or the ``with`` block's end)
    disconnects and stops what this process started."""

    def __init__(self, target: RayTarget, *, cpus_per_node: int = 1) -> None:
        self.target = target
        self.ray = import_ray()
        self._local: Any = None
        self._nodes: list[Any] = []  # the local cluster's worker node handles, by index
        try:
            self._start(cpus_per_node)
        except Exception:
            self.close()
            raise

    def _start(self, cpus_per_node: int) -> None:
        ray = self.ray
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # never phone home
        logging.getLogger("ray").setLevel(logging.WARNING)  # its INFO lines are not for users
        os.environ.setdefault("RAY_DEDUP_LOGS", "0")
        if self.target.local:
            loopback_only(ray)
            from ray.cluster_utils import Cluster

            self._local = Cluster(initialize_head=True, head_node_args={
                "num_cpus": 0, "include_dashboard": False, "node_ip_address": LOCAL_IP,
            })  # fmt: skip
            for i in range(self.target.local):
                self._nodes.append(self._local.add_node(
                    num_cpus=cpus_per_node, node_ip_address=LOCAL_IP,
                    resources={f"servelab_n{i}": 1.0},
                ))  # fmt: skip
            address = self._local.address
        else:
            address = self.target.text
        try:
            ray.init(address=address, namespace=NAMESPACE, log_to_driver=False,
                     configure_logging=False, include_dashboard=False)  # fmt: skip
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise EnvironmentProblem(
                f"cannot join the Ray cluster at {address} ({str(exc).splitlines()[0]}); start "
                "it (ray start --head) or check the address, or try --ray local:2"
            ) from None
        if self._local is not None:
            self._local.wait_for_nodes()

    def nodes(self) -> list[RayNode]:
        found = worker_nodes(self.ray.nodes())
        if not found:
            raise EnvironmentProblem(
                f"the Ray cluster at {self.target.text} has no worker node with CPUs; add one "
                "(ray start --address ... --num-cpus 1)"
            )
        return found

    @property
    def address(self) -> str:
        """The address other drivers join with (``--ray ADDRESS``)."""
        return str(self._local.address) if self._local is not None else self.target.text

    def kill_node(self, index: int) -> None:
        """Stop local worker node ``index`` at once (its raylet and the workers on it)."""
        self._local.remove_node(self._nodes[index], allow_graceful=False)

    def add_node(self, index: int, cpus: int = 1) -> None:
        """Start local worker node ``index`` (again, after ``kill_node``: the same label)."""
        node = self._local.add_node(num_cpus=cpus, node_ip_address=LOCAL_IP,
                                    resources={f"servelab_n{index}": 1.0})  # fmt: skip
        if index < len(self._nodes):
            self._nodes[index] = node
        else:
            self._nodes.append(node)
        self._local.wait_for_nodes()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            if self.ray.is_initialized():
                self.ray.shutdown()
        if self._local is not None:
            local, self._local = self._local, None
            with contextlib.suppress(Exception):
                local.shutdown()

    def __enter__(self) -> RayCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def connected(target: RayTarget) -> Iterator[RayCluster]:
    cluster = RayCluster(target)
    try:
        yield cluster
    finally:
        cluster.close()
