"""Read finished runs out of an MLflow store as plain records; attach report files to a run.

Through MlflowClient only (no fluent API). mlflow is imported inside the functions, so
`RunRecord` can be imported (e.g. by `ssimctr.report`) without paying for the mlflow import.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

from ssimctr.errors import UserError
from ssimctr.tracking.store import PARENT_RUN_TAG, paginate, refused, sqlite_file

if TYPE_CHECKING:
    from mlflow.entities import Experiment, Run
    from mlflow.store.entities.paged_list import PagedList
    from mlflow.tracking import MlflowClient

DEFAULT_EXPERIMENT_PREFIX = "ssimctr"
PAGE_SIZE = 1000
_RUN_ID = re.compile(r"[0-9A-Za-z_-]+")


@dataclass(frozen=True)
class RunRecord:
    """One FINISHED run: its tags, params and the latest value of each metric."""

    run_id: str
    run_name: str
    status: str
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    parent_run_id: str | None = None
    experiment: str = ""  # the experiment's name


def search_runs(
    uri: str,
    experiments: Sequence[str] | None = None,
    parent_run_id: str | None = None,
    filter_string: str | None = None,
) -> list[RunRecord]:
    """The FINISHED, non-deleted runs of the store at `uri`, oldest first.

    `experiments`: experiment names; None means every active experiment whose name starts with
    "ssimctr" (plus the parent's experiment when `parent_run_id` is given).
    `parent_run_id`: keep only the children of that run (tag `mlflow.parentRunId`).
    `filter_string`: an MLflow search filter, e.g. "tags.backbone = 'dnn'", AND-ed with the above.
    Raises UserError for a missing store, an unknown experiment or parent run, a bad filter.
    """
    from mlflow.entities import ViewType
    from mlflow.exceptions import MlflowException

    client = open_store(uri)
    with _user_errors(uri):
        names = _experiments(client, experiments, parent_run_id, uri)
    if not names:
        return []
    query = " and ".join(
        part
        for part in (
            (filter_string or "").strip(),
            f"tags.`{PARENT_RUN_TAG}` = '{parent_run_id}'" if parent_run_id else "",
            "attributes.status = 'FINISHED'",
        )
        if part
    )

    def fetch_page(page_token: str | None) -> PagedList[Run]:
        return client.search_runs(
            list(names),
            query,
            run_view_type=ViewType.ACTIVE_ONLY,
            max_results=PAGE_SIZE,
            order_by=["attributes.start_time ASC"],
            page_token=page_token,
        )

    try:
        runs = list(paginate(fetch_page))
    except MlflowException as exc:
        if filter_string:
            raise UserError(f"--filter {filter_string!r} is not a valid MLflow filter: {exc.message}") from exc
        raise UserError(f"cannot search runs in {uri}: {exc.message}") from exc
    return [_record(run, names[run.info.experiment_id]) for run in runs if run.info.status == "FINISHED"]


def log_report_artifacts(
    uri: str, run_id: str, paths: Iterable[str | Path], artifact_path: str | None = "report"
) -> str:
    """Log each file of `paths` into `artifact_path` of run `run_id`; return that folder's URI."""
    files = [Path(path) for path in paths]
    missing = [str(path) for path in files if not path.is_file()]
    if missing:
        raise UserError(f"cannot log {', '.join(missing)} to run {run_id}: no such file")
    client = open_store(uri)
    with _user_errors(uri, f"log files into run {run_id}: ask the server's admin for EDIT on its experiment"):
        run = _get_run(client, run_id, uri)
        for path in files:
            client.log_artifact(run_id, str(path), artifact_path)
    base = run.info.artifact_uri.rstrip("/")
    return f"{base}/{artifact_path}" if artifact_path else base


def open_store(uri: str) -> MlflowClient:
    """A client for an existing store: UserError when a local store (sqlite file, folder) is missing.

    Unlike `mlflow_tracker.connect`, this never creates a store: reading an empty one is a mistake.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    local = local_store(uri)
    if local is not None and not local.exists():
        raise UserError(
            f"no MLflow store at {local} (tracking uri {uri!r}): run an experiment first, "
            f"or pass --uri / set MLFLOW_TRACKING_URI to an existing store"
        )
    try:
        return MlflowClient(tracking_uri=uri)
    except MlflowException as exc:
        raise UserError(f"tracking uri {uri!r} is not a usable MLflow store: {exc.message}") from exc


def local_store(uri: str) -> Path | None:
    """The file or folder behind a local tracking URI (sqlite:///x.db, file:///dir, a path), else None."""
    parsed = urlparse(uri)
    if parsed.scheme == "sqlite":
        return sqlite_file(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if len(parsed.scheme) <= 1:  # a plain path (or a Windows drive letter)
        return Path(uri)
    return None


def _experiments(
    client: MlflowClient, wanted: Sequence[str] | None, parent_run_id: str | None, uri: str
) -> dict[str, str]:
    """Experiment id -> name of the experiments to search."""
    from mlflow.entities import LifecycleStage

    found: dict[str, str] = {}
    if wanted:
        for name in wanted:
            experiment = client.get_experiment_by_name(name)
            if experiment is None or experiment.lifecycle_stage == LifecycleStage.DELETED:
                known = ", ".join(sorted(e.name for e in _all_experiments(client))) or "none"
                raise UserError(f"no experiment named {name!r} in {uri} (experiments: {known})")
            found[experiment.experiment_id] = experiment.name
        return found
    found = {e.experiment_id: e.name for e in _all_experiments(client) if e.name.startswith(DEFAULT_EXPERIMENT_PREFIX)}
    if parent_run_id:
        parent = _get_run(client, parent_run_id, uri)
        experiment = client.get_experiment(parent.info.experiment_id)
        found[experiment.experiment_id] = experiment.name
    return found


def _all_experiments(client: MlflowClient) -> list[Experiment]:
    """Every active experiment of the store."""
    return list(paginate(lambda page_token: client.search_experiments(max_results=PAGE_SIZE, page_token=page_token)))


def _get_run(client: MlflowClient, run_id: str, uri: str) -> Run:
    """Run `run_id`, or UserError when the id is malformed or not in the store."""
    from mlflow.exceptions import MlflowException

    if not _RUN_ID.fullmatch(run_id):
        raise UserError(f"{run_id!r} is not an MLflow run id")
    try:
        return client.get_run(run_id)
    except MlflowException as exc:
        raise UserError(f"no run {run_id} in {uri}: {exc.message}") from exc


def _record(run: Run, experiment: str) -> RunRecord:
    """`run` as a plain record; `experiment` is its experiment's name."""
    tags = dict(run.data.tags)
    return RunRecord(
        run_id=run.info.run_id,
        run_name=run.info.run_name or "",
        status=run.info.status,
        tags=tags,
        params=dict(run.data.params),
        metrics={key: float(value) for key, value in run.data.metrics.items()},
        parent_run_id=tags.get(PARENT_RUN_TAG),
        experiment=experiment,
    )


@contextmanager
def _user_errors(uri: str, wanted: str = "read its runs: ask the server's admin for READ") -> Iterator[None]:
    """Turn an MlflowException raised inside the block into a UserError naming the store (a tracking
    server's refused login, or its refusal of the permission to `wanted`: `store.refused`)."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as exc:
        raise refused(exc, uri, wanted) or UserError(f"MLflow store {uri}: {exc.message}") from exc
