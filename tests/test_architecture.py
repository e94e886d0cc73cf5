"""The package's layering: no import cycle, data never reaches train, --help shows only user options."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

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


def _ssimctr(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ssimctr", *args], capture_output=True, text=True, timeout=120)


def test_help_lists_only_user_facing_options():
    shown = _ssimctr("--help")
    assert shown.returncode == 0
    groups = shown.stdout.split("== Configuration groups ==")[1].split("== Config ==")[0]
    assert "backbone: " in groups and "task: cold_start, multi_modal, multi_scenario" in groups
    assert "text_encoder: hashing, hf, minilm, none" in groups
    assert "schema" not in groups


def package_graph() -> dict[str, set[str]]:
    """ssimctr's subpackages (ssimctr.ssim, ssimctr.tasks, ...; a top-level module counts as its own
    package) and the subpackages each one's modules import."""

    def package(module: str) -> str:
        return ".".join(module.split(".")[:2])

    graph: dict[str, set[str]] = {}
    for module, imported in import_graph().items():
        graph.setdefault(package(module), set()).update(package(m) for m in imported if package(m) != package(module))
    return graph


KNOWN_LOOPS = {  # issue 22 §5: text/ is imported by data/ and features/ and imports data.prepare back
    "ssimctr.data",
    "ssimctr.features",
    "ssimctr.text",
}


@pytest.mark.parametrize(
    "package",
    [
        pytest.param(name, marks=pytest.mark.xfail(strict=True, reason="issue 22 §5")) if name in KNOWN_LOOPS else name
        for name in sorted(package_graph())
    ],
)
def test_no_package_imports_a_package_that_imports_it_back(package):
    """Packages form layers: no subpackage reaches itself through the subpackages it imports (the SSIM
    phases that need a task's Job live in ssimctr.tasks, the SSIM mechanics in ssimctr.ssim)."""
    assert package not in reachable(package_graph(), package)
