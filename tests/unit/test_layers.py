"""Dependencies point inward (ARCHITECTURE.md "Layers"): checked on the import statements.

The import graph is built from the source (every ``import`` and ``from ... import`` anywhere in a
file, inside functions and ``TYPE_CHECKING`` blocks too) between servelab's top-level packages
and top-level modules. It must be acyclic, every edge must point to the same layer or one below,
and every package must have a declared layer. The pure core does no I/O, only ``client/`` speaks
HTTP, and no code outside ``engines/``, ``spec/`` and ``cli/`` names a concrete engine class or
compares a value with an engine kind.
"""

from __future__ import annotations

import ast
import itertools
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "servelab"

# The layers, outermost first: a part may import its own layer or one below it, never above.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("__main__",),
    ("cli",),
    ("prediction",),  # the library function behind `servelab predict`: runner.hardware + theory
    ("runner",),
    ("report",),
    ("analysis",),
    ("engines", "client", "store", "importers", "models", "paths", "rows"),  # rows: store shim
    (
        "spec", "workloads", "scoring", "stats", "theory", "records", "metrics", "errors", "redact",
        "userfiles", "lazy",  # lazy: heavy third-party imports deferred (servelab/lazy.py)
    ),
)  # fmt: skip
RANK = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}

PURE = LAYERS[-1]
PURE_FILES = ("client/sse.py", "client/assemble.py", "client/payload.py", "engines/prom.py")
EFFECTS = LAYERS[-2]
ORCHESTRATION = ("runner", "report")
FORBIDDEN_IN_PURE = {"asyncio", "httpx", "subprocess", "matplotlib", "socket", "psutil"}
ROOT_FILES = ("__init__.py",)  # the lazy public API: imports nothing at import time
KIND_PLACES = ("engines", "spec", "cli")  # where engine kinds and classes may be named


def _part(path: Path) -> str:
    rel = path.relative_to(SRC).parts
    return rel[0] if len(rel) > 1 else rel[0].removesuffix(".py")


def _source_files() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if p.relative_to(SRC).parts != ROOT_FILES)


def _module_files(part: str) -> list[Path]:
    path = SRC / part
    if path.is_dir():
        return sorted(path.rglob("*.py"))
    return [f for f in (SRC / f"{part}.py",) if f.exists()]


@cache
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"))


def _absolute(path: Path, node: ast.ImportFrom) -> str:
    """The absolute module name of a ``from`` import (relative ones resolved)."""
    if node.level == 0:
        return node.module or ""
    package = ["servelab", *path.relative_to(SRC).parent.parts]
    base = package[: len(package) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _is_part(name: str) -> bool:
    return (SRC / name).is_dir() or (SRC / f"{name}.py").is_file()


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = _absolute(path, node)
            names.add(module)
            if module == "servelab":  # from servelab import cli: a part imported by name
                names.update(f"servelab.{a.name}" for a in node.names if _is_part(a.name))
    return names


def _servelab_parts(names: set[str]) -> set[str]:
    parts = {n.split(".")[1] for n in names if n.startswith("servelab.")}
    return {p for p in parts if p != "__version__"}


def _edges() -> dict[tuple[str, str], list[str]]:
    """(importer, imported) -> the files behind that edge."""
    edges: dict[tuple[str, str], list[str]] = {}
    for path in _source_files():
        source = _part(path)
        for target in _servelab_parts(_imports(path)) - {source}:
            edges.setdefault((source, target), []).append(str(path.relative_to(SRC)))
    return edges


def _parts() -> set[str]:
    return {_part(p) for p in _source_files()}


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as [a, b, ..., a], or None when it is acyclic."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_every_part_has_a_layer() -> None:
    missing = _parts() - set(RANK)
    assert not missing, f"declare a layer for {sorted(missing)} in LAYERS (ARCHITECTURE.md)"


def test_the_package_graph_is_acyclic() -> None:
    edges = _edges()
    graph: dict[str, set[str]] = {}
    for source, target in edges:
        graph.setdefault(source, set()).add(target)
    cycle = _find_cycle(graph)
    if cycle:
        steps = [f"{a} -> {b} ({', '.join(edges[a, b])})" for a, b in itertools.pairwise(cycle)]
        pytest.fail("import cycle between servelab's packages:\n  " + "\n  ".join(steps))


def test_every_edge_points_inward() -> None:
    upward = [
        f"{source} -> {target} ({', '.join(files)})"
        for (source, target), files in sorted(_edges().items())
        if source in RANK and target in RANK and RANK[target] < RANK[source]
    ]
    assert not upward, "imports of an outer layer:\n  " + "\n  ".join(upward)


def test_the_cycle_finder_reports_a_cycle() -> None:
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"r": {"p"}, "p": {"r"}}) == ["p", "r", "p"]


def test_code_inside_servelab_does_not_import_the_public_facade() -> None:
    """``from servelab import X`` inside the package would hide the real edge (and can cycle
    through the lazy ``__getattr__``); only ``__version__`` comes from the root."""
    bad = []
    for path in _source_files():
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.ImportFrom) and _absolute(path, node) == "servelab":
                names = {a.name for a in node.names} - {"__version__"}
                names -= {n for n in names if _is_part(n)}
                bad += [f"{path.relative_to(SRC)}: {n}" for n in sorted(names)]
    assert not bad, "import these from their own modules: " + ", ".join(bad)


def test_import_servelab_is_cheap() -> None:
    code = "import sys, servelab; print(sorted(m for m in sys.modules if m.startswith('servelab')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['servelab']"


def test_root_api_names_real_objects() -> None:
    import servelab

    for name in servelab.__all__:
        assert getattr(servelab, name) is not None, name
    with pytest.raises(AttributeError):
        _ = servelab.no_such_name  # type: ignore[attr-defined]


BENCHMARKS = SRC.parents[1] / "benchmarks"
BELOW_THE_API = ("client_overhead.py",)  # times the client's own pieces (see its docstring)


@pytest.mark.parametrize("path", sorted(BENCHMARKS.glob("*.py")), ids=lambda p: p.name)
def test_benchmarks_use_the_public_api(path: Path) -> None:
    import servelab

    tree = _tree(path)
    inner = sorted(n for n in _imports(path) if n.startswith("servelab."))
    if path.name not in BELOW_THE_API:
        assert not inner, f"{path.name}: use `from servelab import ...`, not {inner}"
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "servelab":
            names = {a.name for a in node.names}
            assert names <= set(servelab.__all__), f"not public: {names - set(servelab.__all__)}"


def _pure_files() -> list[Path]:
    files = [f for part in PURE for f in _module_files(part)]
    return files + [SRC / f for f in PURE_FILES]


@pytest.mark.parametrize("path", _pure_files(), ids=lambda p: str(p.relative_to(SRC)))
def test_pure_core_does_no_io(path: Path) -> None:
    imported = {n.split(".")[0] for n in _imports(path)}
    assert not imported & FORBIDDEN_IN_PURE, f"{path.name} imports {imported & FORBIDDEN_IN_PURE}"
    outward = _servelab_parts(_imports(path)) & {*EFFECTS, *ORCHESTRATION, "analysis", "cli"}
    allowed = {"client"} if str(path).endswith(PURE_FILES) else set()
    assert outward <= allowed, f"{path.name} imports outer layers {outward - allowed}"


def test_analysis_is_pure() -> None:
    for path in _module_files("analysis"):
        imported = {n.split(".")[0] for n in _imports(path)}
        assert not imported & FORBIDDEN_IN_PURE, f"{path.relative_to(SRC)} imports I/O modules"


@pytest.mark.parametrize("part", EFFECTS)
def test_effects_do_not_import_orchestration(part: str) -> None:
    for path in _module_files(part):
        outward = _servelab_parts(_imports(path)) & {*ORCHESTRATION, "analysis", "cli"}
        assert not outward, f"{path.relative_to(SRC)} imports {outward}"


def test_only_client_speaks_http() -> None:
    """httpx is the client's; an engine may name its transport type (``engines/replay.py``
    serves recorded streams through an httpx transport, so the real client code reads them)."""
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC)
        if rel.parts[0] == "client" or rel.as_posix() == "engines/replay.py":
            continue
        assert "httpx" not in {n.split(".")[0] for n in _imports(path)}, rel


def test_nothing_uses_a_shell() -> None:
    for path in SRC.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "shell=True" not in text and "os.system(" not in text, path.relative_to(SRC)


# --- engine knowledge stays in engines/ ---------------------------------------------------------


def _engine_classes() -> dict[str, str]:
    """Concrete engine classes (a class in engines/ with a string ``kind``): name -> kind."""
    found = {}
    for path in _module_files("engines"):
        for cls in (n for n in ast.walk(_tree(path)) if isinstance(n, ast.ClassDef)):
            for stmt in cls.body:
                target = stmt.target if isinstance(stmt, ast.AnnAssign) else None
                if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
                    target = stmt.targets[0]
                value = stmt.value if isinstance(stmt, ast.Assign | ast.AnnAssign) else None
                is_kind = isinstance(target, ast.Name) and target.id == "kind"
                if is_kind and isinstance(value, ast.Constant) and isinstance(value.value, str):
                    found[cls.name] = value.value
    return found


def _kinds() -> set[str]:
    from servelab.spec.engine import ENGINE_KINDS

    return set(ENGINE_KINDS) | set(_engine_classes().values())


def _strings(node: ast.expr) -> Iterator[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        yield node.value
    elif isinstance(node, ast.Tuple | ast.List | ast.Set):
        for elt in node.elts:
            yield from _strings(elt)


def _kind_compares(path: Path, kinds: set[str]) -> Iterator[str]:
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Compare):
            for operand in (node.left, *node.comparators):
                for text in _strings(operand):
                    if text in kinds:
                        yield f"{path.relative_to(SRC)}:{node.lineno} compares with {text!r}"
        elif isinstance(node, ast.MatchValue):
            for text in _strings(node.value):
                if text in kinds:
                    yield f"{path.relative_to(SRC)}:{node.lineno} matches {text!r}"


def _outside_kind_places() -> list[Path]:
    return [p for p in SRC.rglob("*.py") if p.relative_to(SRC).parts[0] not in KIND_PLACES]


def test_engine_kinds_are_known() -> None:
    from servelab.spec.engine import ENGINE_KINDS

    assert {"llamacpp", "openai", "replay"} <= set(ENGINE_KINDS)
    assert set(_engine_classes().values()) <= set(ENGINE_KINDS), "add the kind to spec.engine"


def test_no_engine_kind_compared_outside_engines() -> None:
    kinds = _kinds()
    found = sorted(hit for path in _outside_kind_places() for hit in _kind_compares(path, kinds))
    assert not found, "ask the engine class instead (engine_class(kind).<attribute>):\n  " + (
        "\n  ".join(found)
    )


def test_no_concrete_engine_named_outside_engines() -> None:
    classes = set(_engine_classes())
    found = []
    for path in _outside_kind_places():
        for node in ast.walk(_tree(path)):
            name = None
            if isinstance(node, ast.Name):
                name = node.id
            elif isinstance(node, ast.Attribute):
                name = node.attr
            elif isinstance(node, ast.alias):
                name = node.name.rsplit(".", 1)[-1]
            if name in classes:
                found.append(f"{path.relative_to(SRC)}:{getattr(node, 'lineno', '?')} {name}")
    assert not found, "use the registry (engines.registry.engine_class):\n  " + "\n  ".join(found)


def test_the_kind_checks_see_a_kind_compare() -> None:
    sample = SRC / "spec" / "engine.py"  # holds kind compares in validators: the test sees them
    assert list(_kind_compares(sample, {"llamacpp", "openai"}))
