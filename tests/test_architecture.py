"""The package's layering: no import cycle between modules or packages, data never reaches train, only
tracking imports mlflow, models never read config, tasks never the raw config, --help shows only user options."""

from __future__ import annotations

import ast
import importlib.metadata
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import ssimctr
from ssimctr.cli.config_errors import unknown_key
from ssimctr.tasks.base import Job

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
    assert "ssimctr.tracking.mlflow_tracker" in reachable(import_graph(), "ssimctr.tracking.callbacks")


def test_no_module_imports_one_that_imports_it_back():
    graph = import_graph()
    cycles = sorted(module for module in graph if module in reachable(graph, module))
    assert not cycles


def test_data_never_imports_train():
    graph = import_graph()
    for module in (m for m in graph if m.startswith("ssimctr.data")):
        assert not {m for m in reachable(graph, module) if m.startswith("ssimctr.train")}, module


def package_of(module: str) -> str:
    """The top-level package (or module) of ssimctr a module belongs to: ssimctr.data.sources.files -> ssimctr.data."""
    return ".".join(module.split(".")[:2])


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Which of ssimctr's packages (and top-level modules) import which others."""
    packages: dict[str, set[str]] = {package_of(module): set() for module in graph}
    for module, imported in graph.items():
        packages[package_of(module)] |= {package_of(other) for other in imported} - {package_of(module)}
    return packages


def test_the_package_graph_joins_subpackages():
    packages = package_graph(import_graph())
    assert "ssimctr.data.sources" not in packages and "ssimctr.config" in packages["ssimctr.data"]


def test_no_package_imports_one_that_imports_it_back():
    """A package loop (data -> text -> data) is a layering mistake even when no two modules form a cycle."""
    packages = package_graph(import_graph())
    loops = {package: sorted(p for p in packages[package] if package in reachable(packages, p)) for package in packages}
    assert not {package: back for package, back in loops.items() if back}


def external_imports(path: Path) -> set[str]:
    """The top-level names of the packages `path` imports anywhere (top level, functions, TYPE_CHECKING)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module.split(".")[0])
    return found


def test_models_never_read_config():
    """ssimctr.models, and everything it imports, sees neither Hydra / OmegaConf nor the config schemas: a
    model takes its hyper-parameters as arguments (built by ssimctr.tasks.base.build_model)."""
    graph = import_graph()
    models = {module for module in graph if module.startswith("ssimctr.models")}
    seen = models.union(*(reachable(graph, module) for module in models))
    assert not {module for module in seen if module.startswith("ssimctr.config")}
    paths = {module_of(path): path for path in ROOT.rglob("*.py")}
    config_libraries = {module: sorted(external_imports(paths[module]) & {"omegaconf", "hydra"}) for module in seen}
    assert not {module: names for module, names in config_libraries.items() if names}


def test_tasks_never_read_the_raw_config():
    """A task gets its options typed and built on its Job (by the runner), never the composed config."""
    assert not [field.name for field in fields(Job) if field.name == "config" or "DictConfig" in str(field.type)]
    reads = sorted(
        f"{path.name}:{node.lineno}"
        for path in (ROOT / "tasks").glob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Attribute) and node.attr == "config"
    )
    assert not reads


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


def test_version_is_the_package_version():
    shown = _ssimctr("--version")
    assert (shown.returncode, shown.stdout) == (0, f"ssimctr {ssimctr.__version__}\n")
    assert importlib.metadata.version("ssimctr") == ssimctr.__version__  # pyproject.toml reads it (dynamic)


def test_a_key_that_a_class_replaced_is_one_line_naming_the_new_spelling():
    shown = _ssimctr("regime.training=separate")
    assert shown.returncode == 2 and shown.stderr.count("\n") == 1
    assert shown.stderr.startswith("error: regime.training is no longer an option") and "regime=st" in shown.stderr
    for key, replacement in (("tracking.backend", "tracking=none"), ("dataset.source", "dataset=aliccp")):
        assert str(unknown_key(key, None)).startswith(f"{key} is no longer an option: ") and replacement in str(
            unknown_key(key, None)
        )
