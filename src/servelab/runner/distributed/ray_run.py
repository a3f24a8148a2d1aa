"""``servelab run --ray`` / ``resume`` on a Ray cluster: the cluster and its node workers for
one run, and what the run's checks and manifest learn from the nodes.

Owns ``RayRun`` (open: join or start the cluster, one worker per node, each node's facts and
effective configurations; close: stop the workers and what was started), the checks made with
the nodes before any request (every node resolves each arm it may run to the driver's build,
model and template; ``node.hardware`` joins each arm's effective configuration, so arms on
different hardware are a confound the guard refuses unless declared) and the manifest's
``ray`` record. The blocks themselves are ``distributed.spread``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psutil

from servelab.errors import UsageError
from servelab.paths import cache_dir
from servelab.runner.distributed.cluster import (
    RayCluster,
    RayNode,
    RayTarget,
    driver_address,
)
from servelab.runner.distributed.node import RunSettings
from servelab.runner.distributed.spread import NODE_LOCKS, NodePool, placement_nodes
from servelab.runner.experiment_inputs import ExperimentInputs
from servelab.store import Host, RayNodeRecord, RayRecord

# What must be the same wherever an arm runs: the engine build and binary, the model and the
# chat template. Paths may differ from node to node; these may not.
IDENTITY = ("engine.build", "engine.binary_sha256", "model.sha256", "model.chat_template_sha256",
            "model.draft_sha256")  # fmt: skip
NODE_HARDWARE = "node.hardware"


@dataclass
class RayRun:
    """The cluster, its workers and their facts, for one run."""

    target: RayTarget
    cluster: RayCluster
    pool: NodePool
    allowed: dict[str, list[RayNode]]
    interrupted: bool = False  # set when the run ends with an error or Ctrl-C

    @classmethod
    def open(cls, target: RayTarget, inputs: ExperimentInputs, run_id: str,
             note: Any = None) -> RayRun:  # fmt: skip
        """Join or start the cluster and start a worker on every node; refuse a node that would
        run an arm differently. Adds ``node.hardware`` to each arm's effective configuration."""
        if target.local:
            refuse_oversubscribed(inputs, target.local)
        if note is not None:
            note(f"Ray: {'starting ' + target.text if target.local else 'joining ' + target.text}")
        cluster = RayCluster(target)
        try:
            spec = inputs.spec
            settings = RunSettings(
                run_id=run_id, workload=inputs.workload, warmup=spec.warmup,
                timeout_s=spec.base.request_timeout_s,
                startup_timeout_s={a: c.engine.startup_timeout_s for a, c in inputs.arms.items()},
                slos=tuple(spec.slo),
            )  # fmt: skip
            lock_dir = cache_dir() / NODE_LOCKS
            lock_dir.mkdir(parents=True, exist_ok=True)
            pool = NodePool.start(cluster, settings, spec.hardware, str(lock_dir), driver_address())
            allowed = placement_nodes(list(inputs.arms), spec.placement, pool.nodes)
            run = cls(target, cluster, pool, allowed)
            run.check_nodes(inputs)
            run.add_hardware(inputs)
            return run
        except BaseException:
            cluster.close()
            raise

    def check_nodes(self, inputs: ExperimentInputs) -> None:
        """Every node resolves every arm it may run as the driver did (IDENTITY)."""
        per_node = self.pool.effective(inputs.spec.model_dump(mode="json", by_alias=True))
        self.builds = {label: {arm: eff.get("engine.build") for arm, eff in effs.items()}
                       for label, effs in per_node.items()}  # fmt: skip
        for arm, nodes in self.allowed.items():
            mine = inputs.effective[arm]
            for node in nodes:
                theirs = per_node[node.label].get(arm, {})
                for key in IDENTITY:
                    if mine.get(key) != theirs.get(key):
                        raise UsageError(
                            f"node {node.label} resolves arm {arm!r} to another {key} "
                            f"({theirs.get(key)}; here: {mine.get(key)}); install the same "
                            "engine build and models on every node, or keep the arm off it "
                            "with placement"
                        )

    def add_hardware(self, inputs: ExperimentInputs) -> None:
        """``node.hardware``: the hardware of the nodes each arm may run on (one name when
        they are alike), so the confound guard sees arms placed on different hardware."""
        for arm, nodes in self.allowed.items():
            names = sorted({str(self.pool.facts[n.label].get("hardware")) for n in nodes})
            inputs.effective[arm][NODE_HARDWARE] = " | ".join(names)

    def record(self) -> RayRecord:
        nodes: dict[str, RayNodeRecord] = {}
        for node in self.pool.nodes:
            facts = self.pool.facts.get(node.label, {})
            host = facts.get("host")
            nodes[node.label] = RayNodeRecord(
                node_id=node.node_id, ip=node.ip, hardware=facts.get("hardware"),
                host=Host.model_validate(host) if host else None, roofline=facts.get("roofline"),
                builds=getattr(self, "builds", {}).get(node.label, {}),
            )  # fmt: skip
        return RayRecord(address=self.target.text, nodes=nodes)

    def close(self) -> None:
        """Stop the node workers (at once when the run was interrupted or failed mid-block)
        and leave or stop the cluster."""
        try:
            self.pool.stop(graceful=not self.interrupted)
        finally:
            self.cluster.close()


def engine_threads(effective: Mapping[str, object], cores: int) -> int | None:
    """The threads a llama-server arm decodes with (``llama.threads``; -1: one per core);
    None for an engine that records none."""
    value = effective.get("llama.threads")
    if value is None:
        return None
    try:
        threads = int(str(value))
    except ValueError:
        return None
    return cores if threads <= 0 else threads


def refuse_oversubscribed(inputs: ExperimentInputs, nodes: int) -> None:
    """A local cluster runs ``nodes`` engines at once on this machine: refuse arms whose
    threads, times the nodes, exceed its cores. llama.cpp's threads wait on each other at every
    step, and oversubscribed they wait for the scheduler instead: on 2 cores, two engines of
    2 threads each decoded at 1.5 tok/s instead of ~60."""
    cores = len(os.sched_getaffinity(0))
    physical = psutil.cpu_count(logical=False) or cores
    for arm, eff in inputs.effective.items():
        threads = engine_threads(eff, physical)
        if threads is not None and threads * nodes > cores:
            raise UsageError(
                f"--ray local:{nodes} runs {nodes} engines at once on this machine's {cores} "
                f"cores, but arm {arm!r} runs llama-server with {threads} thread(s) "
                f"(llama.threads {eff.get('llama.threads')}): together they oversubscribe the "
                f"cores and llama.cpp slows to a crawl; give every arm -t "
                f"{max(1, cores // nodes)} in its flags, or use fewer nodes"
            )


def spread_note(record: RayRecord) -> str:
    """For the manifest's notes: what ran at the same time and what did not."""
    labels = ", ".join(sorted(record.nodes))
    return (
        f"blocks spread over Ray nodes {labels} ({record.address}): the blocks of one round ran "
        "at the same time on different nodes, rounds one after another; arms were compared "
        "within rounds, so a node's own speed is paired out only when every arm visits it"
    )
