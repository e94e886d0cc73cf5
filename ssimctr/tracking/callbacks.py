"""Hydra callback that groups a multirun's jobs under one MLflow parent run."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from ssimctr.tracking.base import PARENT_RUN_ENV
from ssimctr.tracking.store import PARENT_RUN_TAG, paginate

if TYPE_CHECKING:  # mlflow is imported only when a multirun tracks with it
    from mlflow.entities import Run

    from ssimctr.tracking.mlflow_tracker import MlflowTracker


class MlflowParentRunCallback(Callback):
    """Start a parent run before a sweep, summarise its children after it.

    Jobs find the parent id in `os.environ[PARENT_RUN_ENV]` and pass it to `Tracker.start`.
    """

    def __init__(self) -> None:
        self.tracker: MlflowTracker | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Start the parent run named after the sweep dir and export its id."""
        if _select(config, "tracking.backend") != "mlflow":
            return
        from ssimctr.tracking.mlflow_tracker import MlflowTracker

        self.tracker = MlflowTracker(
            str(_select(config, "tracking.uri")),
            str(_select(config, "tracking.experiment")),
            _select(config, "tracking.artifact_location"),
        )
        sweep_dir = str(_select(config, "hydra.sweep.dir"))
        overrides = _select(config, "hydra.overrides.task") or []
        run_id = self.tracker.start(
            " ".join([f"sweep {Path(sweep_dir).name}", *overrides]),
            {"ssimctr.kind": "sweep", "sweep_dir": sweep_dir, "overrides": " ".join(overrides)},
        )
        os.environ[PARENT_RUN_ENV] = str(run_id)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Log the best child's `optimized_metric`, count failures, finish the parent."""
        if self.tracker is None:
            return
        try:
            _summarise(self.tracker, str(_select(config, "optimized_metric")))
            self.tracker.end("FINISHED")
            print(
                f"multirun parent MLflow run {self.tracker.run_id}: "
                f"ssimctr-report --uri {self.tracker.uri} --parent {self.tracker.run_id}"
            )
        finally:
            os.environ.pop(PARENT_RUN_ENV, None)
            self.tracker = None


def _select(config: DictConfig, key: str) -> Any:
    """The resolved value at dotted `key`, reading only that node, None when missing."""
    value = OmegaConf.select(config, key, default=None)
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def _summarise(tracker: MlflowTracker, metric: str) -> None:
    """Record `best/<metric>`, `best_child_run_id` and `failed_children` on the parent."""
    children = _child_runs(tracker)
    failed = sum(run.info.status == "FAILED" for run in children)
    if failed:
        tracker.set_tags({"failed_children": str(failed)})
    best = _best_run(children, metric)
    if best is not None:
        tracker.log_metrics({f"best/{metric}": best.data.metrics[metric]})
        tracker.set_tags({"best_child_run_id": best.info.run_id})


def _child_runs(tracker: MlflowTracker) -> list[Run]:
    """All runs of the parent's experiment whose parent is the tracker's run."""
    experiment_ids = [tracker.experiment_id]
    query = f"tags.`{PARENT_RUN_TAG}` = '{tracker.run_id}'"
    return list(paginate(lambda page_token: tracker.client.search_runs(experiment_ids, query, page_token=page_token)))


def _best_run(runs: list[Run], metric: str) -> Run | None:
    """The run with the highest non-NaN latest value of `metric`, None if none has it."""
    scored = [run for run in runs if not math.isnan(run.data.metrics.get(metric, math.nan))]
    return max(scored, key=lambda run: run.data.metrics[metric], default=None)
