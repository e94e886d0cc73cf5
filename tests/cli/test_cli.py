"""The `ssimctr` command as a user runs it: composition, multirun lineage, clear errors."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra.errors import ConfigCompositionException
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from conftest import SHARED_DATA, compose, installed
from ssimctr.cli.main import CONFIG_DIR, _write_problem
from ssimctr.config.schema import SCHEMAS

REQUIRED = {  # options that need values from the user
    ("dataset", "tabular"): ["dataset.path=x.csv", "dataset.label=y", "dataset.scenario=s"],
    ("scenario", "mapping"): ["scenario.mapping={a: b}"],
    ("scenario", "bins"): ["scenario.bins=[1]"],
}
OPTIONS = sorted(  # (group, option); a preset part's group is its path, _parts/<group>
    (p.parent.relative_to(CONFIG_DIR).as_posix(), p.stem)
    for pattern in ("*/*.yaml", "_parts/*/*.yaml")
    for p in Path(CONFIG_DIR).glob(pattern)
)
PLUGINS = {("hparams_search", "optuna"): "hydra_optuna_sweeper"}  # options that need a Hydra plugin
# groups outside the primary defaults list: selected with +group=option
APPENDED = {"_parts/table_ssim", "_parts/table_ssim_ablation", "_parts/ssim_planted", "_parts/baselines"}
SMALL = ["dataset.rows=6000", "dataset.users=500", "dataset.items=200", "trainer=debug", "trainer.progress=false"]


def ssimctr(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    flags = [a for a in args if a.startswith("-")]
    overrides = [a for a in args if not a.startswith("-")]
    return subprocess.run(
        [sys.executable, "-m", "ssimctr", *flags, f"paths.outputs={tmp_path}", *overrides],
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.parametrize(("group", "option"), OPTIONS)
def test_every_option_composes(group, option):
    plugin = PLUGINS.get((group, option))
    if plugin and not installed(f"hydra_plugins.{plugin}"):
        pytest.skip(f"{group}={option} needs {plugin}: the sweep extra (pip install -e '.[sweep]')")
    prefix = "+" if group in APPENDED else ""
    cfg = compose(f"{prefix}{group}={option}", *REQUIRED.get((group, option), []))
    assert cfg.backbone._target_ and cfg.dataset.name


def test_misspelt_key_fails_at_compose_time():
    with pytest.raises((ConfigCompositionException, ConfigKeyError, ValidationError)):
        compose("trainer.epocs=3")
    with pytest.raises((ConfigCompositionException, ValidationError)):
        compose("trainer.epochs=many")


def test_unknown_option_is_a_short_clear_error(tmp_path):
    line = _one_error_line(ssimctr(tmp_path, "backbone=transformerzz"))
    assert line.startswith("error: backbone=transformerzz is not an option of backbone: choose one of dcn, ")
    options = line.split("choose one of ")[1].split(", ")
    assert "dnn" in options and not [o for o in options if "schema" in o]  # only YAML options


def test_missing_file_is_one_clear_line(tmp_path):
    result = ssimctr(
        tmp_path,
        "dataset=tabular",
        "dataset.path=nowhere.csv",
        "dataset.label=click",
        "dataset.scenario=domain",
        "tracking=none",
    )
    assert result.returncode == 2
    assert "dataset.path: file not found: nowhere.csv" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_default_run_prints_the_table_and_logs_to_mlflow(tmp_path):
    result = ssimctr(tmp_path, *SMALL)
    assert result.returncode == 0, result.stderr
    for text in ("Scenario", "s0", "s1", "s2", "overall", "mean", "MLflow run", "logged model models:/m-"):
        assert text in result.stdout
    for noise in ("Creating initial MLflow database tables", "Downloading artifacts", "Pickle"):
        assert noise not in result.stdout + result.stderr  # mlflow's own lines while opening a store, logging a model
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    [record] = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert {f"test/auc/s{k}" for k in range(3)} <= set(record.data.metrics)


@pytest.mark.slow
def test_multirun_makes_one_parent_and_a_child_per_job(tmp_path):
    result = ssimctr(tmp_path, "-m", "regime=mt,single", "seed=1,2", *SMALL)
    assert result.returncode == 0, result.stderr
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    parents = [r for r in runs if r.data.tags.get("ssimctr.kind") == "sweep"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert sorted((r.data.tags["regime"], r.data.tags["seed"]) for r in children) == [
        ("mt", "1"),
        ("mt", "2"),
        ("single", "1"),
        ("single", "2"),
    ]
    assert sorted(r.info.run_name for r in children) == [  # what sets a job apart first
        f"{regime} seed={seed} · synthetic-dnn dataset.rows=6000 dataset.users=500 dataset.items=200 debug"
        for regime in ("mt", "single")
        for seed in (1, 2)
    ]
    parent = parents[0].info.run_id
    assert parents[0].info.run_name.startswith("sweep ") and "regime=mt,single" in parents[0].info.run_name
    assert result.stdout.strip().splitlines()[-1].endswith(f"--parent {parent}")


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA / "mind").is_dir(), reason="../shared/data/mind is not present")
def test_bring_your_own_csv_on_the_mind_sample(tmp_path):
    result = ssimctr(
        tmp_path,
        "dataset=tabular",
        f"dataset.path={SHARED_DATA}/mind/mind_sample.csv",
        "dataset.label=label",
        "dataset.scenario=Category",
        "dataset.categorical=[User_ID,News_ID,SubCategory]",
        "split=random",
        "trainer=debug",
        "trainer.progress=false",
    )
    assert result.returncode == 0, result.stderr
    for name in ("news", "lifestyle", "sports", "finance"):
        assert name in result.stdout


SCHEMA_OPTIONS = [path for path in sorted(Path(CONFIG_DIR).glob("*/*.yaml")) if path.parent.name in SCHEMAS]


@pytest.mark.parametrize("path", SCHEMA_OPTIONS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_no_option_repeats_a_default_of_its_schema(path):
    """Each default lives once, in the schema: an option's YAML sets only what differs."""
    values = yaml.safe_load(path.read_text()) or {}
    defaults = values.pop("defaults")
    group = path.parent.name
    if "default" in defaults:  # an option built on another option of its group (trainer/debug)
        return
    [schema] = [entry[1:].split("@")[0] for entry in defaults if str(entry).startswith("/schema_")]
    kind = schema.removeprefix(f"schema_{group}").lstrip("_")
    own = OmegaConf.structured(SCHEMAS[group][kind])
    repeated = {
        key: value
        for key, value in values.items()
        if key in own
        and not OmegaConf.is_missing(own, key)
        and OmegaConf.to_container(own, resolve=False)[key] == value
    }
    assert not repeated


def _one_error_line(result: subprocess.CompletedProcess) -> str:
    """The CLI's only stderr line (besides MLflow's own INFO logging), after checking exit code 2."""
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip() and " INFO mlflow" not in line]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_an_out_of_range_ssim_value_is_one_line_before_any_data_or_run(tmp_path):
    line = _one_error_line(
        ssimctr(tmp_path, "ssim=search", "ssim.ratio=1.5", f"tracking.uri=sqlite:///{tmp_path}/m.db")
    )
    assert line == "error: ssim.ratio=1.5: must be in [0, 1] (the share of rows selected as shared)"
    assert not (tmp_path / "m.db").exists() and not (tmp_path / "cache").exists()


def test_outputs_under_a_file_are_one_line_naming_the_path(tmp_path):
    """Runs as root too: a file in the way refuses root's writes as well (chmod would not)."""
    (tmp_path / "a_file").write_text("x")
    line = _one_error_line(ssimctr(tmp_path / "a_file" / "outputs", "tracking=none"))
    assert line.startswith(f"error: cannot write {tmp_path}/a_file/outputs/runs/")  # runs/<date>
    assert line.endswith(": not a directory (errno 20); choose a writable paths.outputs")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder (test above covers the path)")
def test_read_only_outputs_are_one_line_naming_the_path(tmp_path):
    folder = tmp_path / "read_only"
    folder.mkdir(mode=0o500)
    line = _one_error_line(ssimctr(folder, "tracking=none"))
    assert line == f"error: cannot write {folder}/runs: permission denied (errno 13); choose a writable paths.outputs"


def test_a_tracking_store_under_a_file_is_one_line_naming_the_option(tmp_path):
    (tmp_path / "a_file").write_text("x")
    line = _one_error_line(ssimctr(tmp_path, f"tracking.uri=sqlite:///{tmp_path}/a_file/runs/mlflow.db"))
    assert line == (
        f"error: cannot write {tmp_path}/a_file/runs: not a directory (errno 20); choose a writable tracking.uri"
    )


def test_a_full_disk_is_one_line_naming_the_file_and_the_option(tmp_path):
    cfg = compose(f"paths.outputs={tmp_path}/outputs")
    full = OSError(errno.ENOSPC, "No space left on device", f"{tmp_path}/outputs/runs/x/config.yaml")
    assert str(_write_problem(cfg, full)) == (
        f"cannot write {tmp_path}/outputs/runs/x/config.yaml: no space left on device (errno 28); "
        "free some space or choose another paths.outputs"
    )
    in_cache = OSError(errno.ENOSPC, "No space left on device", f"{tmp_path}/outputs/cache/d/manifest.json")
    assert "choose another paths.cache" in str(_write_problem(cfg, in_cache))
    assert _write_problem(cfg, OSError(errno.EBADF, "Bad file descriptor")) is None  # a bug keeps its traceback


def test_a_store_write_refused_mid_run_is_one_line_naming_tracking_uri(tmp_path):
    cfg = compose(f"tracking.uri=sqlite:///{tmp_path}/mlflow.db")
    wrapped = MlflowException("(sqlite3.OperationalError) attempt to write a readonly database")  # as MLflow wraps it
    assert str(_write_problem(cfg, wrapped)) == (
        f"cannot write {tmp_path}/mlflow.db: attempt to write a readonly database; choose a writable tracking.uri"
    )
    assert _write_problem(cfg, MlflowException("RESOURCE_DOES_NOT_EXIST: no run")) is None
    assert _write_problem(compose("tracking=none"), wrapped) is None
