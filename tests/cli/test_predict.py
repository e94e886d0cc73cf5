"""A job's logged model after the run: listed by MLflow, scoring a raw file as the job scored its test
rows, evaluated on a prepared split as the job evaluated it, and clear one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from rich.console import Console

from conftest import compose
from ssimctr.cli.runner import JobInfo, run
from ssimctr.data import synthetic
from ssimctr.data.loaders import InMemoryLoader, read_split
from ssimctr.serving.cli import evaluate, evaluate_main, predict_main, score_file
from ssimctr.serving.model import load_logged_model
from ssimctr.tracking.mlflow_tracker import MlflowTracker
from ssimctr.train.loop import predict

SCENARIOS = ("s0", "s1", "s2")


def train_and_log(folder: Path, *overrides: str) -> SimpleNamespace:
    """A small job tracked in `folder`'s store; the model the job logged, as it was in memory."""
    uri = f"sqlite:///{folder}/mlflow.db"
    cfg = compose(
        f"paths.outputs={folder}",
        f"tracking.uri={uri}",
        "dataset.rows=3000",
        "dataset.users=300",
        "dataset.items=100",
        "trainer.epochs=1",
        "trainer.progress=false",
        *overrides,
    )
    logged = []
    original = MlflowTracker.log_model

    def spy(self, model, files, name="model"):
        logged.append(model)
        return original(self, model, files, name)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(MlflowTracker, "log_model", spy)
        info = JobInfo(choices={"dataset": "synthetic", "regime": cfg.regime.name}, output_dir=folder / "run")
        results = run(cfg, info, Console(quiet=True))
    [model] = logged
    client = MlflowClient(uri)
    [experiment] = [e for e in client.search_experiments() if e.name == "ssimctr-synthetic"]
    [record] = client.search_runs([experiment.experiment_id])
    [prepared] = (folder / "cache").glob("synthetic-*[!.]*")
    raw = synthetic.generate(OmegaConf.to_object(cfg.dataset))
    raw.write_csv(folder / "raw.csv")
    return SimpleNamespace(
        uri=uri,
        client=client,
        experiment=experiment.experiment_id,
        run=record,
        model=model,
        results=results,
        prepared=prepared,
        raw=raw,
        csv=folder / "raw.csv",
    )


@pytest.fixture(scope="module")
def job(tmp_path_factory) -> SimpleNamespace:
    return train_and_log(tmp_path_factory.mktemp("logged"))


def test_the_run_lists_its_logged_model(job):
    [model] = job.client.search_logged_models([job.experiment], filter_string=f"source_run_id='{job.run.info.run_id}'")
    assert model.name == "model" and str(model.status) == "READY"
    files = {f.path for f in job.client.list_logged_model_artifacts(model.model_id)}
    assert {"MLmodel", "extra_files", "vocab", "data"} <= files
    extra = {f.path for f in job.client.list_logged_model_artifacts(model.model_id, "extra_files")}
    assert extra == {"extra_files/config.yaml", "extra_files/feature_map.json"}
    assert [o.model_id for o in job.run.outputs.model_outputs] == [model.model_id]


def test_raw_rows_score_as_the_trained_model_scores_their_prepared_rows(job):
    logged = load_logged_model(f"runs:/{job.run.info.run_id}/model", job.uri)
    rows, scores = score_file(logged, job.csv)
    assert rows.height == job.raw.height and np.isfinite(scores).all()
    test = read_split(job.prepared / "test", logged.feature_map)
    _, logits, _ = predict(job.model, InMemoryLoader(test, 512, shuffle=False))
    expected = 1 / (1 + np.exp(-logits.astype(np.float64)))
    np.testing.assert_allclose(scores[test.row_id.numpy()], expected, rtol=0, atol=1e-6)
    assert np.std(expected) > 1e-3  # the rows do not all get one probability


def test_evaluate_reproduces_the_runs_test_metrics(job):
    logged = load_logged_model(f"runs:/{job.run.info.run_id}/model", job.uri)
    results, summary, _ = evaluate(logged, job.prepared, "test")
    keys = [f"test/{m}/{s}" for m in ("auc", "logloss") for s in (*SCENARIOS, "overall", "mean")]
    assert {k: results[k] for k in keys} == pytest.approx({k: job.run.data.metrics[k] for k in keys}, abs=1e-6)
    assert [s["scenario"] for s in summary] == list(SCENARIOS)
    assert sum(s["rows"] for s in summary) == job.run.data.metrics.get("test/rows", sum(s["rows"] for s in summary))


def test_evaluate_prints_the_per_scenario_table(job, capsys):
    args = ["--model", f"runs:/{job.run.info.run_id}/model", "--uri", job.uri, "--data", str(job.prepared)]
    assert evaluate_main([*args, "--split", "val"]) == 0
    table = capsys.readouterr().out
    assert all(name in table for name in (*SCENARIOS, "overall", "mean")) and "val of" in table


def test_evaluate_of_a_labelled_raw_file_matches_the_prepared_split(job, tmp_path):
    logged = load_logged_model(f"runs:/{job.run.info.run_id}/model", job.uri)
    test_ids = read_split(job.prepared / "test", logged.feature_map).row_id.numpy()
    job.raw[test_ids].write_parquet(tmp_path / "test.parquet")
    from_raw, _, _ = evaluate(logged, tmp_path / "test.parquet", "test")
    from_prepared, _, _ = evaluate(logged, job.prepared, "test")
    assert from_raw == pytest.approx(from_prepared, abs=1e-6)


def test_predict_command_writes_each_rows_click_probability(job, tmp_path):
    job.raw.head(200).write_csv(tmp_path / "new.csv")
    out = tmp_path / "scores.parquet"
    command = Path(sys.executable).with_name("ssimctr-predict")
    model = f"models:/{job.run.outputs.model_outputs[0].model_id}"
    args = [str(command), "--model", model, "--uri", job.uri, "--input", str(tmp_path / "new.csv")]
    done = subprocess.run([*args, "--output", str(out), "--column", "p"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and not done.stderr, done.stderr
    scores = pl.read_parquet(out)
    assert scores.columns == [*job.raw.columns, "p"] and scores.height == 200
    assert scores.drop("p").equals(pl.read_csv(tmp_path / "new.csv"))
    _, expected = score_file(load_logged_model(model, job.uri), job.csv)
    np.testing.assert_allclose(scores["p"].to_numpy(), expected[:200], atol=1e-6)


def test_an_unknown_scenario_is_counted_and_left_unscored(job, tmp_path, capsys):
    rows = job.raw.head(10).with_columns(
        pl.when(pl.int_range(pl.len()) < 3).then(pl.lit("elsewhere")).otherwise(pl.col("scenario")).alias("scenario")
    )
    rows.drop(synthetic.ORACLE).write_csv(tmp_path / "new.csv")  # the oracle's column is named click_prob
    args = ["--model", f"runs:/{job.run.info.run_id}/model", "--uri", job.uri, "--input", str(tmp_path / "new.csv")]
    assert predict_main([*args, "--output", str(tmp_path / "out.csv")]) == 0
    assert "3 of 10 rows" in capsys.readouterr().err
    scores = pl.read_csv(tmp_path / "out.csv")["click_prob"]
    assert scores.head(3).is_null().all() and scores.tail(7).is_not_null().all()


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


def test_bad_inputs_give_one_line_and_exit_2(job, tmp_path, capsys):
    model = ["--model", f"runs:/{job.run.info.run_id}/model", "--uri", job.uri]
    out = ["--output", str(tmp_path / "out.csv")]
    assert predict_main([*model, "--input", str(tmp_path / "missing.csv"), *out]) == 2
    assert "missing.csv" in one_error_line(capsys)

    job.raw.head(20).drop(synthetic.ORACLE).write_csv(tmp_path / "new.csv")
    job.raw.head(20).drop(synthetic.ORACLE, "item_brand").write_csv(tmp_path / "no_brand.csv")
    assert predict_main([*model, "--input", str(tmp_path / "no_brand.csv"), *out]) == 2
    assert "'item_brand'" in one_error_line(capsys)

    unknown = ["--model", "runs:/0123456789abcdef0123456789abcdef/model", "--uri", job.uri]
    assert predict_main([*unknown, "--input", str(tmp_path / "new.csv"), *out]) == 2
    assert "0123456789abcdef" in one_error_line(capsys)

    assert predict_main([*model, "--input", str(tmp_path / "new.csv"), "--output", str(tmp_path / "out.json")]) == 2
    assert "out.json" in one_error_line(capsys)

    assert predict_main([*model, "--input", str(job.csv), *out]) == 2  # the synthetic oracle's click_prob
    assert "'click_prob'" in one_error_line(capsys) and not (tmp_path / "out.csv").exists()

    assert evaluate_main([*model, "--data", str(tmp_path / "nothing")]) == 2
    assert "nothing" in one_error_line(capsys)

    elsewhere = ["--model", f"runs:/{job.run.info.run_id}/model", "--uri", f"sqlite:///{tmp_path}/typo.db"]
    assert predict_main([*elsewhere, "--input", str(tmp_path / "new.csv"), *out]) == 2
    assert "typo.db" in one_error_line(capsys) and not (tmp_path / "typo.db").exists()


def test_a_model_per_scenario_is_logged_as_one_model_that_routes_rows(tmp_path):
    job = train_and_log(tmp_path, "regime=st")
    logged = load_logged_model(f"runs:/{job.run.info.run_id}/model", job.uri)
    results, _, _ = evaluate(logged, job.prepared, "test")
    assert results["test/auc/mean"] == pytest.approx(job.run.data.metrics["test/auc/mean"], abs=1e-6)


def test_no_model_is_logged_when_tracking_log_model_is_off(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    cfg = compose(
        f"paths.outputs={tmp_path}",
        f"tracking.uri={uri}",
        "tracking.log_model=false",
        "dataset.rows=3000",
        "trainer.epochs=1",
        "trainer.progress=false",
    )
    run(cfg, JobInfo(output_dir=tmp_path / "run"), Console(quiet=True))
    client = MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    assert not list(client.search_logged_models(experiments))
    [record] = client.search_runs(experiments)
    model = ["--model", f"runs:/{record.info.run_id}/model", "--uri", uri]
    assert evaluate_main([*model, "--data", str(tmp_path / "run")]) == 2
    assert "tracking.log_model=false" in one_error_line(capsys)
