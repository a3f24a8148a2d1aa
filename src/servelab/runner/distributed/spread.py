"""An experiment's blocks spread over the worker nodes of a Ray cluster.

Owns the driver's side of ``servelab run --ray``: one ``NodeWorker`` actor per node (pinned to
it, holding the node's lock), the node facts and per-node effective configurations the
manifest and the confound guard need, which node runs which block, and the merge of every
node's rows into the run's one ``requests.jsonl``.

Assumptions, stated once:

- Rounds stay the unit of pairing. A round's blocks run at the same time, each on a node
  (different arms of a round run side by side, never one after another on one node unless the
  round has more blocks than nodes), and the next round starts when this one is complete, so
  a sequential look sees whole rounds. Within a round, node ``(i + r) % N`` takes the round's
  ``i``-th block (``r``: the round): over rounds every arm visits every node it may use.
- ``placement`` restricts an arm to the nodes named (labels or Ray resources); an arm not
  named may run anywhere.
- One writer: only the driver writes the run directory. A row gets its ``seq`` and a
  ``node`` field here, as it arrives; a warm-up's id gets the node's label in front (each node
  counts its own engine starts).
- A node lost mid-block (Ray reports its actor dead) leaves every row it streamed recorded;
  the rest of its block, and any block queued for it, run on another node the arm may use
  (``run_block`` skips the ids already recorded). With no such node left the run fails with
  the rows kept, and ``servelab resume`` continues it, on the cluster the manifest names.
- An exception a block raises on its node (an engine that would not start, a crash) ends the
  run as it would on one machine.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from servelab.errors import EnvironmentProblem, UsageError
from servelab.records import Phase
from servelab.runner.distributed.cluster import RayCluster, RayNode, ray_get
from servelab.runner.distributed.node import BlockDone, RunSettings, actor_class
from servelab.runner.lifecycle import Block, EngineStarted
from servelab.spec.schedule import BlockPlan
from servelab.store import RequestRow
from servelab.store.jsonl import JsonlWriter
from servelab.store.rundir import RunDir

NODE_FIELD_AFTER = "request_id"  # the row key the ``node`` field follows
NODE_LOCKS = "ray-nodes"  # under the cache: locks of nodes that share the driver's machine


def placement_nodes(
    arms: Sequence[str], placement: Mapping[str, Sequence[str]], nodes: Sequence[RayNode]
) -> dict[str, list[RayNode]]:
    """The nodes each arm may run on; a one-line error when an arm has none."""
    out: dict[str, list[RayNode]] = {}
    labels = ", ".join(n.label for n in nodes)
    for arm in arms:
        wanted = placement.get(arm)
        allowed = [n for n in nodes if not wanted or any(n.matches(w) for w in wanted)]
        if not allowed:
            raise UsageError(
                f"placement: arm {arm!r} may run on {', '.join(wanted or ())}, but no node of "
                f"the cluster matches (nodes: {labels}); name a node label or a Ray resource"
            )
        out[arm] = allowed
    return out


def assign_round(
    blocks: Sequence[BlockPlan], allowed: Mapping[str, Sequence[RayNode]], alive: Sequence[str],
    round_index: int,
) -> dict[str, list[BlockPlan]]:  # fmt: skip
    """Which node runs which block of one round: the block of the ``i``-th arm (in the order
    of ``allowed``) goes to node ``(i + round) % N`` of the nodes its arm may use, unless
    another of them has less work already, so over the rounds every arm visits every node it
    may use; every block lands on a live node, or the error says which arm has none."""
    load: dict[str, list[BlockPlan]] = {label: [] for label in alive}
    arm_index = {arm: i for i, arm in enumerate(allowed)}
    for bp in blocks:
        i = arm_index[bp.arm]
        options = [n.label for n in allowed[bp.arm] if n.label in load]
        if not options:
            raise EnvironmentProblem(
                f"no live node may run arm {bp.arm!r} (lost: every node placement allows it); "
                "its rows so far are recorded: `servelab resume` continues once a node is back"
            )
        first = options[(i + round_index) % len(options)]
        best = min(options, key=lambda label: (len(load[label]), label != first))
        load[best].append(bp)
    return {label: bps for label, bps in load.items() if bps}


def with_node(row: RequestRow, label: str, seq: int) -> dict[str, object]:
    """The row as the run stores it: the driver's ``seq``, the ``node`` that ran it, and a
    warm-up id made unique across nodes."""
    request_id = row.request_id
    if row.phase is Phase.WARMUP and request_id:
        request_id = f"{label}:{request_id}"
    data = dataclasses.replace(row, seq=seq, request_id=request_id).to_json()
    out: dict[str, object] = {}
    for key, value in data.items():
        out[key] = value
        if key == NODE_FIELD_AFTER:
            out["node"] = label
    return out


@dataclass
class _Lost:
    label: str
    error: BaseException


@dataclass
class _Finished:
    label: str
    bp: BlockPlan
    done: BlockDone


@dataclass
class _Failed:
    label: str
    error: BaseException


@dataclass
class NodePool:
    """The cluster's worker nodes and their actors, for one run."""

    cluster: RayCluster
    nodes: list[RayNode]
    actors: dict[str, Any] = field(default_factory=dict)
    facts: dict[str, dict[str, Any]] = field(default_factory=dict)
    lost: dict[str, str] = field(default_factory=dict)  # label -> why

    @classmethod
    def start(cls, cluster: RayCluster, settings: RunSettings, hardware: str,
              lock_dir: str, driver_ip: str | None) -> NodePool:  # fmt: skip
        """One worker per node, pinned to it; each takes its node's lock and reports facts."""
        ray = cluster.ray
        pool = cls(cluster, cluster.nodes())
        actor = actor_class(ray)
        shared = cluster.target.local or None
        for node in pool.nodes:
            # a node on the driver's machine (every node of a local cluster) locks on its own:
            # the driver holds the machine's lock for the whole run
            same_host = shared or node.ip.startswith("127.") or node.ip == driver_ip
            lock = f"{lock_dir}/{node.label}.lock" if same_host else None
            pool.actors[node.label] = actor.options(resources={node.pin: 0.001}).remote(
                node.label, settings, lock
            )
        refs = {label: a.facts.remote(hardware) for label, a in pool.actors.items()}
        for label, ref in refs.items():
            pool.facts[label] = pool.get(ref, label)
        return pool

    def get(self, ref: Any, label: str) -> Any:
        """``ray.get`` with a node's own error (a busy lock, a missing engine) unwrapped."""
        return ray_get(self.cluster.ray, ref, f"Ray node {label}")

    def effective(self, spec: Mapping[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
        """Each node's effective configuration of every arm."""
        refs = {label: a.effective.remote(dict(spec)) for label, a in self.actors.items()}
        return {label: self.get(ref, label) for label, ref in refs.items()}

    @property
    def alive(self) -> list[str]:
        return [n.label for n in self.nodes if n.label not in self.lost]

    def stop(self, graceful: bool = True) -> None:
        """Stop every node's engine and worker: politely when they are idle (a finished run),
        at once otherwise (an interrupted or failed one: a worker busy with a block would only
        take its stop after it); a killed worker takes its engine with it."""
        ray = self.cluster.ray
        if graceful:
            refs = [a.stop.remote() for label, a in self.actors.items() if label not in self.lost]
            for ref in refs:
                try:
                    ray.get(ref, timeout=150)
                except Exception:  # a node lost while stopping: nothing of it is left to stop
                    continue
        for a in self.actors.values():
            try:
                ray.kill(a)
            except Exception:
                continue


class Spread:
    """Runs one experiment's planned blocks over a ``NodePool``, round by round."""

    def __init__(
        self, pool: NodePool, run: RunDir, allowed: Mapping[str, Sequence[RayNode]],
        block_of: Callable[[BlockPlan], Block], on_start: Callable[[EngineStarted], None],
        on_deltas: Callable[[BlockPlan, dict[str, float] | None], None],
        done: set[str], seq: int, notes: Callable[[str], None],
        on_row: Callable[[RequestRow], None], on_lost: Callable[[str, str], None],
    ) -> None:  # fmt: skip
        self.pool = pool
        self.run = run
        self.allowed = allowed
        self.block_of = block_of
        self.on_start = on_start
        self.on_deltas = on_deltas
        self.done = done
        self.seq = seq
        self.note = notes
        self.on_row = on_row
        self.on_lost = on_lost

    def run_round(self, blocks: Sequence[BlockPlan], round_index: int,
                  writer: JsonlWriter) -> None:  # fmt: skip
        """Every block of one round, each on a node, at the same time; a lost node's blocks
        run again elsewhere (the requests already recorded are skipped)."""
        events: queue.Queue[Any] = queue.Queue()
        pending = assign_round(blocks, self.allowed, self.pool.alive, round_index)
        outstanding = sum(len(b) for b in pending.values())
        inboxes: dict[str, queue.Queue[BlockPlan | None]] = {}
        threads: list[threading.Thread] = []

        def feed(label: str, bps: Sequence[BlockPlan]) -> None:
            if label not in inboxes:
                inboxes[label] = queue.Queue()
                t = threading.Thread(target=self._node_loop, args=(label, inboxes[label], events),
                                     name=f"ray-{label}", daemon=True)  # fmt: skip
                threads.append(t)
                t.start()
            for bp in bps:
                inboxes[label].put(bp)

        for label, bps in pending.items():
            feed(label, bps)
        queued: dict[str, list[BlockPlan]] = {label: list(b) for label, b in pending.items()}
        try:
            while outstanding:
                event = events.get()
                if isinstance(event, tuple):
                    label, kind, value = event
                    if kind == "row":
                        self._write(value, label, writer)
                    elif kind == "start":
                        describe = {**value.describe, "node": label}
                        self.on_start(dataclasses.replace(value, describe=describe))
                elif isinstance(event, _Finished):
                    queued[event.label].remove(event.bp)
                    outstanding -= 1
                    self._place(event.done, event.label)
                    self.on_deltas(event.bp, event.done.deltas)
                elif isinstance(event, _Lost):
                    why = str(event.error).splitlines()[0] if str(event.error) else "lost"
                    self.pool.lost[event.label] = why
                    self.on_lost(event.label, why)
                    again = queued.pop(event.label, [])
                    inboxes.pop(event.label, None)
                    self.note(f"node {event.label} lost ({why}); {len(again)} block(s) of "
                              f"round {round_index + 1} run again elsewhere")  # fmt: skip
                    moved = assign_round(again, self.allowed, self.pool.alive, round_index)
                    for label, bps in moved.items():
                        queued.setdefault(label, []).extend(bps)
                        feed(label, bps)
                elif isinstance(event, _Failed):
                    raise event.error
        finally:
            for inbox in inboxes.values():
                inbox.put(None)
            for t in threads:
                t.join(timeout=5)

    def _node_loop(self, label: str, inbox: queue.Queue[BlockPlan | None],
                   events: queue.Queue[Any]) -> None:  # fmt: skip
        """One node's blocks, in the order they arrive, until told to stop or the node is lost."""
        ray = self.pool.cluster.ray
        actor = self.pool.actors[label]
        while True:
            bp = inbox.get()
            if bp is None:
                return
            try:
                block = self.block_of(bp)
                ids = {j.request_id for j in block.trials if j.request_id in self.done}
                stream = actor.run_block.options(num_returns="streaming").remote(block, ids)
                finished: BlockDone | None = None
                for kind, value in _stream(ray, stream):
                    if kind == "done":
                        finished = value
                    else:
                        events.put((label, kind, value))
                events.put(_Finished(label, bp, finished or BlockDone(None)))
            except ray.exceptions.RayTaskError as exc:
                events.put(_Failed(label, exc.as_instanceof_cause()))
                return
            except ray.exceptions.RayError as exc:  # the actor or its node is gone
                events.put(_Lost(label, exc))
                return
            except BaseException as exc:
                events.put(_Failed(label, exc))
                return

    def _write(self, row: RequestRow, label: str, writer: JsonlWriter) -> None:
        writer.write(with_node(row, label, self.seq))
        self.seq += 1
        if row.phase is Phase.TRIAL and row.request_id:
            self.done.add(row.request_id)
        self.on_row(row)

    def _place(self, done: BlockDone, label: str) -> None:
        """The block's files in the run directory: its records where a run keeps them, its
        engine logs under ``nodes/<label>/`` (each node has its own)."""
        for rel, data in done.files.items():
            name = rel.rsplit("/", 1)[-1]
            is_log = "/" not in rel and name.endswith(".log")
            target = self.run.root / "nodes" / label / rel if is_log else self.run.root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)


def _stream(ray: Any, stream: Any) -> Iterator[tuple[str, Any]]:
    for ref in stream:
        yield ray.get(ref)
