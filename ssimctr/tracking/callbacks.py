"""Hydra callback that groups a multirun's jobs under one MLflow parent run."""

from __future__ import annotations

import json
import math
import os
import re
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.markup import escape

from ssimctr.errors import UserError
from ssimctr.tracking.backends import keeps_runs
from ssimctr.tracking.base import PARENT_RUN_ENV, SWEEP_COMMON_ENV
from ssimctr.tracking.store import PARENT_RUN_TAG, paginate

RESUME_SWEEP_ENV = "SSIMCTR_RESUME_SWEEP"  # a relaunched multirun (`ssimctr resume=<its folder>`): its parent run id
PARENT_RUN_FILE = "parent_run_id"  # in the multirun's folder: the parent run's id, for a later resume
REMOTE_LAUNCHERS = ("SlurmLauncher", "RayAWSLauncher", "RayLauncher")  # hydra/launcher=submitit_slurm, ray, ray_aws
OPTIMIZATION_RESULTS = "optimization_results.yaml"  # written by the Optuna (and Nevergrad) sweepers
_OVERRIDE_START = re.compile(r" (?=[+~]*[\w./@-]+=)")  # a space before the next `key=` of a joined override list

if TYPE_CHECKING:  # mlflow is imported only when a multirun tracks with it
    from mlflow.entities import Run

    from ssimctr.tracking.mlflow_tracker import MlflowTracker


class MlflowParentRunCallback(Callback):
    """Start a parent run before a sweep, summarise its children after it.

    Jobs find the parent id in `os.environ[PARENT_RUN_ENV]` and pass it to `Tracker.start`. A launcher
    that runs jobs in other processes (joblib, submitit, ray) pickles this callback with the Hydra context
    and calls `on_job_start` there: the callback carries the parent id (not its tracker, which does not
    pickle) and exports it in the job's own process, whatever that process inherited.
    """

    def __init__(self) -> None:
        self.tracker: MlflowTracker | None = None
        self.parent_run_id: str | None = None
        self.common_overrides: list[str] = []

    def __getstate__(self) -> dict[str, Any]:
        """What a launcher pickles for its workers: the parent id, without the tracker's client."""
        return {**self.__dict__, "tracker": None}

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        """In the job's process (the sweep's, or a launcher's worker): export the parent id and the
        overrides every job shares (a run's name leaves them to its end)."""
        if self.parent_run_id:
            os.environ[PARENT_RUN_ENV] = self.parent_run_id
        os.environ[SWEEP_COMMON_ENV] = json.dumps(self.common_overrides)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Start the parent run; a UserError (a tracking server's refused login or permission, a deleted
        experiment) is one line and exit 2 before any job: Hydra would only warn and launch the jobs."""
        self.common_overrides = _common_overrides(_select(config, "hydra.overrides.task") or [])
        try:
            self._start_parent(config)
        except UserError as error:
            Console(stderr=True).print(f"[bold red]error:[/] {escape(str(error))}", soft_wrap=True)
            sys.exit(2)

    def _start_parent(self, config: DictConfig) -> None:
        """Start the parent run named after the sweep dir (or, for a resumed multirun, reopen its parent)
        and export its id; record it in the sweep dir for a later `ssimctr resume=<sweep dir>`."""
        if not keeps_runs(config.tracking):  # tracking=none: no store to group the runs in
            return
        from ssimctr.tracking.mlflow_tracker import MlflowTracker

        _warn_if_remote_jobs_share_a_file(config)
        self.tracker = MlflowTracker(
            str(_select(config, "tracking.uri")),
            str(_select(config, "tracking.experiment")),
            _select(config, "tracking.artifact_location"),
        )
        sweep_dir = str(_select(config, "hydra.sweep.dir"))
        overrides = _select(config, "hydra.overrides.task") or []
        resumed = os.environ.get(RESUME_SWEEP_ENV)
        if resumed:  # the stopped multirun's parent, RUNNING again
            self.tracker.resume(resumed)
            run_id = resumed
        else:
            run_id = self.tracker.start(
                " ".join([f"sweep {Path(sweep_dir).name}", *overrides]),
                {
                    "ssimctr.kind": "sweep",
                    "sweep_dir": str(Path(sweep_dir).resolve()),
                    "overrides": " ".join(overrides),
                },
            )
        Path(sweep_dir).mkdir(parents=True, exist_ok=True)
        (Path(sweep_dir) / PARENT_RUN_FILE).write_text(str(run_id))
        self.parent_run_id = str(run_id)
        os.environ[PARENT_RUN_ENV] = self.parent_run_id

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Log the best child's `optimized_metric` and swept values, count failures, finish the parent."""
        os.environ.pop(SWEEP_COMMON_ENV, None)
        if self.tracker is None:
            return
        try:
            sweep_dir = Path(str(_select(config, "hydra.sweep.dir")))
            _summarise(self.tracker, str(_select(config, "optimized_metric")), sweep_dir)
            self.tracker.end("FINISHED")
            print(
                f"multirun parent MLflow run {self.tracker.run_id}: "
                f"ssimctr-report --uri {self.tracker.uri} --parent {self.tracker.run_id}"
            )
        finally:
            os.environ.pop(PARENT_RUN_ENV, None)
            self.tracker = None
            self.parent_run_id = None


def _warn_if_remote_jobs_share_a_file(config: DictConfig) -> None:
    """Warn when a launcher that may run jobs on other machines (SLURM, Ray) meets a sqlite store: one
    sqlite file is safe for the parallel jobs of one machine, not over a network file system."""
    launcher = str(_select(config, "hydra.launcher._target_") or "")
    uri = str(_select(config, "tracking.uri"))
    if uri.startswith("sqlite:") and any(name in launcher for name in REMOTE_LAUNCHERS):
        warnings.warn(
            f"{launcher.rsplit('.', 1)[-1]} may run jobs on other machines, which cannot share tracking.uri={uri}: "
            "start a tracking server (make server) and set MLFLOW_TRACKING_URI=http://<its host>:5000",
            stacklevel=2,
        )


def _common_overrides(overrides: list[str]) -> list[str]:
    """The overrides of a multirun's command line that sweep nothing (`regime=mt,single` sweeps)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return [
        o.input_line for o in OverridesParser.create().parse_overrides(list(overrides)) if not o.is_sweep_override()
    ]


def _select(config: DictConfig, key: str) -> Any:
    """The resolved value at dotted `key`, reading only that node, None when missing."""
    value = OmegaConf.select(config, key, default=None)
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def _summarise(tracker: MlflowTracker, metric: str, sweep_dir: Path | None = None) -> None:
    """Record `best/<metric>`, `best_child_run_id`, the best child's swept values as `best.<key>` params
    and `failed_children` on the parent, and a sweeper's `optimization_results.yaml` (Optuna's) as an
    artifact."""
    children = _child_runs(tracker)
    failed = sum(run.info.status == "FAILED" for run in children)
    if failed:
        tracker.set_tags({"failed_children": str(failed)})
    results = sweep_dir / OPTIMIZATION_RESULTS if sweep_dir is not None else None
    if results is not None and results.is_file():
        tracker.log_artifact(results)
    best = _best_run(children, metric)
    if best is not None:
        tracker.log_metrics({f"best/{metric}": best.data.metrics[metric]})
        tracker.set_tags({"best_child_run_id": best.info.run_id})
        params = _sweeper_best_params(results) or _swept_values(best, children)
        tracker.log_params({f"best.{_param_key(key)}": value for key, value in params.items()})


def _sweeper_best_params(results: Path | None) -> dict[str, object]:
    """`best_params` of a sweeper's results file, {} without one (or for a multi-objective study)."""
    if results is None or not results.is_file():
        return {}
    best = OmegaConf.load(results).get("best_params")
    return dict(OmegaConf.to_container(best, resolve=True)) if OmegaConf.is_config(best) else {}


def _overrides(run: Run) -> dict[str, str]:
    """A child's overrides (its `overrides` tag, space-joined by the runner) as key -> value."""
    pairs = (item.split("=", 1) for item in _OVERRIDE_START.split(run.data.tags.get("overrides", "")) if "=" in item)
    return {key.lstrip("+~"): value for key, value in pairs}


def _swept_values(best: Run, runs: list[Run]) -> dict[str, str]:
    """The best run's values of the override keys whose values differ between the runs: what a grid swept."""
    every = [_overrides(run) for run in runs]
    keys = {key for overrides in every for key in overrides}
    swept = {key for key in keys if len({overrides.get(key) for overrides in every}) > 1}
    return {key: value for key, value in _overrides(best).items() if key in swept}


def _param_key(key: str) -> str:
    """`key` with the characters MLflow refuses in a param name replaced by `_`."""
    return re.sub(r"[^\w\-. /]", "_", key)


def _child_runs(tracker: MlflowTracker) -> list[Run]:
    """All runs of the parent's experiment whose parent is the tracker's run."""
    experiment_ids = [tracker.experiment_id]
    query = f"tags.`{PARENT_RUN_TAG}` = '{tracker.run_id}'"
    return list(paginate(lambda page_token: tracker.client.search_runs(experiment_ids, query, page_token=page_token)))


def _best_run(runs: list[Run], metric: str) -> Run | None:
    """The run with the highest non-NaN latest value of `metric`, None if none has it."""
    scored = [run for run in runs if not math.isnan(run.data.metrics.get(metric, math.nan))]
    return max(scored, key=lambda run: run.data.metrics[metric], default=None)
