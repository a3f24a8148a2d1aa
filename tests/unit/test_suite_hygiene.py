"""The test suite reads only files inside the repository and loads only the models it lists.

A clone has nothing beside it, and ``make test`` pulls exactly ``tests/models.txt``: a test that
reached for a folder beside the clone or for a model pulled by hand once passed CI and failed
everywhere else. These checks read the test sources themselves, so such a test fails here first.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from servelab.models import known_model_names
from tests.models import MODELS_LIST, TEST_MODELS, listed_model, read_models_list

REPO = Path(__file__).resolve().parents[2]
TESTS = REPO / "tests"
SYSTEM_INTERFACES = ("/proc/", "/sys/", "/dev/")


def _test_sources() -> list[Path]:
    """Every test source but this one, whose own probes name the very things it looks for."""
    return sorted(
        p
        for p in TESTS.rglob("*.py")
        if "fixtures" not in p.relative_to(TESTS).parts and p.name != Path(__file__).name
    )


def _text_files(root: Path) -> list[Path]:
    suffixes = {".py", ".yaml", ".yml", ".json", ".jsonl", ".csv", ".txt", ".md", ".toml"}
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in suffixes)


def _levels_up(node: ast.AST) -> int | None:
    """How far a ``Path(__file__)...parent / parents[N]`` chain climbs; None if not such a chain."""
    if isinstance(node, ast.Call):
        if isinstance(node.func, ast.Attribute) and node.func.attr in {"resolve", "absolute"}:
            return _levels_up(node.func.value)
        is_path = isinstance(node.func, ast.Name) and node.func.id == "Path"
        is_file = bool(node.args) and isinstance(node.args[0], ast.Name)
        return 0 if is_path and is_file and node.args[0].id == "__file__" else None  # type: ignore[attr-defined]
    if isinstance(node, ast.Attribute) and node.attr == "parent":
        inner = _levels_up(node.value)
        return None if inner is None else inner + 1
    if (
        isinstance(node, ast.Subscript)
        and isinstance(node.value, ast.Attribute)
        and node.value.attr == "parents"
        and isinstance(node.slice, ast.Constant)
    ):
        inner = _levels_up(node.value.value)
        return None if inner is None else inner + int(node.slice.value) + 1
    return None


def _path_like(text: str) -> bool:
    return len(text) > 1 and not any(ch.isspace() for ch in text.strip())


def _string_problems(text: str) -> list[str]:
    if not _path_like(text):
        return []
    if "../" in text or text.startswith("~"):
        return [f"{text!r} leaves the repository"]
    outside = text.startswith("/") and not text.startswith(SYSTEM_INTERFACES)
    if outside and Path(text).exists():
        return [f"{text!r} is a file on this machine, outside the repository"]
    return []


def _escapes(source: str, rel: Path) -> list[str]:
    """Every place in a test source at ``rel`` (from the repo root) that names a path outside it."""
    depth = len(rel.parts)  # levels from the file up to the repository root
    found = []
    for node in ast.walk(ast.parse(source)):
        where = f"{rel}:{getattr(node, 'lineno', '?')}"
        levels = _levels_up(node)
        if levels is not None and levels > depth:
            found.append(f"{where}: Path(__file__) climbs {levels} levels, above the repository")
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            found += [f"{where}: {problem}" for problem in _string_problems(node.value)]
        if isinstance(node, ast.Attribute) and node.attr in {"home", "expanduser"}:
            found.append(f"{where}: .{node.attr}() reads outside the repository")
    return found


def test_no_test_names_a_path_outside_the_repository() -> None:
    found = [
        hit
        for path in _test_sources()
        for hit in _escapes(path.read_text(encoding="utf-8"), path.relative_to(REPO))
    ]
    assert found == [], "tests must read only files inside the repository:\n" + "\n".join(found)


def test_no_file_under_tests_points_at_shared() -> None:
    pattern = re.compile(r"\.\.[/]shared|shared[/]reference")  # the folder CI lays beside a clone
    hits = [
        f"{p.relative_to(REPO)}:{n}"
        for p in _text_files(TESTS)
        for n, line in enumerate(p.read_text("utf-8", errors="replace").splitlines(), 1)
        if pattern.search(line)
    ]
    assert hits == [], f"copy the file into tests/fixtures/ instead: {hits}"


def test_the_escape_check_catches_what_it_must() -> None:
    source = (
        'A = Path(__file__).resolve().parents[2].parent / "shared"\n'
        'B = Path(__file__).parents[1] / "fixtures"\n'
        'C = "../outside/x.csv"\n'
        "D = Path.home()\n"
        "E = Path(__file__).parent.parent.parent.parent\n"
    )
    hits = _escapes(source, Path("tests/unit/test_probe.py"))
    assert sorted(int(h.split(":")[1]) for h in hits) == [1, 3, 4, 5], hits


def _named_models(paths: list[Path]) -> dict[str, list[str]]:
    names = known_model_names()
    used: dict[str, list[str]] = {}
    for path in paths:
        text = path.read_text("utf-8", errors="replace")
        for name in names:
            if re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text):
                used.setdefault(name, []).append(str(path.relative_to(REPO)))
    return used


def test_every_model_a_test_loads_is_in_the_list() -> None:
    used = _named_models(_test_sources() + sorted((REPO / "examples").glob("*.yaml")))
    outside = {name: where for name, where in used.items() if name not in TEST_MODELS}
    listed = MODELS_LIST.relative_to(REPO)
    assert outside == {}, f"add these to {listed} (make test pulls it): {outside}"


def test_a_model_outside_the_list_fails_naming_the_list() -> None:
    with pytest.raises(pytest.fail.Exception, match=r"tests/models\.txt"):
        listed_model("not-a-listed-model")
    assert listed_model(TEST_MODELS[0]) == TEST_MODELS[0]


def test_models_list_ignores_comments(tmp_path: Path) -> None:
    path = tmp_path / "models.txt"
    path.write_text("# header\n\nalpha  # trailing\n  beta\n", encoding="utf-8")
    assert read_models_list(path) == ("alpha", "beta")


def test_make_test_pulls_every_listed_model() -> None:
    dry = subprocess.run(
        ["make", "-n", "-B", "test"], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert dry.returncode == 0, dry.stderr
    pulled = re.findall(r"models pull (\S+)", dry.stdout)
    assert sorted(pulled) == sorted(TEST_MODELS), dry.stdout


def test_pytest_stops_at_once_when_a_listed_model_is_missing(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERVELAB_")}
    env["SERVELAB_CACHE_DIR"] = str(tmp_path / "empty-cache")
    target = "tests/integration/test_kv_prediction.py"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", target],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 3, done.stdout + done.stderr
    lines = [line for line in (done.stdout + done.stderr).splitlines() if "make test" in line]
    assert len(lines) == 1 and "gemma-3-270m" in lines[0], done.stdout
    assert "error" not in done.stdout.lower() and "passed" not in done.stdout
