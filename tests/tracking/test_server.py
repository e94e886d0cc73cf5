"""A shared tracking server (`make server`): jobs and parallel processes log over HTTP, on a SQLite
and on a PostgreSQL backend store, with the artifacts served by the server."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from servers import free_port, run_at_once, tracking_server

from conftest import assert_every_metric
from ssimctr.tracking import PARENT_RUN_ENV

pytestmark = pytest.mark.slow

POSTGRES_BIN = next(
    (
        Path(p).parent
        for p in [shutil.which("initdb") or "", *sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))]
        if p and Path(p).is_file()
    ),
    None,
)
SWEEP_EXTRA = "the sweep extra is not installed (pip install -e '.[sweep]')"
TINY = ["dataset.rows=2000", "dataset.users=300", "dataset.items=100", "trainer=debug", "trainer.epochs=1"]


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on a free loopback port; yields the URI of its `mlflow` database.
    PostgreSQL refuses to run as root: as root, the cluster belongs to (and runs as) `nobody`."""
    if POSTGRES_BIN is None:
        pytest.skip("PostgreSQL is not installed (no initdb on PATH or in /usr/lib/postgresql/*/bin)")
    pytest.importorskip("psycopg", reason="psycopg is not installed: pip install -e '.[postgres]'")
    as_user: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            pytest.skip("running as root, and no runuser to start PostgreSQL as another user")
        as_user = ["runuser", "-u", "nobody", "--"]
    folder = Path(tempfile.mkdtemp(prefix="ssimctr-pg-"))  # not under pytest's root-only tmp folders
    if as_user:
        shutil.chown(folder, user="nobody")
    port, data = free_port(), folder / "data"
    pg_ctl = [*as_user, str(POSTGRES_BIN / "pg_ctl"), "-D", str(data)]
    try:
        initdb = [*as_user, str(POSTGRES_BIN / "initdb"), "-D", str(data), "-U", "mlflow", "--auth=trust"]
        subprocess.run(initdb, check=True, capture_output=True, timeout=120)
        options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1"
        subprocess.run([*pg_ctl, "-o", options, "-l", str(folder / "log"), "-w", "start"], check=True, timeout=120)
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=port, user="mlflow", dbname="postgres", autocommit=True) as db:
            db.execute("CREATE DATABASE mlflow")
        yield f"postgresql://mlflow@127.0.0.1:{port}/mlflow"
    finally:
        subprocess.run([*pg_ctl, "-m", "fast", "-w", "stop"], capture_output=True, timeout=120)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """`make server`'s tracking server (open on the loopback address) on a free port: its URL and artifact folder."""
    root = tmp_path_factory.mktemp(f"server-{request.param}")
    with contextlib.ExitStack() as stack:
        store = f"sqlite:///{root}/mlflow.db"
        if request.param == "postgresql":
            store = stack.enter_context(postgres_database())
        yield stack.enter_context(tracking_server(root, store)), root / "artifacts"


def test_a_job_logs_to_the_server_named_by_mlflow_tracking_uri(server: tuple[str, Path], tmp_path: Path) -> None:
    """conf/tracking/mlflow.yaml reads MLFLOW_TRACKING_URI; the run's artifacts go through the server
    into its artifact folder (not into the job's local outputs/mlartifacts)."""
    url, artifacts = server
    env = {**os.environ, "MLFLOW_TRACKING_URI": url}
    env.pop(PARENT_RUN_ENV, None)
    result = subprocess.run(
        [sys.executable, "-m", "ssimctr", f"paths.outputs={tmp_path}", "trainer.progress=false", *TINY],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"in {url}" in result.stdout
    client = MlflowClient(tracking_uri=url)
    [run] = client.search_runs([client.get_experiment_by_name("ssimctr-synthetic").experiment_id])
    assert run.info.status == "FINISHED" and "test/auc/mean" in run.data.metrics
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")
    assert "config.yaml" in {f.path for f in client.list_artifacts(run.info.run_id)}
    assert list(artifacts.rglob("config.yaml")) and not (tmp_path / "mlartifacts").exists()
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.skipif(importlib.util.find_spec("hydra_plugins.hydra_joblib_launcher") is None, reason=SWEEP_EXTRA)
def test_a_joblib_multirun_logs_its_parent_and_children_over_http(server: tuple[str, Path], tmp_path: Path) -> None:
    """4 jobs on 2 joblib workers, each process a client of the server: 1 parent, 4 finished children."""
    url, _ = server
    env = {**os.environ, "MLFLOW_TRACKING_URI": url}
    env.pop(PARENT_RUN_ENV, None)
    experiment = f"joblib-over-http-{tmp_path.name}"  # the module's server is shared with other tests
    command = [sys.executable, "-m", "ssimctr", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    result = subprocess.run(
        [*command, "regime=mt,single", "seed=1,2", f"tracking.experiment={experiment}", f"paths.outputs={tmp_path}"]
        + ["trainer.progress=false", *TINY],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(tracking_uri=url)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    [parent] = [r for r in runs if r.data.tags.get("ssimctr.kind") == "sweep"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(runs) == 5 and len(children) == 4 and parent.info.status == "FINISHED"
    assert all(r.info.status == "FINISHED" for r in children)
    assert_every_metric(children)
    assert not (tmp_path / "mlflow.db").exists()


LOG_STEPS = """
import sys
from ssimctr.tracking.mlflow_tracker import MlflowTracker
tracker = MlflowTracker(sys.argv[1], "parallel-http", "outputs/mlartifacts")
tracker.start(sys.argv[2], {})
for step in range(int(sys.argv[3])):
    tracker.log_metrics({"train/loss": 1.0 / (step + 1)}, step=step)
tracker.end()
"""


def test_parallel_processes_log_everything_over_http(server: tuple[str, Path]) -> None:
    url, _ = server
    steps = 20
    run_at_once(LOG_STEPS, [[url, f"job{i}", str(steps)] for i in range(4)])
    client = MlflowClient(tracking_uri=url)
    runs = client.search_runs([client.get_experiment_by_name("parallel-http").experiment_id])
    assert sorted(run.info.run_name for run in runs) == [f"job{i}" for i in range(4)]
    for run in runs:
        assert run.info.status == "FINISHED"
        history = client.get_metric_history(run.info.run_id, "train/loss")
        assert sorted(metric.step for metric in history) == list(range(steps))
