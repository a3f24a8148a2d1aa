"""Prometheus text exposition -> flat samples, and counter deltas over a run.

Owns reading ``/metrics`` bodies with prometheus_client's own parser. Pure functions over text
and dicts; fetching the text is the engine's job.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True, slots=True)
class MetricsSnapshot:
    """Samples keyed ``name{label="v",...}``; ``kinds`` maps each family to its TYPE."""

    samples: dict[str, float]
    kinds: dict[str, str]


def sample_key(name: str, labels: dict[str, str]) -> str:
    if not labels:
        return name
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{name}{{{inner}}}"


def parse_metrics(text: str) -> MetricsSnapshot:
    samples: dict[str, float] = {}
    kinds: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        kinds[family.name] = family.type
        for s in family.samples:
            samples[sample_key(s.name, dict(s.labels))] = float(s.value)
            kinds.setdefault(s.name, family.type)
    return MetricsSnapshot(samples=samples, kinds=kinds)


def counter_deltas(before: MetricsSnapshot, after: MetricsSnapshot) -> dict[str, float]:
    """``after - before`` for every counter sample present in ``after``.

    A counter that went down means the engine restarted between the snapshots; its delta is then
    the ``after`` value (a restart resets counters to zero).
    """
    out: dict[str, float] = {}
    for key, value in after.samples.items():
        name = key.split("{", 1)[0]
        if after.kinds.get(name) != "counter":
            continue
        prior = before.samples.get(key, 0.0)
        out[key] = value - prior if value >= prior else value
    return out
