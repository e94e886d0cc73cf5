"""One job end to end through `run`: metrics, MLflow contents, determinism, failures."""

from __future__ import annotations

import math
import re
import sqlite3
from pathlib import Path

import polars as pl
import pytest
import sqlalchemy.exc
from mlflow.tracking import MlflowClient
from rich.console import Console

from conftest import compose
from ssimctr.cli.runner import JobInfo, run
from ssimctr.errors import UserError

SCENARIOS = ("s0", "s1", "s2")


def job_config(tmp_path: Path, *overrides: str):
    return compose(
        f"paths.outputs={tmp_path}",
        "dataset.rows=20000",
        "dataset.users=2000",
        "dataset.items=500",
        "trainer.progress=false",
        "trainer.epochs=3",
        "trainer.patience=3",
        "trainer.batch_size=256",
        *overrides,
    )


def run_job(cfg, tmp_path: Path) -> dict[str, float]:
    job = JobInfo(
        choices={"dataset": "synthetic", "backbone": "dnn", "regime": cfg.regime.name},
        overrides=["test"],
        output_dir=tmp_path / "run",
    )
    return run(cfg, job, Console(record=True, width=120))


def test_run_logs_every_metric_to_mlflow(tmp_path):
    cfg = job_config(tmp_path, f"tracking.uri=sqlite:///{tmp_path}/mlflow.db")
    results = run_job(cfg, tmp_path)
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    [experiment] = [e for e in client.search_experiments() if e.name == "ssimctr-synthetic"]
    [record] = client.search_runs([experiment.experiment_id])
    assert record.info.status == "FINISHED"
    metrics = record.data.metrics
    for metric in ("auc", "logloss"):
        for name in (*SCENARIOS, "overall", "mean"):
            key = f"test/{metric}/{name}"
            assert metrics[key] == pytest.approx(results[key])
    epochs = [m.step for m in client.get_metric_history(record.info.run_id, "val/auc/mean")]
    assert epochs == list(range(1, len(epochs) + 1)) and len(epochs) >= 2
    assert record.data.params["trainer.epochs"] == "3"
    assert record.data.tags["regime"] == "mt" and record.data.tags["seed"] == "2022"
    artifacts = {a.path for a in client.list_artifacts(record.info.run_id)}
    assert {"config.yaml", "feature_map.json", "manifest.json", "test_results.csv"} <= artifacts
    assert 0.5 < results["test/auc/mean"] < 1.0


def test_same_seed_gives_identical_metrics(tmp_path):
    first = run_job(job_config(tmp_path, "tracking=none", "trainer.epochs=2"), tmp_path)
    second = run_job(job_config(tmp_path, "tracking=none", "trainer.epochs=2"), tmp_path)
    other = run_job(job_config(tmp_path, "tracking=none", "trainer.epochs=2", "seed=7"), tmp_path)
    quality = [k for k in first if k.startswith(("val/", "test/"))]
    assert {k: first[k] for k in quality} == {k: second[k] for k in quality}
    assert first["test/auc/mean"] != other["test/auc/mean"]


@pytest.mark.parametrize("regime", ["mt", "mt_s", "single"])
def test_every_regime_trains(tmp_path, regime):
    results = run_job(job_config(tmp_path, "tracking=none", f"regime={regime}", "trainer.epochs=2"), tmp_path)
    assert all(not math.isnan(results[f"test/logloss/{s}"]) for s in SCENARIOS)
    assert results["test/auc/mean"] > 0.55


def test_user_error_ends_the_run_failed_with_the_message(tmp_path):
    """A mistake found once the run is logged (the monitored metric, met at the first validation) ends it
    FAILED with the message; a mistake in the data is found before any run is logged."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    with pytest.raises(UserError, match="did you mean 'click'"):
        run_job(job_config(tmp_path, f"tracking.uri={uri}", "dataset.label=clik"), tmp_path)
    client = MlflowClient(uri)
    assert not client.search_runs([e.experiment_id for e in client.search_experiments()])
    with pytest.raises(UserError, match="trainer.monitor"):
        run_job(job_config(tmp_path, f"tracking.uri={uri}", "trainer.monitor=val/auc/nope"), tmp_path)
    [record] = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert record.info.status == "FAILED"
    assert "val/auc/nope" in record.data.tags["error"]


def test_unknown_monitor_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="trainer.monitor"):
        run_job(job_config(tmp_path, "tracking=none", "trainer.monitor=val/auc/nope"), tmp_path)


def test_streaming_training_matches_in_memory_training(tmp_path):
    in_memory = run_job(job_config(tmp_path, "tracking=none", "trainer.epochs=2"), tmp_path)
    streamed = run_job(
        job_config(
            tmp_path, "tracking=none", "trainer.epochs=2", "trainer.in_memory=false", "trainer.stream_buffer_rows=4000"
        ),
        tmp_path,
    )
    assert streamed["test/auc/mean"] == pytest.approx(in_memory["test/auc/mean"], abs=0.03)
    assert streamed["test/auc/mean"] > 0.55


@pytest.mark.parametrize("option", ["regime=st", "regime=finetune", "ssim=pipeline"])
def test_per_scenario_regimes_and_ssim_stream_too(tmp_path, option):
    overrides = ("tracking=none", option, "trainer.epochs=1", "ssim.search_epochs=1")
    in_memory = run_job(job_config(tmp_path, *overrides), tmp_path)
    streamed = run_job(
        job_config(tmp_path, *overrides, "trainer.in_memory=false", "trainer.stream_buffer_rows=4000"), tmp_path
    )
    assert streamed.keys() == in_memory.keys()
    assert streamed["test/auc/mean"] == pytest.approx(in_memory["test/auc/mean"], abs=0.05)


def test_the_results_file_counts_each_scenarios_test_rows_and_clicks(tmp_path):
    results = run_job(job_config(tmp_path, "tracking=none", "trainer=debug", "trainer.progress=false"), tmp_path)
    [prepared] = (tmp_path / "cache").glob("synthetic-*")
    test = pl.read_parquet(prepared / "test")
    written = pl.read_csv(tmp_path / "run" / "test_results.csv")
    for k, name in enumerate(SCENARIOS):
        labels = test.filter(pl.col("scenario") == k)["label"]
        row = written.filter(pl.col("scenario") == name).row(0, named=True)
        assert row["rows"] == labels.len()
        assert row["ctr"] == pytest.approx(labels.mean())
        assert row["auc"] == pytest.approx(results[f"test/auc/{name}"])
    assert written.filter(pl.col("scenario") == "overall")["rows"].item() == test.height


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.epochs=-1", "trainer.epochs=-1: must be at least 1"),
        ("trainer.epochs=0", "trainer.epochs=0: must be at least 1"),
        ("trainer.batch_size=0", "trainer.batch_size=0: must be at least 1"),
        ("trainer.patience=0", "trainer.patience=0: must be at least 1"),
        ("trainer.optimizer.lr=-1", "trainer.optimizer.lr=-1.0: must be 0 or positive"),
        ("trainer.optimizer.weight_decay=-0.1", "trainer.optimizer.weight_decay=-0.1: must be 0 or positive"),
    ],
)
def test_trainer_values_no_training_can_use_are_refused_before_anything_runs(tmp_path, override, message):
    cfg = job_config(tmp_path, f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", override)
    with pytest.raises(UserError, match=f"^{message}"):
        run_job(cfg, tmp_path)
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "cache").exists()  # no run, no data


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["ssim=search", "ssim.ratio=1.5"], "ssim.ratio=1.5: must be in [0, 1]"),
        (["ssim=retrain", "ssim.ratio=-0.1"], "ssim.ratio=-0.1: must be in [0, 1]"),
        (["ssim=search", "ssim.epsilon=1"], "ssim.epsilon=1.0: must be in (0, 1)"),
        (["ssim=search", "ssim.lambda_kl=-1"], "ssim.lambda_kl=-1.0: must be 0 or positive"),
        (["ssim=search", "ssim.final_temperature=0"], "ssim.final_temperature=0.0: must be positive"),
        (["ssim=search", "ssim.search_epochs=0"], "ssim.search_epochs=0: must be at least 1"),
        (["ssim=search", "ssim.selector_lr=-1e-3"], "ssim.selector_lr=-0.001: must be 0 or positive"),
        (["ssim=search", "ssim.selector_dropout=1"], "ssim.selector_dropout=1.0: must be in [0, 1)"),
        (["ssim=pipeline", "ssim.retrain_dropout=-0.5"], "ssim.retrain_dropout=-0.5: must be in [0, 1)"),
        (["ssim=search", "ssim.log_every=0"], "ssim.log_every=0: must be at least 1"),
        (["ssim=search", "ssim.selector_hidden=[64,0]"], "ssim.selector_hidden=[64, 0]: must be layer sizes"),
        (["ssim=search", "ssim.heads=fuzzy"], "ssim.heads=fuzzy is not known: use one of per_scenario, shared"),
        (["ssim=retrain", "ssim.selection=global"], "ssim.selection=global: choose it with ssim/selection=<"),
        (["ssim.phase=serch"], "ssim.phase=serch is not known: use one of disabled, search, retrain, pipeline"),
        (["ssim=retrain", "ssim.from_run=abc", "ssim.from_path=x"], "set one of ssim.from_run and ssim.from_path"),
        (["split=random", "split.fractions=[0.8,0.1]"], "split.fractions must be three numbers"),
        (["split=time", "split.cutoffs=[2024-01-01]"], "split.cutoffs needs two values"),
        (["split.kind=kfold"], "split=kfold is not known"),
        (["scenario=top_k", "scenario.top_k=0"], "scenario=top_k needs scenario.top_k >= 1"),
        (["scenario=bins", "scenario.bins=[3,1]"], "scenario.bins must be a non-empty increasing list"),
        (["scenario.bins=[1,2]"], "scenario.bins belongs to scenario=bins, but scenario=column is chosen"),
        (["scenario.unmapped=keep"], "scenario.unmapped=keep: use drop or error"),
        (["dataset.rows=0"], "dataset.rows=0: must be at least 1"),
        (["dataset.newcomers=1"], "dataset.newcomers=1.0: must be in [0, 1)"),
        (["dataset.shard_rows=0"], "dataset.shard_rows=0: a shard needs at least one row"),
    ],
)
def test_ssim_split_scenario_and_dataset_values_are_refused_before_anything_runs(tmp_path, overrides, message):
    cfg = job_config(tmp_path, f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", *overrides)
    with pytest.raises(UserError, match=f"^{re.escape(message)}"):
        run_job(cfg, tmp_path)
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "cache").exists()  # no run, no data


@pytest.mark.parametrize(
    ("cause", "fix"),
    [
        ("attempt to write a readonly database", "choose a writable tracking.uri"),
        ("unable to open database file", "choose a writable tracking.uri"),
        ("database or disk is full", "free some space or choose another tracking.uri"),
    ],
)
def test_a_store_that_cannot_be_written_is_one_user_error_naming_it(tmp_path, monkeypatch, cause, fix):
    def refuse(self, *args, **kwargs):  # what sqlite says through sqlalchemy when the store opens
        raise sqlalchemy.exc.OperationalError("SELECT experiments", {}, sqlite3.OperationalError(cause))

    monkeypatch.setattr(MlflowClient, "search_experiments", refuse)
    cfg = job_config(tmp_path, f"tracking.uri=sqlite:///{tmp_path}/mlflow.db")
    with pytest.raises(UserError, match=f"^{re.escape(f'cannot write {tmp_path}/mlflow.db: {cause}; {fix}')}$"):
        run_job(cfg, tmp_path)
    assert not (tmp_path / "cache").exists()  # before any data
