"""Multiruns beyond one process (the sweep and ray extras): Hydra's joblib, submitit and ray launchers,
the Optuna sweeper, and the parent MLflow run that collects every child whatever runs the jobs."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import hydra
import pytest
from mlflow.entities import Run
from omegaconf import DictConfig, OmegaConf

from conftest import assert_every_metric, installed, sweep_runs
from ssimctr.cli import main
from ssimctr.cli.main import CONFIG_DIR
from ssimctr.tracking import PARENT_RUN_ENV
from ssimctr.tracking.callbacks import MlflowParentRunCallback

TINY = [
    "dataset.rows=2000",
    "dataset.users=300",
    "dataset.items=100",
    "trainer=debug",
    "trainer.epochs=1",
    "trainer.progress=false",
]
SWEEP_EXTRA = "the sweep extra is not installed (pip install -e '.[sweep]')"


@pytest.fixture(autouse=True)
def _no_inherited_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """These runs log to their tmp sqlite store, whatever the caller's MLFLOW_TRACKING_URI,
    and nest under their own sweep's parent."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv(PARENT_RUN_ENV, raising=False)


def needs(plugin: str, reason: str = SWEEP_EXTRA) -> pytest.MarkDecorator:
    """Skip unless Hydra plugin package `plugin` (under hydra_plugins) is installed."""
    return pytest.mark.skipif(not installed(f"hydra_plugins.{plugin}"), reason=reason)


def ssimctr(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ssimctr", *args, f"paths.outputs={tmp_path}", *TINY],
        capture_output=True,
        text=True,
        timeout=600,
    )


def compose_with_hydra(*overrides: str) -> DictConfig:
    """The config with its hydra node (launcher, sweeper), as a multirun composes it."""
    with hydra.initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return hydra.compose("config", overrides=list(overrides), return_hydra_config=True)


def assert_children_ran_elsewhere(parent: Run, children: list[Run], count: int) -> None:
    """`count` finished children, each in a process other than the sweep's."""
    assert parent.info.status == "FINISHED"
    assert len(children) == count and all(r.info.status == "FINISHED" for r in children)
    assert parent.data.tags["ssimctr.pid"] not in {r.data.tags["ssimctr.pid"] for r in children}


def test_the_task_and_the_callback_pickle_for_launchers_in_other_processes() -> None:
    """joblib, submitit and ray pickle the task function and the Hydra context (callbacks included):
    the task pickles by reference (no module globals such as the consoles), the callback without its client."""
    import cloudpickle

    assert cloudpickle.loads(cloudpickle.dumps(main.task)) is main.task
    assert len(cloudpickle.dumps(main.task)) < 200
    callback = MlflowParentRunCallback()
    callback.parent_run_id, callback.tracker, callback.common_overrides = "abc", object(), ["trainer=debug"]
    assert pickle.loads(cloudpickle.dumps(callback)).__dict__ == {
        "tracker": None,
        "parent_run_id": "abc",
        "common_overrides": ["trainer=debug"],  # the jobs' run names leave them to the end
    }


@needs("hydra_optuna_sweeper")
def test_optuna_preset_composes_for_every_backbone() -> None:
    cfg = compose_with_hydra("hparams_search=optuna", "hydra.sweeper.n_trials=7")
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and cfg.hydra.mode.name == "MULTIRUN"
    assert (sweeper.direction, sweeper.n_trials, cfg.optimized_metric) == ("maximize", 7, "val/auc/mean")
    assert sweeper.sampler._target_ == "optuna.samplers.TPESampler" and sweeper.sampler.seed == cfg.seed
    assert set(sweeper.params) == {
        "trainer.optimizer.lr",
        "trainer.embedding_optimizer.lr",
        "trainer.regularizer.id_dropout.rate",
        "trainer.regularizer.embedding_l2.l2",
        "trainer.batch_size",
        "backbone.dropout",
    }
    for backbone in sorted(p.stem for p in Path(CONFIG_DIR, "backbone").glob("*.yaml")):
        job = compose_with_hydra("hparams_search=optuna", f"backbone={backbone}")
        assert "dropout" in job.backbone and set(job.trainer.regularizer) == {"id_dropout", "embedding_l2"}, backbone


@needs("hydra_submitit_launcher")
def test_slurm_gpu_preset_composes() -> None:
    cfg = compose_with_hydra("hydra/launcher=slurm_gpu", "hydra.launcher.partition=a100", "hydra.launcher.mem_gb=64")
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"] == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert launcher["partition"] == "a100" and launcher["mem_gb"] == 64
    assert (launcher["gpus_per_node"], launcher["tasks_per_node"], launcher["nodes"]) == (1, 1, 1)
    assert launcher["cpus_per_task"] >= 1 and launcher["timeout_min"] > 0


@pytest.mark.slow
@needs("hydra_joblib_launcher")
def test_joblib_workers_share_the_cores() -> None:
    """The README's claim: loky workers start with OMP_NUM_THREADS = cores // n_jobs, which torch
    follows, so trainer.threads=null does not oversubscribe the cores."""
    from joblib import Parallel, cpu_count, delayed

    threads = Parallel(n_jobs=2, backend="loky")(delayed(_torch_threads)() for _ in range(2))
    assert threads == [max(1, cpu_count() // 2)] * 2


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


@pytest.mark.slow
@needs("hydra_joblib_launcher")
def test_a_joblib_multirun_of_4_jobs_leaves_a_parent_and_4_finished_children(tmp_path: Path) -> None:
    result = ssimctr(tmp_path, "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "regime=mt,single", "seed=1,2")
    assert result.returncode == 0, result.stderr[-3000:]
    parent, children = sweep_runs(f"sqlite:///{tmp_path}/mlflow.db")
    assert_children_ran_elsewhere(parent, children, 4)
    assert_every_metric(children)
    assert sorted((r.data.tags["regime"], r.data.tags["seed"]) for r in children) == [
        ("mt", "1"),
        ("mt", "2"),
        ("single", "1"),
        ("single", "2"),
    ]


@pytest.mark.slow
@needs("hydra_optuna_sweeper")
@needs("hydra_joblib_launcher")
def test_optuna_sweep_on_joblib_workers_records_the_best_trial(tmp_path: Path) -> None:
    """3 trials asked 2 at a time, run by 2 joblib workers: the parent collects the 3 children and
    records the best one's value, run id and swept params."""
    result = ssimctr(
        tmp_path,
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.n_jobs=2",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    parent, children = sweep_runs(f"sqlite:///{tmp_path}/mlflow.db")
    assert_children_ran_elsewhere(parent, children, 3)
    metric = "val/auc/mean"
    best = max(children, key=lambda r: r.data.metrics[metric])
    assert parent.data.metrics[f"best/{metric}"] == pytest.approx(best.data.metrics[metric])
    assert parent.data.tags["best_child_run_id"] == best.info.run_id
    swept = (
        "trainer.optimizer.lr",
        "trainer.embedding_optimizer.lr",
        "trainer.regularizer.id_dropout.rate",
        "trainer.regularizer.embedding_l2.l2",
        "trainer.batch_size",
        "backbone.dropout",
    )
    assert parent.data.params == {f"best.{key}": best.data.params[key] for key in swept}
    [results] = Path(parent.data.tags["sweep_dir"]).glob("optimization_results.yaml")
    assert OmegaConf.load(results).best_value == pytest.approx(best.data.metrics[metric])


@pytest.mark.slow
@needs("hydra_submitit_launcher")
def test_submitit_local_runs_the_pickled_jobs_under_one_parent(tmp_path: Path) -> None:
    """submitit_local pickles each job as submitit_slurm would and runs it in a subprocess."""
    result = ssimctr(tmp_path, "-m", "hydra/launcher=submitit_local", "seed=1,2", "trainer.threads=1")
    assert result.returncode == 0, result.stderr[-3000:]
    parent, children = sweep_runs(f"sqlite:///{tmp_path}/mlflow.db")
    assert_children_ran_elsewhere(parent, children, 2)
    assert sorted(r.data.tags["seed"] for r in children) == ["1", "2"]


@pytest.mark.slow
@needs("hydra_ray_launcher", reason="the ray extra is not installed (pip install -e '.[ray]')")
def test_ray_launcher_on_a_local_ray_instance(tmp_path: Path) -> None:
    """The launcher starts a local Ray instance (2 CPUs, no dashboard) and ends it with the sweep."""
    result = ssimctr(
        tmp_path,
        "-m",
        "hydra/launcher=ray",
        "+hydra.launcher.ray.init.num_cpus=2",
        "+hydra.launcher.ray.init.include_dashboard=false",
        "seed=1,2",
        "trainer.threads=1",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "RayLauncher may run jobs on other machines" in result.stderr  # a sqlite store: use a server
    parent, children = sweep_runs(f"sqlite:///{tmp_path}/mlflow.db")
    assert_children_ran_elsewhere(parent, children, 2)
