"""MlflowParentRunCallback: one parent run per multirun, summarising its children."""

from __future__ import annotations

import os
import pickle
import warnings
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


def sweep_config(root: Path, tracking: str = "mlflow") -> DictConfig:
    """A multirun config whose tracking keys are interpolations and whose paths are not
    resolvable outside a Hydra job; tracking=none: the NullTracker's (no store)."""
    store = {
        "_target_": "ssimctr.tracking.mlflow_tracker.MlflowTracker",
        "uri": "sqlite:///${paths.root}/mlflow.db",
        "experiment": "sweeps",
        "artifact_location": "${paths.root}/artifacts",
    }
    return OmegaConf.create(
        {
            "paths": {"root": str(root), "output_dir": "${hydra:runtime.output_dir}"},
            "tracking": store if tracking == "mlflow" else {"_target_": "ssimctr.tracking.base.NullTracker"},
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


def test_tracking_none_does_nothing(tmp_path: Path) -> None:
    config = sweep_config(tmp_path, tracking="none")
    callback = MlflowParentRunCallback()
    callback.on_multirun_start(config)
    assert PARENT_RUN_ENV not in os.environ
    callback.on_multirun_end(config)
    assert list(tmp_path.iterdir()) == []


def run_child_with(config: DictConfig, auc: float, overrides: str) -> str:
    """A finished child whose `overrides` tag is what the runner writes (space-joined)."""
    tracking = config.tracking
    child = MlflowTracker(tracking.uri, tracking.experiment, tracking.artifact_location)
    run_id = child.start("job", {"overrides": overrides}, parent_run_id=os.environ[PARENT_RUN_ENV])
    child.log_metrics({METRIC: auc})
    child.end()
    return str(run_id)


def test_pickled_callback_exports_the_parent_id_in_the_jobs_process(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Launchers that run jobs elsewhere (joblib, submitit, ray) pickle the callback with the Hydra
    context; the copy carries the parent id, not the tracker's client (which does not pickle)."""
    config = sweep_config(root)
    callback = MlflowParentRunCallback()
    callback.on_multirun_start(config)
    parent_id = os.environ[PARENT_RUN_ENV]
    copy = pickle.loads(pickle.dumps(callback))
    assert copy.tracker is None and copy.parent_run_id == parent_id
    monkeypatch.delenv(PARENT_RUN_ENV)  # a worker started before the sweep, or on another machine
    copy.on_job_start(config, task_function=None)
    assert os.environ[PARENT_RUN_ENV] == parent_id
    callback.on_multirun_end(config)
    assert PARENT_RUN_ENV not in os.environ and callback.parent_run_id is None


def test_parent_run_records_the_best_childs_swept_values(root: Path) -> None:
    config = sweep_config(root)
    callback = MlflowParentRunCallback()
    callback.on_multirun_start(config)
    parent_id = os.environ[PARENT_RUN_ENV]
    run_child_with(config, 0.70, "trainer.lr=0.01 backbone=dnn dataset.rows=2000")
    run_child_with(config, 0.75, "trainer.lr=0.001 backbone=dcn dataset.rows=2000")
    run_child_with(config, 0.72, "trainer.lr=0.001 backbone=dnn dataset.rows=2000")
    callback.on_multirun_end(config)

    parent = MlflowClient(tracking_uri=config.tracking.uri).get_run(parent_id)
    assert parent.data.params == {"best.trainer.lr": "0.001", "best.backbone": "dcn"}  # rows: not swept


def test_parent_run_records_the_sweepers_best_params_and_results(root: Path, tmp_path: Path) -> None:
    """Optuna writes optimization_results.yaml into the sweep dir; its best_params become params
    (a categorical that every trial drew alike is swept all the same) and the file an artifact."""
    config = sweep_config(root)
    config.hydra.sweep.dir = str(tmp_path)
    (tmp_path / "optimization_results.yaml").write_text(
        "name: optuna\nbest_params:\n  trainer.lr: 0.002\n  backbone.embedding_dim: 16\nbest_value: 0.75\n"
    )
    callback = MlflowParentRunCallback()
    callback.on_multirun_start(config)
    parent_id = os.environ[PARENT_RUN_ENV]
    run_child_with(config, 0.70, "trainer.lr=0.01 backbone.embedding_dim=16")
    run_child_with(config, 0.75, "trainer.lr=0.002 backbone.embedding_dim=16")
    callback.on_multirun_end(config)

    client = MlflowClient(tracking_uri=config.tracking.uri)
    parent = client.get_run(parent_id)
    assert parent.data.params == {"best.trainer.lr": "0.002", "best.backbone.embedding_dim": "16"}
    assert parent.data.metrics[f"best/{METRIC}"] == pytest.approx(0.75)
    assert [f.path for f in client.list_artifacts(parent_id)] == ["optimization_results.yaml"]


@pytest.mark.parametrize(
    ("launcher", "warns"),
    [
        ("hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher", True),
        ("hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher", True),
        ("hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", False),
        ("hydra._internal.core_plugins.basic_launcher.BasicLauncher", False),
    ],
)
def test_remote_launcher_with_a_sqlite_store_warns(root: Path, launcher: str, warns: bool) -> None:
    config = sweep_config(root)
    OmegaConf.update(config, "hydra.launcher", {"_target_": launcher}, force_add=True)
    callback = MlflowParentRunCallback()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        callback.on_multirun_start(config)
    callback.on_multirun_end(config)
    messages = [str(w.message) for w in caught if "make server" in str(w.message)]
    assert bool(messages) == warns, messages
