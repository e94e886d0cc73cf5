"""MlflowParentRunCallback: one parent run per multirun, summarising its children."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from ssimctr.tracking import PARENT_RUN_ENV
from ssimctr.tracking.callbacks import MlflowParentRunCallback
from ssimctr.tracking.mlflow_tracker import MlflowTracker

METRIC = "val/auc/mean"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of the module's sqlite store (migrated once) and artifacts."""
    return tmp_path_factory.mktemp("sweep")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PARENT_RUN_ENV, raising=False)


def sweep_config(root: Path, backend: str = "mlflow") -> DictConfig:
    """A multirun config whose tracking keys are interpolations and whose paths are not
    resolvable outside a Hydra job."""
    return OmegaConf.create(
        {
            "paths": {"root": str(root), "output_dir": "${hydra:runtime.output_dir}"},
            "tracking": {
                "backend": backend,
                "uri": "sqlite:///${paths.root}/mlflow.db",
                "experiment": "sweeps",
                "artifact_location": "${paths.root}/artifacts",
            },
            "optimized_metric": METRIC,
            "hydra": {
                "sweep": {"dir": f"{root}/multirun/2025-01-01/12-00-00"},
                "overrides": {"task": ["backbone=mlp,dcn", "seed=1"]},
            },
        }
    )


def run_child(config: DictConfig, auc: float | None, status: str = "FINISHED") -> str:
    """Play one Hydra job: a run nested under the env's parent id."""
    tracking = config.tracking
    child = MlflowTracker(tracking.uri, tracking.experiment, tracking.artifact_location)
    run_id = child.start("job", {}, parent_run_id=os.environ[PARENT_RUN_ENV])
    if auc is not None:
        child.log_metrics({METRIC: auc - 0.1}, step=1)
        child.log_metrics({METRIC: auc}, step=2)
    child.end(status)
    return str(run_id)


def test_parent_run_records_best_child(root: Path) -> None:
    config = sweep_config(root)
    callback = MlflowParentRunCallback()
    callback.on_multirun_start(config)
    parent_id = os.environ[PARENT_RUN_ENV]
    run_child(config, 0.71)
    best_id = run_child(config, 0.74)
    run_child(config, None, status="FAILED")
    callback.on_multirun_end(config)

    parent = MlflowClient(tracking_uri=config.tracking.uri).get_run(parent_id)
    assert PARENT_RUN_ENV not in os.environ
    assert parent.info.status == "FINISHED"
    assert parent.info.run_name == "sweep 12-00-00 backbone=mlp,dcn seed=1"
    assert parent.data.metrics[f"best/{METRIC}"] == pytest.approx(0.74)
    assert parent.data.tags["best_child_run_id"] == best_id
    assert parent.data.tags["failed_children"] == "1"
    assert parent.data.tags["ssimctr.kind"] == "sweep"
    assert parent.data.tags["sweep_dir"] == config.hydra.sweep.dir
    assert parent.data.tags["overrides"] == "backbone=mlp,dcn seed=1"


def test_parent_run_without_children_still_finishes(root: Path) -> None:
    config = sweep_config(root)
    callback = MlflowParentRunCallback()
    callback.on_multirun_start(config)
    parent_id = os.environ[PARENT_RUN_ENV]
    callback.on_multirun_end(config)

    parent = MlflowClient(tracking_uri=config.tracking.uri).get_run(parent_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics == {}
    assert "failed_children" not in parent.data.tags


def test_backend_none_does_nothing(tmp_path: Path) -> None:
    config = sweep_config(tmp_path, backend="none")
    callback = MlflowParentRunCallback()
    callback.on_multirun_start(config)
    assert PARENT_RUN_ENV not in os.environ
    callback.on_multirun_end(config)
    assert list(tmp_path.iterdir()) == []
