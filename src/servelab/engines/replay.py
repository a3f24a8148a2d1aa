"""The ``replay`` engine: recorded llama-server SSE streams served through the real client.

Owns the fake behind the executor seam (hyperfine's mock executor, httpx's ``MockTransport``).
A ``ReplayEngine`` launches nothing and binds nothing: its ``transport()`` is an httpx transport
that answers each request with one recorded byte stream (``NAME.sse``), cut into the reads it
arrived in and, where the recording has them (``NAME.timing.json``), with the same gaps. The
gaps move a ``FakeClock`` forward, divided by the arm's speed factor, so a run over replayed
streams measures exactly what was scripted and its verdicts are deterministic. Everything after
the transport (httpx, ``StreamSession``, the SSE parser, the assembler, rows, analysis) is the real
code. How the streams were recorded: ``tests/fixtures/streams/README.md``.

Scripted faults, per engine (its ``flags``) or per run (a shared ``ReplayLab``): ``--speed F``
(F times as fast as recorded), ``--crash-at N`` (the engine dies during its N-th request:
the stream is cut, later requests are refused and ``check_alive`` raises), ``--fail N,M``
(those requests are answered with HTTP 500). It must not sleep, touch the network or start a
process.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from servelab.client.clock import FakeClock
from servelab.client.transport import (
    Answer,
    Refused,
    Reset,
    SentRequest,
    Transport,
    function_transport,
)
from servelab.engines.base import (
    CounterNames,
    EffectiveEngineConfig,
    EffectiveValue,
    NoLocalProcess,
)
from servelab.engines.prom import MetricsSnapshot
from servelab.errors import EngineCrashedError, EngineStartError, UsageError
from servelab.spec.engine import EngineConfig

DEFAULT_FIRST_S = 0.05  # recordings without timing: first read after this
DEFAULT_GAP_S = 0.01  # ... and one event every this many seconds after it
BASE_URL = "http://replay.invalid"
COUNTERS = ("replay:requests_total", "replay:requests_failed_total", "replay:chunks_total")


@dataclass(frozen=True, slots=True)
class Recording:
    """One recorded response body and how it arrived: ``(t_s, bytes)`` per read."""

    name: str
    reads: tuple[tuple[float, bytes], ...]


def load_recordings(directory: Path) -> tuple[Recording, ...]:
    """Every ``*.sse`` in ``directory``, sorted by name, cut into its recorded reads."""
    paths = sorted(directory.glob("*.sse")) if directory.is_dir() else []
    if not paths:
        raise UsageError(
            f"replay engine: no recorded streams (*.sse) in {directory}; set the engine's "
            "model to a directory of recordings such as tests/fixtures/streams"
        )
    return tuple(_recording(p) for p in paths)


def _recording(path: Path) -> Recording:
    body = path.read_bytes()
    timing = path.with_suffix(".timing.json")
    if timing.exists():
        chunks = json.loads(timing.read_text(encoding="utf-8"))["chunks"]
        reads, at = [], 0
        for t_s, n in chunks:
            reads.append((float(t_s), body[at : at + int(n)]))
            at += int(n)
        return Recording(path.stem, tuple(reads))
    events = [e + b"\n\n" for e in body.split(b"\n\n") if e.strip()]
    return Recording(
        path.stem,
        tuple((DEFAULT_FIRST_S + i * DEFAULT_GAP_S, e) for i, e in enumerate(events)),
    )


@dataclass(frozen=True, slots=True)
class ReplayScript:
    """What an engine does besides replaying: its speed and its scripted faults."""

    speed: float = 1.0
    crash_at: int | None = None  # dies during this request (1-based, counted per engine)
    fail: frozenset[int] = frozenset()  # these requests get HTTP 500

    @classmethod
    def from_flags(cls, flags: tuple[str, ...]) -> ReplayScript:
        values: dict[str, str] = {}
        it = iter(flags)
        for token in it:
            name, eq, value = token.partition("=")
            if name not in ("--speed", "--crash-at", "--fail"):
                raise UsageError(
                    f"replay engine: unknown flag {token!r}; it takes --speed F, "
                    "--crash-at N and --fail N,M"
                )
            values[name] = value if eq else next(it, "")
        try:
            script = cls(
                speed=float(values.get("--speed", 1.0)),
                crash_at=int(values["--crash-at"]) if "--crash-at" in values else None,
                fail=frozenset(int(n) for n in values.get("--fail", "").split(",") if n),
            )
        except ValueError as exc:
            raise UsageError(f"replay engine: bad flag value ({exc})") from exc
        if not script.speed > 0:
            raise UsageError(f"replay engine: --speed must be above 0, got {script.speed:g}")
        return script


@dataclass
class ReplayLab:
    """State shared by every engine of one run: the fake clock and run-wide faults.

    ``create_engine`` is an engine factory for ``Experiment``/``run_bench``; requests are
    numbered across all engines of the lab (1-based), so ``crash_at`` crashes one engine once,
    and a resumed run with the same lab goes on counting.
    """

    clock: FakeClock = field(default_factory=FakeClock)
    crash_at: int | None = None
    fail: frozenset[int] = frozenset()
    served: int = 0
    engines: list[ReplayEngine] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def create_engine(self, config: EngineConfig, log_path: Path) -> ReplayEngine:
        engine = ReplayEngine(config, log_path, lab=self)
        self.engines.append(engine)
        return engine

    def next_request(self) -> int:
        with self.lock:
            self.served += 1
            return self.served


class ReplayEngine(NoLocalProcess):
    """The replay kind (see the module docstring)."""

    kind: ClassVar[str] = "replay"
    keep_alive: ClassVar[bool] = True  # everything goes through the injected transport
    has_logits: ClassVar[bool] = False
    reports_kv: ClassVar[bool] = False
    managed: ClassVar[bool] = False
    process_name: ClassVar[str] = "replay engine"
    counter_names: ClassVar[CounterNames] = CounterNames(extra=COUNTERS)

    def __init__(self, config: EngineConfig, log_path: Path, lab: ReplayLab | None = None) -> None:
        self.config = config
        self.log_path = log_path
        self.lab = lab or ReplayLab()
        self.script = ReplayScript.from_flags(config.flags)
        self.recordings = load_recordings(Path(config.model))
        self.served = 0
        self.counters = dict.fromkeys(COUNTERS, 0.0)
        self.crashed = False
        self.running = False
        self.lock = threading.Lock()

    # -- what the class answers without starting anything ------------------------------------
    @classmethod
    def effective_config(cls, config: EngineConfig, arm_name: str) -> EffectiveEngineConfig:
        script = ReplayScript.from_flags(config.flags)
        values: dict[str, EffectiveValue] = {
            "engine.streams": config.model,
            "replay.speed": script.speed,
            "replay.crash_at": script.crash_at,
            "replay.fail": ",".join(str(n) for n in sorted(script.fail)),
        }
        return EffectiveEngineConfig(values)

    # -- the engine protocol -------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return BASE_URL

    def launch(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        names = ", ".join(r.name for r in self.recordings)
        self.log_path.write_text(f"replay engine: {names}\n", encoding="utf-8")
        self.running = True

    def wait_healthy(self, timeout_s: float) -> None:
        if not self.running:
            raise EngineStartError("replay engine: wait_healthy before launch")

    def describe(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "base_url": BASE_URL,
            "model_name": self.config.model,
            "streams": [r.name for r in self.recordings],
            "speed": self.script.speed,
            "total_slots": self.config.parallel,
        }

    def scrape_metrics(self) -> MetricsSnapshot | None:
        with self.lock:
            samples = dict(self.counters)
        return MetricsSnapshot(samples=samples, kinds=dict.fromkeys(COUNTERS, "counter"))

    def check_alive(self, grace_s: float = 0.0) -> None:
        if self.crashed:
            raise EngineCrashedError(
                f"the replay engine exited (scripted crash at request {self.served}); "
                f"see {self.log_path}"
            )

    def stop(self) -> None:
        self.running = False

    def request_extras(self) -> dict[str, object]:
        return {}

    def request_headers(self) -> dict[str, str]:
        return {}

    def chat_url(self) -> str:
        return BASE_URL + "/v1/chat/completions"

    def completions_url(self) -> str:
        return BASE_URL + "/v1/completions"

    def transport(self) -> Transport:
        return function_transport(self.handle)

    # -- serving -------------------------------------------------------------------------------
    def handle(self, request: SentRequest) -> Answer:
        if self.crashed or not self.running:
            raise Refused("connection refused (the replay engine is not running)")
        with self.lock:
            self.served += 1
            n = self.served
            self.counters["replay:requests_total"] += 1
        run_n = self.lab.next_request()
        if n in self.script.fail or run_n in self.lab.fail:
            with self.lock:
                self.counters["replay:requests_failed_total"] += 1
            return Answer(500, [b'{"error":"scripted failure (replay)"}'])
        crash = n == self.script.crash_at or run_n == self.lab.crash_at
        recording = self.recordings[_pick(request.body, len(self.recordings))]
        return Answer(200, self.deliver(recording, crash))

    def deliver(self, recording: Recording, crash: bool) -> Iterator[bytes]:
        previous = 0.0
        cut = len(recording.reads) // 2 if crash else None
        for i, (t_s, data) in enumerate(recording.reads):
            if i == cut:
                self.crashed = True
                raise Reset("connection reset (scripted crash of the replay engine)")
            self.lab.clock.advance(max(0.0, t_s - previous) / self.script.speed)
            previous = t_s
            with self.lock:
                self.counters["replay:chunks_total"] += 1
            yield data


def _pick(body: bytes, n: int) -> int:
    """The same prompt always gets the same recording (a paired design across arms)."""
    try:
        payload = json.loads(body)  # JSON boundary: a request body the client built
        key = json.dumps(payload.get("messages") or payload.get("prompt"), sort_keys=True)
    except (ValueError, AttributeError):
        key = body.decode("utf-8", "replace")
    return int(hashlib.sha256(key.encode()).hexdigest(), 16) % n
