"""The package installs like one: a wheel built from the repository, installed into a fresh virtualenv
outside it, runs a job with the configs it ships (conf/ as ssimctr/conf) from a folder that is not the
repository, and its console scripts start.

Fast and offline: the wheel is installed with --no-deps, and the fresh virtualenv reaches the test
environment's installed libraries (torch, hydra, ...) through a .pth line; that line adds the folder to
sys.path without running the .pth files in it, so the editable install of the repository stays out."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import ssimctr

REPOSITORY = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "setup.py", "README.md", "ssimctr", "conf")  # what a build reads

pytestmark = pytest.mark.slow


def _run(*command: str | Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run([str(part) for part in command], cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(map(str, command))}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The bin/ folder of a fresh virtualenv holding the wheel of a copy of the repository's sources."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    source.mkdir()
    for name in SOURCES:
        if (REPOSITORY / name).is_dir():
            shutil.copytree(REPOSITORY / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPOSITORY / name, source / name)
    _run(
        sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", root / "dist", ".", cwd=source
    )
    wheels = list((root / "dist").glob("ssimctr-*.whl"))
    assert [wheel.name for wheel in wheels] == [f"ssimctr-{ssimctr.__version__}-py3-none-any.whl"]
    venv = root / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=root)
    python = venv / "bin" / "python"
    purelib = _run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=root).stdout.strip()
    Path(purelib, "test_environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", wheels[0], cwd=root)
    return venv / "bin"


def test_the_installed_package_is_the_wheel_with_its_configs(installed, tmp_path):
    where = _run(
        installed / "python",
        "-c",
        "import ssimctr, ssimctr.cli.runner as runner; print(ssimctr.__file__); print(runner.CONFIG_DIR)",
        cwd=tmp_path,
    ).stdout.split()
    package = Path(where[0]).parent
    assert package.is_relative_to(installed.parent) and not package.is_relative_to(REPOSITORY)
    assert Path(where[1]) == package / "conf" and (package / "conf" / "regime" / "mt.yaml").is_file()
    shipped = {path.relative_to(package / "conf") for path in (package / "conf").rglob("*.yaml")}
    assert shipped == {path.relative_to(REPOSITORY / "conf") for path in (REPOSITORY / "conf").rglob("*.yaml")}


def test_ssimctr_version_prints_the_package_version(installed, tmp_path):
    assert _run(installed / "ssimctr", "--version", cwd=tmp_path).stdout.strip() == f"ssimctr {ssimctr.__version__}"


def test_the_console_scripts_start(installed, tmp_path):
    for script in ("ssimctr-report", "ssimctr-predict", "ssimctr-evaluate"):
        assert "usage:" in _run(installed / script, "--help", cwd=tmp_path).stdout


def test_a_tiny_job_runs_outside_the_repository(installed, tmp_path):
    done = _run(
        installed / "ssimctr",
        "trainer=debug",
        "trainer.threads=1",
        "trainer.progress=false",
        "tracking=none",
        "dataset.rows=2000",
        "regime=st",
        cwd=tmp_path,
    )
    assert "test: regime st;" in done.stdout and "│ mean" in done.stdout
    assert list((tmp_path / "outputs" / "runs").rglob("test_results.csv"))  # paths.outputs: the job's folder
