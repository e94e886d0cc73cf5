"""The MLflow UI's saved view written by ssimctr: test/auc/<scenario> columns, merged over runs."""

from __future__ import annotations

import json
from pathlib import Path

from mlflow.tracking import MlflowClient

from ssimctr.tracking.mlflow_tracker import MlflowTracker
from ssimctr.tracking.views import (
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    VIEW_FILTER,
    VIEW_NAME,
    VIEW_TAG,
    save_runs_view,
    saved_columns,
    view_columns,
    view_url,
)


def test_columns_scenarios_in_natural_order_then_mean_and_overall() -> None:
    keys = ["test/auc/overall", "test/auc/s10", "test/logloss/s0", "val/auc/s0", "test/auc/mean", "test/auc/s2"]
    assert view_columns(keys) == [
        "metrics.`test/auc/s2`",
        "metrics.`test/auc/s10`",
        "metrics.`test/auc/mean`",
        "metrics.`test/auc/overall`",
    ]
    assert view_columns(["test/auc/b"], ["metrics.`test/auc/a`"]) == ["metrics.`test/auc/a`", "metrics.`test/auc/b`"]
    assert saved_columns("not json") == ([], None) and saved_columns(None) == ([], None)


def test_finished_runs_write_the_view_and_the_experiment_kind(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = MlflowTracker(uri, "ssimctr-synthetic", str(tmp_path / "artifacts"))
    client = MlflowClient(tracking_uri=uri)
    assert client.get_experiment(tracker.experiment_id).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
    tracker.start("failed", {})
    tracker.log_metrics({"test/auc/s0": 0.7, "test/auc/mean": 0.7})
    tracker.end("FAILED", "boom")
    assert VIEW_TAG not in client.get_experiment(tracker.experiment_id).tags  # only finished runs
    tracker.start("one", {})
    tracker.log_metrics({"test/auc/s0": 0.7, "test/auc/mean": 0.7, "test/logloss/s0": 0.4})
    tracker.end("FINISHED")
    envelope = json.loads(client.get_experiment(tracker.experiment_id).tags[VIEW_TAG])
    state = json.loads(envelope["state"])
    assert envelope["name"] == VIEW_NAME and envelope["createdAt"] <= envelope["updatedAt"]
    assert state == {
        "selectedColumns": ["metrics.`test/auc/s0`", "metrics.`test/auc/mean`"],
        "orderByKey": "metrics.`test/auc/mean`",
        "orderByAsc": False,
        "searchFilter": VIEW_FILTER,
    }
    tracker.start("sweep parent", {"ssimctr.kind": "sweep"})
    tracker.log_metrics({"best/val/auc/mean": 0.7})
    tracker.end("FINISHED")
    listed = client.search_runs([tracker.experiment_id], state["searchFilter"])  # the store reads the UI's filter
    assert [run.info.run_name for run in listed] == ["one"]
    # a later run with another scenario adds its column; one with nothing new writes nothing
    assert save_runs_view(client, tracker.experiment_id, ["test/auc/s1", "test/auc/s0"])
    assert not save_runs_view(client, tracker.experiment_id, ["test/auc/s1", "train/loss"])
    columns, created = saved_columns(client.get_experiment(tracker.experiment_id).tags[VIEW_TAG])
    assert columns == ["metrics.`test/auc/s0`", "metrics.`test/auc/mean`", "metrics.`test/auc/s1`"]
    assert created == envelope["createdAt"]
    assert view_url("3", "http://h:5000/") == (
        "http://h:5000/#/experiments/3/runs?workflowType=machine_learning&viewStateShareKey=ssimctr-test-auc"
    )
