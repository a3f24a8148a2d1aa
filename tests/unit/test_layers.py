"""Dependencies point inward (ARCHITECTURE.md): checked on the import statements themselves."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "servelab"

PURE = (
    "spec", "workloads", "stats", "theory", "scoring", "records", "metrics", "rows", "errors",
    "redact", "userfiles",
)  # fmt: skip
PURE_FILES = ("client/sse.py", "client/assemble.py", "client/payload.py", "engines/prom.py")
EFFECTS = ("engines", "client", "store", "models", "importers")
ORCHESTRATION = ("runner", "report")
FORBIDDEN_IN_PURE = {"asyncio", "httpx", "subprocess", "matplotlib", "socket", "psutil"}


def _module_files(part: str) -> list[Path]:
    path = SRC / part
    if path.is_dir():
        return sorted(path.rglob("*.py"))
    return [f for f in (SRC / f"{part}.py",) if f.exists()]


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def _servelab_parts(names: set[str]) -> set[str]:
    return {n.split(".")[1] for n in names if n.startswith("servelab.") and n.count(".") >= 1}


def _pure_files() -> list[Path]:
    files = [f for part in PURE for f in _module_files(part)]
    return files + [SRC / f for f in PURE_FILES]


@pytest.mark.parametrize("path", _pure_files(), ids=lambda p: str(p.relative_to(SRC)))
def test_pure_core_does_no_io(path: Path) -> None:
    imported = {n.split(".")[0] for n in _imports(path)}
    assert not imported & FORBIDDEN_IN_PURE, f"{path.name} imports {imported & FORBIDDEN_IN_PURE}"
    outward = _servelab_parts(_imports(path)) & {*EFFECTS, *ORCHESTRATION, "cli"}
    allowed = {"client"} if str(path).endswith(PURE_FILES) else set()
    assert outward <= allowed, f"{path.name} imports outer layers {outward - allowed}"


@pytest.mark.parametrize("part", EFFECTS)
def test_effects_do_not_import_orchestration(part: str) -> None:
    for path in _module_files(part):
        outward = _servelab_parts(_imports(path)) & {*ORCHESTRATION, "cli"}
        assert not outward, f"{path.relative_to(SRC)} imports {outward}"


def test_only_client_speaks_http() -> None:
    for path in SRC.rglob("*.py"):
        if path.relative_to(SRC).parts[0] == "client":
            continue
        assert "httpx" not in {n.split(".")[0] for n in _imports(path)}, path.relative_to(SRC)


def test_nothing_uses_a_shell() -> None:
    for path in SRC.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "shell=True" not in text and "os.system(" not in text, path.relative_to(SRC)
