"""The report's "Environment" section, from the run's manifest.

Owns how a run's identity, host and engines are shown: run id, kind, servelab version,
creation time and spec path; the host facts recorded at run start (or "not recorded" for an
import); an engine table from each arm's recorded engine descriptions (and "CHANGED between
starts" when the build differed); for an endpoint servelab connected to, the engine it was
identified as (``describe()["identity"]``, ``engines.identify``): version, model, whether it
exposed /metrics, its spec-decode counters and which probe decided; an import's source files
and notes. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping

from servelab.report.blocks import Block, KeyValues, Para, Table
from servelab.store import Manifest


def host_items(manifest: Manifest) -> list[tuple[str, str]]:
    identity = (
        ("run id", manifest.run_id), ("kind", manifest.kind),
        ("servelab version", manifest.servelab_version), ("created utc", manifest.created_utc),
        ("spec path", manifest.spec_path),
    )  # fmt: skip
    items = [(k, str(v)) for k, v in identity if v]
    host = manifest.host
    if host is None:
        return [*items, ("host", "not recorded in the manifest (imported runs carry none)")]
    mem = host.memory_total_bytes
    gpu_text = "; ".join(f"{g.name} (driver {g.driver}, {g.memory or '?'})" for g in host.gpus)
    load = [f"{x:.2f}" for x in host.loadavg]
    physical = host.cpu_count_physical if host.cpu_count_physical is not None else "?"
    logical = host.cpu_count_logical if host.cpu_count_logical is not None else "?"
    facts = [
        ("CPU", host.cpu_model), ("cores", f"{physical} physical, {logical} logical"),
        ("memory", f"{mem / 2**30:.1f} GiB" if mem else None),
        ("OS", host.os), ("Python", host.python), ("hostname", host.hostname),
        ("GPU", gpu_text or "none detected"),
        ("load average at start (1, 5, 15 min)", " / ".join(load) if load else None),
    ]  # fmt: skip
    return items + [(k, str(v)) for k, v in facts if v]


def engine_table(manifest: Manifest) -> Table | None:
    rows = []
    for arm, entry in manifest.arms.items():
        ds = [d for d in entry.describes if d]
        if not ds:
            continue
        d = ds[0]
        builds = list(
            dict.fromkeys(str(x.get("build_info") or x.get("version") or "?") for x in ds)
        )
        build = builds[0] if len(builds) == 1 else "CHANGED between starts: " + ", ".join(builds)
        rows.append((
            arm, str(d.get("kind", "?")), build, str(d.get("commit") or "-"),
            str(d.get("binary_sha256") or "-")[:12], str(d.get("model_name") or "-"),
            str(d.get("model_sha256") or "-"), str(len(ds)),
        ))  # fmt: skip
    if not rows:
        return None
    headers = ("arm", "engine", "build", "commit", "binary sha256", "model", "model sha256",
               "starts")  # fmt: skip
    return Table(headers, tuple(rows))


def _identity_text(identity: Mapping[str, object]) -> str:
    version = identity.get("version")
    head = f"{identity.get('engine') or 'unknown'} {version}" if version else str(
        identity.get("engine") or "unknown")  # fmt: skip
    counters = identity.get("spec_decode_counters")
    spec = ", ".join(map(str, counters)) if isinstance(counters, list) and counters else "none"
    parts = [
        head,
        f"model {identity.get('model') or '-'}",
        "/metrics: " + ("yes" if identity.get("metrics") else "no"),
        f"spec-decode counters: {spec}",
        f"evidence: {identity.get('evidence') or '-'}",
    ]
    return "; ".join(parts)


def identity_items(manifest: Manifest) -> list[tuple[str, str]]:
    """What each endpoint arm was identified as (its first start that recorded an identity);
    "CHANGED between starts" when the engine or its version differed between starts."""
    items = []
    for arm, entry in manifest.arms.items():
        found = [d["identity"] for d in entry.describes if isinstance(d.get("identity"), dict)]
        if not found:
            continue
        first = found[0]
        assert isinstance(first, dict)  # the filter above; for mypy
        text = _identity_text(first)
        seen = {(str(i.get("engine")), str(i.get("version"))) for i in found if isinstance(i, dict)}
        if len(seen) > 1:
            text = "CHANGED between starts: " + ", ".join(" ".join(x) for x in sorted(seen))
        items.append((f"{arm}: endpoint identified as", text))
    return items


def import_items(manifest: Manifest) -> list[tuple[str, str]]:
    source = manifest.source
    items = [("imported from", source.format)] if source is not None and source.format else []
    for f in source.files if source is not None else ():
        items.append(("file", f"{f.path} (sha256 {f.sha256})"))
    items += [("note", n) for n in manifest.notes]
    return items


def environment_blocks(manifest: Manifest) -> tuple[Block, ...]:
    blocks: list[Block] = [KeyValues(tuple(host_items(manifest)))]
    engines = engine_table(manifest)
    blocks.append(engines if engines else Para("No engine description recorded."))
    identities = identity_items(manifest)
    if identities:
        blocks.append(KeyValues(tuple(identities)))
    imported = import_items(manifest)
    if imported:
        blocks.append(KeyValues(tuple(imported)))
    return tuple(blocks)
