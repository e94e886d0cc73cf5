"""MlflowTracker, NullTracker and the store helpers, read back from a real sqlite store."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from mlflow.exceptions import MlflowException
from mlflow.store.entities.paged_list import PagedList
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_TAG_VAL_LENGTH
from servers import run_at_once

from conftest import compose
from ssimctr.errors import UserError
from ssimctr.tracking import (
    PARENT_RUN_ENV,
    NullTracker,
    Tracker,
    flatten_params,
    keeps_runs,
    make_tracker,
    mlflow_tracker,
    parent_run_id_from_env,
)
from ssimctr.tracking.mlflow_tracker import RUN_NAME_LENGTH, MlflowTracker, create_experiment
from ssimctr.tracking.store import PARENT_RUN_TAG, paginate, sqlite_file

EXPERIMENT = "tracker-tests"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """One migrated sqlite store and artifact root shared by the module."""
    root = tmp_path_factory.mktemp("mlflow")
    return f"sqlite:///{root}/mlflow.db", root / "artifacts"


@pytest.fixture(scope="module")
def client(store: tuple[str, Path]) -> MlflowClient:
    return MlflowClient(tracking_uri=store[0])


@pytest.fixture
def new_tracker(store: tuple[str, Path]) -> Callable[..., MlflowTracker]:
    def build(experiment: str = EXPERIMENT) -> MlflowTracker:
        return MlflowTracker(store[0], experiment, str(store[1]))

    return build


@pytest.fixture
def tracker(new_tracker: Callable[..., MlflowTracker]) -> MlflowTracker:
    tracker = new_tracker()
    tracker.start("unit", {"suite": "tracker"})
    return tracker


def test_flatten_params_dots_keys_and_renders_values() -> None:
    config = {"a": {"b": 1, "c": {"d": "x"}}, "l": [1, "two", None], "n": None, "t": True, "e": {}}
    assert flatten_params(config) == {
        "a.b": "1",
        "a.c.d": "x",
        "l": '[1, "two", null]',
        "n": "null",
        "t": "true",
        "e": "{}",
    }
    assert flatten_params({"k": "abcdef"}, prefix="p.", max_len=3) == {"p.k": "abc"}


def test_params_round_trip_in_batches(tracker: MlflowTracker, client: MlflowClient) -> None:
    params: dict[str, object] = {"model": {f"p{i}": i for i in range(150)}}
    params["dims"] = [64, 32]
    params["none"] = None
    params["long"] = "x" * (MAX_PARAM_VAL_LENGTH + 10)
    tracker.log_params(params)
    logged = client.get_run(tracker.run_id).data.params
    assert len(logged) == 153
    assert logged["model.p0"] == "0" and logged["model.p149"] == "149"
    assert logged["dims"] == "[64, 32]"
    assert logged["none"] == "null"
    assert len(logged["long"]) == MAX_PARAM_VAL_LENGTH


def test_metrics_logged_per_step(tracker: MlflowTracker, client: MlflowClient) -> None:
    for step in (1, 2, 3):
        tracker.log_metrics({"val/auc/mean": 0.5 + step / 10, "loss": 1.0 / step}, step=step)
    history = client.get_metric_history(tracker.run_id, "val/auc/mean")
    assert [(m.step, m.value) for m in history] == [(1, 0.6), (2, 0.7), (3, 0.8)]
    assert len(client.get_metric_history(tracker.run_id, "loss")) == 3


def test_nan_metric_is_stored(tracker: MlflowTracker, client: MlflowClient) -> None:
    tracker.log_metrics({"val/auc/s0": math.nan})
    (metric,) = client.get_metric_history(tracker.run_id, "val/auc/s0")
    assert math.isnan(metric.value) and metric.step == 0


def test_artifacts_file_and_directory(tracker: MlflowTracker, client: MlflowClient, tmp_path: Path) -> None:
    (tmp_path / "report.json").write_text("{}")
    plots = tmp_path / "plots"
    (plots / "sub").mkdir(parents=True)
    (plots / "sub" / "roc.png").write_bytes(b"png")
    tracker.log_artifact(tmp_path / "report.json")
    tracker.log_artifact(plots, "figures")
    run_id = tracker.run_id
    assert {f.path for f in client.list_artifacts(run_id)} == {"report.json", "figures"}
    assert [f.path for f in client.list_artifacts(run_id, "figures/plots/sub")] == ["figures/plots/sub/roc.png"]
    with pytest.raises(FileNotFoundError):
        tracker.log_artifact(tmp_path / "missing")


def test_tags_and_run_name(tracker: MlflowTracker, client: MlflowClient) -> None:
    tracker.set_tags({"dataset": "ali-ccp", "regime": "ssim"})
    run = client.get_run(tracker.run_id)
    assert run.data.tags["dataset"] == "ali-ccp"
    assert run.data.tags["suite"] == "tracker"
    assert run.info.run_name == "unit"


def test_end_failed_sets_status_and_truncated_error(tracker: MlflowTracker, client: MlflowClient) -> None:
    tracker.end("FAILED", error="Traceback\n" + "e" * MAX_TAG_VAL_LENGTH)
    run = client.get_run(tracker.run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["error"].startswith("Traceback")
    assert len(run.data.tags["error"]) == MAX_TAG_VAL_LENGTH
    assert run.info.end_time is not None


def test_end_finished_and_rejects_unknown_status(tracker: MlflowTracker, client: MlflowClient) -> None:
    with pytest.raises(ValueError, match="FINISHED, FAILED, KILLED"):
        tracker.end("DONE")
    tracker.end()
    run = client.get_run(tracker.run_id)
    assert run.info.status == "FINISHED" and "error" not in run.data.tags


def test_child_run_links_to_parent(
    tracker: MlflowTracker, new_tracker: Callable[..., MlflowTracker], client: MlflowClient
) -> None:
    child = new_tracker()
    child_id = child.start("child", {}, parent_run_id=tracker.run_id)
    assert child_id == child.run_id
    assert client.get_run(child_id).data.tags[MLFLOW_PARENT_RUN_ID] == tracker.run_id


def test_parent_run_tag_is_mlflows() -> None:
    assert PARENT_RUN_TAG == MLFLOW_PARENT_RUN_ID


def test_download_artifacts_round_trip(
    tracker: MlflowTracker, new_tracker: Callable[..., MlflowTracker], tmp_path: Path, capfd: pytest.CaptureFixture
) -> None:
    search = tmp_path / "ssim"
    (search / "masks").mkdir(parents=True)
    (search / "summary.json").write_text('{"kept": 3}')
    (search / "masks" / "s0.pt").write_bytes(bytes(range(256)))
    tracker.log_artifact(search)
    reader = new_tracker()  # any tracker of the store can read any run, started or not
    capfd.readouterr()
    folder = reader.download_artifacts(str(tracker.run_id), "ssim", tmp_path / "download")
    assert "Downloading artifacts" not in "".join(capfd.readouterr())  # no progress bar in a retrain's log
    assert folder == tmp_path / "download" / "ssim"
    copied = {path.relative_to(folder): path.read_bytes() for path in folder.rglob("*") if path.is_file()}
    assert copied == {
        Path("summary.json"): b'{"kept": 3}',
        Path("masks/s0.pt"): bytes(range(256)),
    }


def test_download_artifacts_of_unknown_run_names_the_fix(
    new_tracker: Callable[..., MlflowTracker], store: tuple[str, Path], tmp_path: Path
) -> None:
    run_id = "0" * 32
    message = (
        f"ssim.from_run={run_id}: no such run in {store[0]} (copy the run id from the search run's "
        "output or the MLflow UI, and use the same tracking.uri)"
    )
    with pytest.raises(UserError, match=f"^{re.escape(message)}$"):
        new_tracker().download_artifacts(run_id, "ssim", tmp_path / "download")


def test_download_artifacts_of_run_without_them(tracker: MlflowTracker, tmp_path: Path) -> None:
    message = f"run {tracker.run_id} has no 'ssim' artifacts: is it an ssim=search run?"
    with pytest.raises(UserError, match=f"^{re.escape(message)}$"):
        tracker.download_artifacts(str(tracker.run_id), "ssim", tmp_path / "download")


def test_a_long_run_name_is_cut_to_fit_every_backend(new_tracker: Callable[..., MlflowTracker]) -> None:
    """MLflow's run name column holds 250 characters, which PostgreSQL enforces (SQLite does not)."""
    tracker = new_tracker()
    tracker.start("sweep " + "x" * 300, {})
    assert tracker.client.get_run(tracker.run_id).info.run_name == ("sweep " + "x" * 300)[:RUN_NAME_LENGTH]
    assert RUN_NAME_LENGTH <= 250


def test_logging_before_start_is_an_error(new_tracker: Callable[..., MlflowTracker]) -> None:
    tracker = new_tracker()
    assert tracker.run_id is None
    tracker.end()
    with pytest.raises(RuntimeError, match="start"):
        tracker.log_metrics({"x": 1.0})


def test_experiment_is_reused_with_file_uri_artifact_location(
    new_tracker: Callable[..., MlflowTracker], client: MlflowClient, store: tuple[str, Path]
) -> None:
    first, second = new_tracker("reuse"), new_tracker("reuse")
    assert first.experiment_id == second.experiment_id
    location = client.get_experiment(first.experiment_id).artifact_location
    assert location == store[1].resolve().as_uri()


def test_relative_artifact_location_resolves_against_cwd(
    store: tuple[str, Path], client: MlflowClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    tracker = MlflowTracker(store[0], "relative", "rel/artifacts")
    location = client.get_experiment(tracker.experiment_id).artifact_location
    assert location == (tmp_path / "rel" / "artifacts").resolve().as_uri()


def test_create_experiment_tolerates_concurrent_creation(client: MlflowClient) -> None:
    existing = client.create_experiment("raced")
    assert create_experiment(client, "raced", None).experiment_id == existing


def test_deleted_experiment_is_a_user_error(new_tracker: Callable[..., MlflowTracker], client: MlflowClient) -> None:
    client.delete_experiment(new_tracker("gone").experiment_id)
    with pytest.raises(UserError, match="tracking.experiment='gone'"):
        new_tracker("gone")


def test_sqlite_file_of_uri() -> None:
    assert sqlite_file("sqlite:///outputs/mlflow.db") == Path("outputs/mlflow.db")
    assert sqlite_file("sqlite:////abs/m.db?timeout=5") == Path("/abs/m.db")
    assert sqlite_file("sqlite:///:memory:") is None
    assert sqlite_file("http://localhost:5000") is None


def test_null_tracker_does_nothing(tmp_path: Path) -> None:
    tracking = compose("tracking=none", "tracking.uri=sqlite:///unused.db").tracking  # store keys: taken, unused
    tracker = make_tracker(tracking)
    assert isinstance(tracker, NullTracker) and isinstance(tracker, Tracker)
    assert not keeps_runs(tracking) and keeps_runs(compose("tracking=mlflow").tracking)
    assert tracker.start("x", {"a": "b"}, parent_run_id="p") is None
    assert tracker.run_id is None
    tracker.log_params({"a": 1})
    tracker.log_metrics({"m": 1.0}, step=1)
    tracker.log_artifact(tmp_path / "missing")
    tracker.set_tags({"a": "b"})
    tracker.end("FAILED", error="boom")
    assert list(tmp_path.iterdir()) == []


def test_null_tracker_cannot_download_artifacts(tmp_path: Path) -> None:
    message = (
        "ssim.from_run needs tracking=mlflow (this run has tracking=none): "
        "use ssim.from_path=<the search run's ssim/ folder>"
    )
    with pytest.raises(UserError, match=f"^{re.escape(message)}$"):
        NullTracker().download_artifacts("abc", "ssim", tmp_path / "download")
    assert list(tmp_path.iterdir()) == []


def test_tracking_mlflow_builds_the_mlflow_tracker_with_its_options(store: tuple[str, Path]) -> None:
    options = (
        f"tracking.uri={store[0]}",
        f"tracking.experiment={EXPERIMENT}",
        f"tracking.artifact_location={store[1]}",
    )
    tracker = make_tracker(compose("tracking=mlflow", *options).tracking)
    assert isinstance(tracker, MlflowTracker) and isinstance(tracker, Tracker)
    assert tracker.uri == store[0] and tracker.keeps_models
    named = make_tracker(
        compose("tracking=mlflow", *options, "tracking.run_name=mine", "tracking.log_model=false").tracking
    )
    run_id = named.start("the runner's name", {})
    assert MlflowClient(store[0]).get_run(run_id).info.run_name == "mine"  # tracking.run_name wins
    assert named.log_model(torch.nn.Linear(1, 1), []) is None  # tracking.log_model=false: nothing logged
    assert MlflowClient(store[0]).search_logged_models([named.experiment_id]) == []
    named.end()


def test_paginate_yields_every_item_of_every_page() -> None:
    pages = {None: PagedList([1, 2], "b"), "b": PagedList([], "c"), "c": PagedList([3], None)}
    tokens: list[str | None] = []

    def fetch_page(token: str | None) -> PagedList[int]:
        tokens.append(token)
        return pages[token]

    assert list(paginate(fetch_page)) == [1, 2, 3]
    assert tokens == [None, "b", "c"]


def test_parent_run_id_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PARENT_RUN_ENV, raising=False)
    assert parent_run_id_from_env() is None
    monkeypatch.setenv(PARENT_RUN_ENV, "abc")
    assert parent_run_id_from_env() == "abc"


LOG_ONE_RUN = """
import sys
from ssimctr.tracking.mlflow_tracker import MlflowTracker
tracker = MlflowTracker(sys.argv[1], "parallel")
tracker.start(sys.argv[2], {})
for step in range(int(sys.argv[3])):  # one write transaction per call, as an epoch loop logs
    tracker.log_metrics({"train/loss": 1.0 / (step + 1), "test/auc/mean": 0.5}, step=step)
    tracker.set_tags({"epoch": str(step)})
tracker.end()
"""
STEPS = 15


def test_jobs_that_open_a_new_store_at_once_all_log_and_leave_it_usable(tmp_path: Path):
    """Without the lock around the first migration, 2 of 4 simultaneous first runs fail
    (`duplicate column name`) and the store can be left half-migrated for every later run. Then
    the 4 jobs write at once, step after step (what hydra/launcher=joblib does), and lose nothing."""
    uri = f"sqlite:///{tmp_path}/new/mlflow.db"
    run_at_once(LOG_ONE_RUN, [[uri, f"job{i}", str(STEPS)] for i in range(4)])
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("parallel").experiment_id])
    assert sorted(run.info.run_name for run in runs) == [f"job{i}" for i in range(4)]
    assert all(run.info.status == "FINISHED" and run.data.metrics["test/auc/mean"] == 0.5 for run in runs)
    for run in runs:
        history = client.get_metric_history(run.info.run_id, "train/loss")
        assert sorted(metric.step for metric in history) == list(range(STEPS))
        assert run.data.tags["epoch"] == str(STEPS - 1)


class Locked:
    """A store call that answers `database is locked` `times` times, then `result`."""

    def __init__(self, times: int, error: Exception | None = None) -> None:
        self.calls, self.times = 0, times
        self.error = error or MlflowException("(sqlite3.OperationalError) database is locked")

    def __call__(self, *args: object, **kwargs: object) -> str:
        self.calls += 1
        if self.calls <= self.times:
            raise self.error
        return "done"


def test_locked_sqlite_writes_are_retried_with_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[float] = []
    monkeypatch.setattr(mlflow_tracker.time, "sleep", waits.append)
    call = Locked(times=3)
    assert mlflow_tracker._retry_locked(call, "run", metrics=[]) == "done"
    assert call.calls == 4 and len(waits) == 3
    assert all(0.25 * 2**i <= wait <= 0.75 * 2**i for i, wait in enumerate(waits))


def test_locked_sqlite_write_gives_up_and_other_errors_are_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mlflow_tracker.time, "sleep", lambda seconds: None)
    always = Locked(times=100)
    with pytest.raises(MlflowException, match="database is locked"):
        mlflow_tracker._retry_locked(always)
    assert always.calls == mlflow_tracker.LOCKED_RETRIES + 1
    other = Locked(times=1, error=MlflowException("RESOURCE_DOES_NOT_EXIST: run x"))
    with pytest.raises(MlflowException, match="RESOURCE_DOES_NOT_EXIST"):
        mlflow_tracker._retry_locked(other)
    assert other.calls == 1


def test_sqlite_store_gets_the_retrying_client(store: tuple[str, Path]) -> None:
    assert isinstance(mlflow_tracker.connect(store[0]), mlflow_tracker.SqliteClient)


@pytest.mark.parametrize(
    ("uri", "location", "expected"),
    [
        ("http://127.0.0.1:5000", "outputs/mlartifacts", None),  # the server's served artifact root
        ("https://mlflow.example.org", "/data/mlartifacts", None),
        ("http://127.0.0.1:5000", "s3://bucket/mlartifacts", "s3://bucket/mlartifacts"),
        ("sqlite:///outputs/mlflow.db", "outputs/mlartifacts", "outputs/mlartifacts"),
    ],
)
def test_experiment_artifacts_on_a_server_are_the_servers(uri: str, location: str, expected: str | None) -> None:
    assert mlflow_tracker.experiment_artifacts(uri, location) == expected
