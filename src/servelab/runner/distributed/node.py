"""What runs on a Ray node: one worker that starts engines there, one at a time, and streams
each finished request back to the driver as it completes.

Owns ``NodeWorker`` (wrapped as a Ray actor by ``actor_class``; plain Python, so it is tested
and type-checked like the rest): it takes the node's lock for its whole life (so the node runs
one engine at a time, whoever asks), reports the node's facts (host, hardware, each arm's
engine build as resolved there), and runs blocks with the same ``BlockExecutor`` as a run on one
machine, into a scratch run directory of its own. ``run_block`` is a generator: Ray streams what
it yields to the driver (``num_returns="streaming"``), in order:

- ``("start", EngineStarted)`` after each engine start;
- ``("row", RequestRow)`` for each finished request, as it finishes;
- ``("done", BlockDone)`` at the end: the block's counter deltas and the files the block wrote
  (engine log, the block's cache and client-load records), to be placed in the driver's run.

A node that dies mid-block leaves the driver with every row it already streamed; the driver
runs the rest of the block elsewhere (``distributed.spread``).
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from servelab.engines.prom import counter_deltas
from servelab.errors import EnvironmentProblem
from servelab.runner.lifecycle import (
    Block,
    BlockExecutor,
    EngineStarted,
    Lifecycle,
    Seam,
    slo_check,
)
from servelab.runner.preflight import MachineLock
from servelab.runner.progress import NullReporter
from servelab.spec.slo import parse_slos
from servelab.store import RequestRow
from servelab.store.rundir import RunDir
from servelab.workloads import Workload

Event = tuple[str, Any]


@dataclass(frozen=True, slots=True)
class BlockDone:
    """The end of one block on a node: its counter deltas (None: the engine has none) and the
    files the block wrote, by path relative to the run directory."""

    deltas: dict[str, float] | None
    files: dict[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RunSettings:
    """What every block of a run needs on a node, sent once when the worker starts."""

    run_id: str
    workload: Workload
    warmup: int
    timeout_s: float
    startup_timeout_s: dict[str, float]
    slos: tuple[str, ...] = ()


class _Sink:
    """The executor's row writer on a node: each row goes to the stream, not to a file."""

    def __init__(self, out: queue.Queue[Event]) -> None:
        self.out = out

    def write(self, row: RequestRow | Mapping[str, object]) -> None:
        self.out.put(("row", row))


class NodeWorker:
    """One node's worker: its lock, its facts, and its blocks, one at a time."""

    def __init__(self, label: str, settings: RunSettings, lock_path: str | None) -> None:
        self.label = label
        self.settings = settings
        self.lock = MachineLock(Path(lock_path)) if lock_path else MachineLock()
        self.root = Path(tempfile.mkdtemp(prefix=f"servelab-{label}-")) / settings.run_id
        self.root.mkdir(parents=True)
        holder = self.lock.acquire(self.root)
        if holder is not None:
            raise EnvironmentProblem(
                f"node {label} is busy: its machine lock ({self.lock.path}) is held by {holder}"
            )
        self.run = RunDir(self.root)
        self.events: queue.Queue[Event] = queue.Queue()
        seam = Seam()
        self.executor = BlockExecutor(
            self.run, settings.workload, seam, Lifecycle(frozenset(), seam), NullReporter(),
            warmup=settings.warmup, timeout_s=settings.timeout_s,
            startup_timeout_s=lambda arm: settings.startup_timeout_s.get(arm, 300.0),
            on_start=self._started, slo_check=slo_check(parse_slos(settings.slos)),
        )  # fmt: skip
        self._sent: dict[str, tuple[int, int]] = {}  # file -> (size, mtime_ns) already sent
        # One long-lived thread runs every block: an engine is started from it, and Linux
        # sends an engine its parent-death signal when the *thread* that started it ends, so
        # a thread per block would stop a running engine between blocks.
        self._jobs: queue.Queue[Callable[[], None]] = queue.Queue()
        threading.Thread(target=self._serve, name="servelab-node", daemon=True).start()

    def _serve(self) -> None:
        while True:
            self._jobs.get()()

    def facts(self, hardware: str) -> dict[str, Any]:
        """The node as the manifest records it: host facts and the hardware ``hardware``
        (the spec's ``hardware:``) resolves to here."""
        import dataclasses

        from servelab.runner.hardware import resolve_hardware
        from servelab.runner.host import host_facts

        host = host_facts()
        hw = resolve_hardware(hardware, measure_cpu=True)
        return {
            "label": self.label,
            "pid": os.getpid(),
            "host": host.model_dump(mode="json"),
            "hardware": hardware_label(hw, host.cpu_model, host.cpu_count_logical),
            "roofline": dataclasses.asdict(hw) if hw is not None else None,
        }

    def effective(self, spec: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """Each arm's effective configuration as it resolves on this node (its engine build
        and binary, its model file): the driver refuses a node that would run something else."""
        from servelab.runner.experiment_inputs import ExperimentInputs
        from servelab.spec.experiment import ExperimentSpec

        inputs = ExperimentInputs.resolve(ExperimentSpec.model_validate(spec), spec, None)
        return {arm: dict(eff) for arm, eff in inputs.effective.items()}

    def _started(self, start: EngineStarted) -> None:
        self.events.put(("start", start))

    def run_block(self, block: Block, done: set[str]) -> Iterator[Event]:
        """Run ``block``'s requests not in ``done``; yield its events as they happen."""
        self.executor.done = set(done)
        result: dict[str, Any] = {}

        def work() -> None:
            try:
                counters = self.executor.run_block(block, _Sink(self.events))  # type: ignore[arg-type]
                deltas = None
                if counters is not None and counters.before and counters.after:
                    deltas = counter_deltas(counters.before, counters.after)
                result["deltas"] = deltas
            except BaseException as exc:  # re-raised in the generator, for the driver
                result["error"] = exc
            finally:
                self.events.put(("end", None))

        self._jobs.put(work)
        while True:
            kind, value = self.events.get()
            if kind == "end":
                break
            yield kind, value
        if "error" in result:
            raise result["error"]
        yield "done", BlockDone(result.get("deltas"), self._new_files())

    def _new_files(self) -> dict[str, bytes]:
        """Files under the scratch run directory written since the last block."""
        out: dict[str, bytes] = {}
        for path in sorted(self.root.rglob("*")):
            if not path.is_file():
                continue
            rel = str(path.relative_to(self.root))
            st = path.stat()
            key = (st.st_size, st.st_mtime_ns)
            if self._sent.get(rel) == key:
                continue
            self._sent[rel] = key
            with contextlib.suppress(OSError):
                out[rel] = path.read_bytes()
        return out

    def stop(self) -> None:
        """Stop the engine it runs, if any, and give the node's lock back."""
        done = threading.Event()

        def stop_engine() -> None:
            try:
                self.executor.stop()
            finally:
                done.set()

        self._jobs.put(stop_engine)  # on the thread that started it
        try:
            done.wait(timeout=120)
        finally:
            self.lock.release()
            shutil.rmtree(self.root.parent, ignore_errors=True)  # every file was sent

    def ping(self) -> float:
        """This node's wall clock (for the driver's offset estimate)."""
        import time

        return time.time()


def hardware_label(hw: Any, cpu_model: str, cpus: int | None) -> str:
    """What ``node.hardware`` says: a catalog entry's name (a GPU), else the CPU itself
    (``cpu: <model> x<logical cpus>``): every measured CPU shares the catalog name
    ``host-cpu (measured)``, which would make two different machines look alike."""
    if hw is not None and getattr(hw, "source", "") != "measured":
        return str(hw.name)
    return f"cpu: {cpu_model} x{cpus or '?'}"


def actor_class(ray: Any) -> Any:
    """``NodeWorker`` as a Ray actor class: no CPU reserved (the engine it starts uses the
    node's cores, and placement pins it with a sliver of the node's own resource), one task at
    a time, never restarted by Ray (the driver decides where a lost block goes)."""
    return ray.remote(num_cpus=0, max_restarts=0, max_task_retries=0)(NodeWorker)
