"""The package's layering: no import cycle, data never reaches train, only tracking imports mlflow, --help
shows only user options."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import ssimctr

ROOT = Path(ssimctr.__file__).parent


def module_of(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The ssimctr modules `path` imports anywhere: top level, inside functions, TYPE_CHECKING blocks."""
    name = module_of(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            source = ".".join(part for part in (base, node.module) if part)
            found.add(source)
            found.update(f"{source}.{alias.name}" for alias in node.names)
    return found & modules - {name}


def import_graph() -> dict[str, set[str]]:
    paths = sorted(ROOT.rglob("*.py"))
    modules = {module_of(path) for path in paths}
    return {module_of(path): imports_of(path, modules) for path in paths}


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    stack = list(graph[start])
    while stack:
        module = stack.pop()
        if module not in seen:
            seen.add(module)
            stack.extend(graph[module])
    return seen


def test_the_graph_sees_lazy_imports():
    assert "ssimctr.tracking.mlflow_tracker" in reachable(import_graph(), "ssimctr.tracking")


def test_no_module_imports_one_that_imports_it_back():
    graph = import_graph()
    cycles = sorted(module for module in graph if module in reachable(graph, module))
    assert not cycles


def test_data_never_imports_train():
    graph = import_graph()
    for module in (m for m in graph if m.startswith("ssimctr.data")):
        assert not {m for m in reachable(graph, module) if m.startswith("ssimctr.train")}, module


def external_imports(path: Path) -> set[str]:
    """The top-level names of the packages `path` imports anywhere (top level, functions, TYPE_CHECKING)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module.split(".")[0])
    return found


def test_only_the_tracking_package_imports_mlflow():
    """MLflow stays behind ssimctr.tracking (the Tracker interface, run queries, logged models)."""
    importers = sorted(module_of(path) for path in ROOT.rglob("*.py") if "mlflow" in external_imports(path))
    assert importers and all(module.startswith("ssimctr.tracking") for module in importers), importers


def _ssimctr(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ssimctr", *args], capture_output=True, text=True, timeout=120)


def test_help_lists_only_user_facing_options():
    shown = _ssimctr("--help")
    assert shown.returncode == 0
    groups = shown.stdout.split("Config groups")[1]  # each group's options, the default marked * (cli/test_help.py)
    assert "backbone " in groups and "cold_start multi_modal *multi_scenario" in groups
    assert "hashing hf minilm *none" in groups
    assert "schema" not in groups and "_parts" not in groups
