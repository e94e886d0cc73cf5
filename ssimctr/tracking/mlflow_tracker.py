"""Tracker backed by an MLflow tracking store, through MlflowClient only (no fluent API)."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlparse

import psutil
from filelock import FileLock
from mlflow.entities import Experiment, LifecycleStage, Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode
from mlflow.tracking import MlflowClient
from mlflow.utils.validation import (
    MAX_METRICS_PER_BATCH,
    MAX_PARAM_VAL_LENGTH,
    MAX_PARAMS_TAGS_PER_BATCH,
    MAX_TAG_VAL_LENGTH,
)

from ssimctr.errors import UserError
from ssimctr.tracking.base import check_status, flatten_params
from ssimctr.tracking.store import PARENT_RUN_TAG, paginate, sqlite_file

HOST_TAG, PID_TAG = "ssimctr.host", "ssimctr.pid"

_T = TypeVar("_T")


class MlflowTracker:
    """One MLflow run in experiment `experiment` of the store at `uri`."""

    def __init__(self, uri: str, experiment: str, artifact_location: str | None = None) -> None:
        self.uri = uri
        self.client = connect(uri)
        self.experiment_id = get_or_create_experiment(self.client, experiment, artifact_location)
        self._run_id: str | None = None

    @property
    def run_id(self) -> str | None:
        """The id of the started run, None before `start`."""
        return self._run_id

    def start(self, run_name: str | None, tags: dict[str, str], parent_run_id: str | None = None) -> str | None:
        """Create the run (linked to `parent_run_id` when given) and return its id. The run records
        its host and pid, so a later start can tell it died (`fail_orphaned_runs`)."""
        fail_orphaned_runs(self.client, self.experiment_id)
        run_tags = _tag_values({**tags, HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())})
        if parent_run_id:
            run_tags[PARENT_RUN_TAG] = parent_run_id
        run = self.client.create_run(self.experiment_id, tags=run_tags, run_name=run_name)
        self._run_id = run.info.run_id
        return self._run_id

    def log_params(self, params: dict[str, object]) -> None:
        """Log flattened params in batches of at most 100."""
        flat = flatten_params(params, max_len=MAX_PARAM_VAL_LENGTH)
        items = [Param(key, value) for key, value in flat.items()]
        for batch in _chunks(items, MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(self._active(), params=batch, synchronous=True)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Log metrics with one timestamp at `step` (0 when None); NaN is kept."""
        now = int(time.time() * 1000)
        items = [Metric(key, float(value), now, step or 0) for key, value in metrics.items()]
        for batch in _chunks(items, MAX_METRICS_PER_BATCH):
            self.client.log_batch(self._active(), metrics=batch, synchronous=True)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        """Log a file, or a directory under its own name, into `artifact_path`."""
        path = Path(path)
        if path.is_dir():
            target = f"{artifact_path}/{path.name}" if artifact_path else path.name
            self.client.log_artifacts(self._active(), str(path), target)
        elif path.is_file():
            self.client.log_artifact(self._active(), str(path), artifact_path)
        else:
            raise FileNotFoundError(f"cannot log artifact {path}: no such file or directory")

    def set_tags(self, tags: dict[str, str]) -> None:
        """Set tags (values cut to MLflow's tag length limit)."""
        items = [RunTag(key, value) for key, value in _tag_values(tags).items()]
        for batch in _chunks(items, MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(self._active(), tags=batch, synchronous=True)

    def end(self, status: str = "FINISHED", error: str | None = None) -> None:
        """Terminate the run; no-op when no run was started."""
        check_status(status)
        if self._run_id is None:
            return
        if error is not None:
            self.set_tags({"error": error})
        self.client.set_terminated(self._run_id, status)

    def download_artifacts(self, run_id: str, artifact_path: str, destination: Path) -> Path:
        """Copy the artifact folder `artifact_path` of run `run_id` into `destination`; return its local path.

        Any run of the store can be read, started or not. UserError when the run is not in the
        store, or has no `artifact_path` artifacts.
        """
        try:
            self.client.get_run(run_id)
        except MlflowException:
            raise UserError(
                f"ssim.from_run={run_id}: no such run in {self.uri} (copy the run id from the search "
                "run's output or the MLflow UI, and use the same tracking.uri)"
            ) from None
        destination.mkdir(parents=True, exist_ok=True)
        try:
            return Path(self.client.download_artifacts(run_id, artifact_path, str(destination)))
        except (MlflowException, OSError):
            raise UserError(f"run {run_id} has no '{artifact_path}' artifacts: is it an ssim=search run?") from None

    def _active(self) -> str:
        """The run id, or RuntimeError when `start` was not called."""
        if self._run_id is None:
            raise RuntimeError("MlflowTracker: call start() before logging")
        return self._run_id


def fail_orphaned_runs(client: MlflowClient, experiment_id: str) -> list[str]:
    """Mark FAILED the RUNNING runs of this host whose process is gone (killed with -9, out of
    memory, a power cut): no process with the recorded pid exists, or it started after the run did
    (the pid was reused). Returns their ids. Runs of other hosts are left alone: their processes
    cannot be checked from here."""
    host = socket.gethostname()
    query = f"attributes.status = 'RUNNING' and tags.`{HOST_TAG}` = '{host}'"
    orphans = []
    for run in paginate(lambda token: client.search_runs([experiment_id], query, page_token=token)):
        pid = int(run.data.tags.get(PID_TAG, "0"))
        if not _alive_since(pid, run.info.start_time / 1000):
            error = f"process {pid} on {host} ended without finishing the run (found at a later start)"
            client.set_tag(run.info.run_id, "error", error)
            client.set_terminated(run.info.run_id, "FAILED")
            orphans.append(run.info.run_id)
    return orphans


def _alive_since(pid: int, started: float) -> bool:
    """Whether process `pid` exists and was created no later than `started` (seconds since the epoch)."""
    try:
        return psutil.Process(pid).create_time() <= started + 1.0
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return False


def connect(uri: str) -> MlflowClient:
    """A client for `uri`. A sqlite store is created (its folder too) and migrated by one process at
    a time, under a file lock beside the database: MLflow's first-use schema migration is not safe
    when several jobs open a new store at once (it fails, or leaves `_alembic_tmp_*` tables behind)."""
    database = sqlite_file(uri)
    try:
        if database is None:
            return MlflowClient(tracking_uri=uri)
        database.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(f"{database}.lock"):
            client = MlflowClient(tracking_uri=uri)
            client.search_experiments(max_results=1)  # opens the store: creates and migrates its tables
        return client
    except MlflowException as exc:
        raise UserError(f"tracking.uri={uri!r} is not a usable MLflow store: {exc.message}") from exc


def get_or_create_experiment(client: MlflowClient, name: str, artifact_location: str | None) -> str:
    """The id of experiment `name`, created (with `artifact_location`) when missing."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        experiment = create_experiment(client, name, artifact_location)
    if experiment.lifecycle_stage == LifecycleStage.DELETED:
        raise UserError(
            f"tracking.experiment={name!r} is a deleted MLflow experiment; restore it "
            f"(`mlflow experiments restore`) or pick another name"
        )
    return experiment.experiment_id


def artifact_uri(location: str) -> str:
    """`location` as a URI: paths become absolute file:// URIs, URIs pass unchanged."""
    if len(urlparse(location).scheme) > 1:
        return location
    return Path(location).expanduser().resolve().as_uri()


def create_experiment(client: MlflowClient, name: str, artifact_location: str | None) -> Experiment:
    """Create experiment `name`; if another job created it meanwhile, read that one."""
    location = artifact_uri(artifact_location) if artifact_location else None
    try:
        return client.get_experiment(client.create_experiment(name, artifact_location=location))
    except MlflowException as exc:
        if exc.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
            raise
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        raise RuntimeError(f"MLflow experiment {name!r} exists but cannot be read")
    return experiment


def _tag_values(tags: dict[str, str]) -> dict[str, str]:
    """Tags as strings cut to MLflow's tag value limit."""
    return {key: str(value)[:MAX_TAG_VAL_LENGTH] for key, value in tags.items()}


def _chunks(items: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    """Consecutive slices of `items` of at most `size` elements."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
