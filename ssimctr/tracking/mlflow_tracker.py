"""Tracker backed by an MLflow tracking store, through MlflowClient only (no fluent API)."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import shutil
import socket
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlparse

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
from ssimctr.tracking.store import PARENT_RUN_TAG, paginate, refusals, refused, sqlite_file, unwritable_store
from ssimctr.tracking.views import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, VIEW_NAME, save_runs_view
from ssimctr.utils.process import alive_since

HOST_TAG, PID_TAG = "ssimctr.host", "ssimctr.pid"
SINCE_TAG = "ssimctr.pid_since"  # when the recorded process took the run over (a resumed run; seconds)

RUN_NAME_LENGTH = 200  # MLflow's runs.name column is VARCHAR(250): PostgreSQL and MySQL refuse longer (SQLite not)

_T = TypeVar("_T")


class MlflowTracker:
    """One MLflow run in experiment `experiment` of the store at `uri`."""

    def __init__(self, uri: str, experiment: str, artifact_location: str | None = None) -> None:
        self.uri = uri
        self.client = connect(uri)
        location = experiment_artifacts(uri, artifact_location)
        # a tracking server's first contact: a refused login is one line here, before any run exists
        with refusals(uri, f"use experiment {experiment!r}: ask the server's admin for READ on it"):
            self.experiment_id = get_or_create_experiment(self.client, experiment, location)
        self._run_id: str | None = None
        self._writing = (
            f"log runs into experiment {experiment!r}: ask its owner or the server's admin for EDIT on it, "
            "or choose another tracking.experiment"
        )

    @property
    def run_id(self) -> str | None:
        """The id of the started run, None before `start`."""
        return self._run_id

    def start(self, run_name: str | None, tags: dict[str, str], parent_run_id: str | None = None) -> str | None:
        """Create the run (linked to `parent_run_id` when given) and return its id. The run records
        its host and pid, so a later start can tell it died (`fail_orphaned_runs`). UserError, and no run,
        when a tracking server does not let the user write into the experiment."""
        run_tags = _tag_values({**tags, HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())})
        if parent_run_id:
            run_tags[PARENT_RUN_TAG] = parent_run_id
        name = None if run_name is None else run_name[:RUN_NAME_LENGTH]
        with refusals(self.uri, self._writing):
            fail_orphaned_runs(self.client, self.experiment_id)
            run = self.client.create_run(self.experiment_id, tags=run_tags, run_name=name)
        self._run_id = run.info.run_id
        return self._run_id

    def resume(self, run_id: str | None) -> None:
        """Reopen run `run_id` (a killed or failed run being resumed): RUNNING again, recording this
        process, its `error` tag removed. UserError when the store has no such run, when it FINISHED,
        or when its process is still alive."""
        if run_id is None:
            raise UserError(f"resume: the run was not tracked, but tracking.uri={self.uri} is set: use tracking=none")
        writing = f"resume run {run_id}: ask its experiment's owner or the server's admin for EDIT on it"
        try:
            run = self.client.get_run(run_id)
        except MlflowException as error:
            raise refused(error, self.uri, writing) or (
                UserError(f"resume: no run {run_id} in {self.uri} (use the tracking.uri the run logged to)")
            ) from None
        with refusals(self.uri, writing):
            fail_orphaned_runs(self.client, run.info.experiment_id)
        status = self.client.get_run(run_id).info.status
        if status == "FINISHED":
            raise UserError(f"resume: run {run_id} FINISHED already; there is nothing to resume")
        if status == "RUNNING":
            tags = run.data.tags
            raise UserError(
                f"resume: run {run_id} is still running (process {tags.get(PID_TAG, '?')} on "
                f"{tags.get(HOST_TAG, '?')}): stop it first"
            )
        with refusals(self.uri, writing):
            self.client.update_run(run_id, status="RUNNING")
        self._run_id = run_id
        self.set_tags({HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid()), SINCE_TAG: str(time.time())})
        if "error" in run.data.tags:
            self.client.delete_tag(run_id, "error")

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

    def log_model(self, model: object, files: Sequence[Path], name: str = "model") -> str | None:
        """Log `model` with mlflow.pytorch as a logged model of the run (the UI's 'Logged models'), with
        `files` beside it: plain files as the flavor's extra files, folders copied under their own names.
        Through the client: the run's experiment, never the fluent API's active run or experiment."""
        import mlflow.pytorch
        from mlflow.entities import LoggedModelOutput, LoggedModelStatus
        from mlflow.models import Model

        run_id = self._active()
        params = self.client.get_run(run_id).data.params
        logged = self.client.create_logged_model(
            self.experiment_id, name=name, source_run_id=run_id, params=params, model_type="ssimctr"
        )
        self.client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])
        try:
            with tempfile.TemporaryDirectory() as scratch, _quiet("mlflow.pytorch"):
                local = Path(scratch) / name
                meta = Model(
                    artifact_path=logged.artifact_location,
                    model_uuid=logged.model_id,
                    run_id=run_id,
                    model_id=logged.model_id,
                )
                mlflow.pytorch.save_model(
                    model,
                    str(local),
                    mlflow_model=meta,
                    extra_files=[str(f) for f in files if Path(f).is_file()],
                    serialization_format="pickle",  # pt2 (torch.export) cannot trace a forward over a Batch
                    pip_requirements=_requirements(),  # given: inferring them loads the model in a subprocess
                )
                for folder in (Path(f) for f in files if Path(f).is_dir()):
                    shutil.copytree(folder, local / folder.name)
                self.client.log_model_artifacts(logged.model_id, str(local))
        except BaseException:
            self.client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
            raise
        self.client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
        return logged.model_id

    def end(self, status: str = "FINISHED", error: str | None = None) -> None:
        """Terminate the run; no-op when no run was started."""
        check_status(status)
        if self._run_id is None:
            return
        if error is not None:
            self.set_tags({"error": error})
        self.client.set_terminated(self._run_id, status)
        if status == "FINISHED":  # the UI's saved view gets this run's test/auc/<scenario> columns
            try:
                save_runs_view(self.client, self.experiment_id, self.client.get_run(self._run_id).data.metrics)
            except MlflowException as exc:
                warnings.warn(f"the MLflow UI's saved view {VIEW_NAME!r} was not updated: {exc.message}", stacklevel=2)

    def download_artifacts(self, run_id: str, artifact_path: str, destination: Path) -> Path:
        """Copy the artifact folder `artifact_path` of run `run_id` into `destination`; return its local path.

        Any run of the store can be read, started or not. UserError when the run is not in the
        store, or has no `artifact_path` artifacts.
        """
        try:
            self.client.get_run(run_id)
        except MlflowException as error:
            raise refused(error, self.uri, f"read run {run_id}: ask the server's admin for READ on its experiment") or (
                UserError(
                    f"ssim.from_run={run_id}: no such run in {self.uri} (copy the run id from the search "
                    "run's output or the MLflow UI, and use the same tracking.uri)"
                )
            ) from None
        destination.mkdir(parents=True, exist_ok=True)
        try:
            with _quiet():  # no "Downloading artifacts" bar: a retrain's log keeps its own lines
                return Path(self.client.download_artifacts(run_id, artifact_path, str(destination)))
        except (MlflowException, OSError):
            raise UserError(f"run {run_id} has no '{artifact_path}' artifacts: is it an ssim=search run?") from None

    def _active(self) -> str:
        """The run id, or RuntimeError when `start` was not called."""
        if self._run_id is None:
            raise RuntimeError("MlflowTracker: call start() before logging")
        return self._run_id


def _requirements() -> list[str]:
    """What a logged model needs to load: torch and mlflow at this job's versions, and ssimctr (its classes)."""
    from importlib.metadata import PackageNotFoundError, version

    pinned = []
    for package in ("torch", "mlflow", "polars", "ssimctr"):
        try:
            pinned.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            pinned.append(package)
    return pinned


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
        since = float(run.data.tags.get(SINCE_TAG, run.info.start_time / 1000))  # a resumed run: its resume
        if not alive_since(pid, since):
            error = f"process {pid} on {host} ended without finishing the run (found at a later start)"
            client.set_tag(run.info.run_id, "error", error)
            client.set_terminated(run.info.run_id, "FAILED")
            orphans.append(run.info.run_id)
    return orphans


def connect(uri: str) -> MlflowClient:
    """A client for `uri`. A sqlite store is created (its folder too) and migrated by one process at
    a time, under a file lock beside the database: MLflow's first-use schema migration is not safe
    when several jobs open a new store at once (it fails, or leaves `_alembic_tmp_*` tables behind)."""
    database = sqlite_file(uri)
    try:
        if database is None:
            return MlflowClient(tracking_uri=uri)
        database.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(f"{database}.lock"), _quiet("mlflow.store.db.utils"):
            client = SqliteClient(tracking_uri=uri)
            client.search_experiments(max_results=1)  # opens the store: creates and migrates its tables
        return client
    except MlflowException as exc:
        problem = unwritable_store(exc, uri)
        if problem is not None:
            raise problem from None
        raise UserError(f"tracking.uri={uri!r} is not a usable MLflow store: {exc.message}") from exc
    except Exception as exc:  # OSError (its folder, the lock), sqlalchemy's OperationalError
        problem = unwritable_store(exc, uri)
        if problem is None:
            raise
        raise problem from None


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
        tags = {EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}  # a model-training experiment (see ssimctr.tracking.views)
        return client.get_experiment(client.create_experiment(name, artifact_location=location, tags=tags))
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


LOCKED_RETRIES = 6  # up to ~30 s of backoff (0.5 s doubling, with jitter) on top of MLflow's 20 s busy timeout
_jitter = random.Random()  # its own stream: the job's seeded `random` stays untouched


class SqliteClient(MlflowClient):
    """An MlflowClient for a sqlite store whose writes retry with backoff on `database is locked`.

    MLflow sets a 20 s busy timeout, but sqlite answers `database is locked` at once, without waiting,
    when a transaction that has read must write while another process writes: parallel jobs
    (hydra/launcher=joblib, submitit_local) logging into one file can hit it. A locked write is rolled
    back, so repeating it logs it once."""

    def create_run(self, *args, **kwargs):
        return _retry_locked(super().create_run, *args, **kwargs)

    def log_batch(self, *args, **kwargs):
        return _retry_locked(super().log_batch, *args, **kwargs)

    def set_tag(self, *args, **kwargs):
        return _retry_locked(super().set_tag, *args, **kwargs)

    def set_terminated(self, *args, **kwargs):
        return _retry_locked(super().set_terminated, *args, **kwargs)


def _retry_locked(call: Callable[..., _T], *args: object, **kwargs: object) -> _T:
    """`call(*args, **kwargs)`, repeated after 0.5, 1, 2, ... s (±50%) while sqlite says the database is locked."""
    for attempt in range(LOCKED_RETRIES + 1):
        try:
            return call(*args, **kwargs)
        except Exception as exc:  # MlflowException wrapping sqlalchemy's OperationalError, or the latter
            if attempt == LOCKED_RETRIES or "database is locked" not in str(exc):
                raise
            time.sleep(0.5 * 2**attempt * _jitter.uniform(0.5, 1.5))
    raise AssertionError("unreachable")


def experiment_artifacts(uri: str, location: str | None) -> str | None:
    """Where a new experiment keeps its artifacts: `location`, except a local path for a tracking server
    (http, https): then None, the server's own artifact root (`mlflow server --serve-artifacts`), which
    every job reaches through the server, wherever it runs."""
    if location and urlparse(uri).scheme in ("http", "https") and len(urlparse(location).scheme) <= 1:
        return None
    return location


@contextlib.contextmanager
def _quiet(*loggers: str) -> Iterator[None]:
    """mlflow's console lines below ERROR from `loggers` held back, and no artifact progress bars: a
    new store's "Creating initial MLflow database tables", mlflow.pytorch's warning that the pickle
    format runs code when loaded (the README says so), a progress bar per file a model copies."""
    logs = [logging.getLogger(name) for name in loggers]
    levels, bars = [log.level for log in logs], os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    for log in logs:
        log.setLevel(logging.ERROR)
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    try:
        yield
    finally:
        for log, level in zip(logs, levels, strict=True):
            log.setLevel(level)
        if bars is None:
            os.environ.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", None)
        else:
            os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = bars
