"""The MLflow UI, in a real headless browser, opens ssimctr's saved view: the runs table with each
scenario's test AUC as columns (ssimctr.tracking.views). Needs chromium (Debian: apt-get install chromium)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from servers import free_port, stop_group, wait_healthy

from ssimctr.tracking.mlflow_tracker import MlflowTracker
from ssimctr.tracking.views import VIEW_NAME, view_url

BROWSER = next(
    (shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome") if shutil.which(name)), None
)
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(BROWSER is None, reason="no chromium on PATH (apt-get install chromium)"),
]
RUN_NAME = "seed=7 · synthetic-dnn-mt"
SCENARIOS = ("s0", "s1", "s2", "mean", "overall")


@contextlib.contextmanager
def mlflow_ui(uri: str) -> Iterator[str]:
    """`mlflow ui` over the store `uri` on a free loopback port: its address."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its workers in one process group, stopped together below
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},  # no job runner, no huey consumers
    )
    address = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(address, server, timeout=120)
        yield address
    finally:
        stop_group(server, timeout=20)


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(UI address, experiment id): `mlflow ui` over a store with one finished ssimctr run, logged through
    ssimctr's own tracker."""
    root = tmp_path_factory.mktemp("ui-store")
    uri = f"sqlite:///{root}/mlflow.db"
    tracker = MlflowTracker(uri, "ssimctr-synthetic", str(root / "mlartifacts"))
    tracker.start(RUN_NAME, {"backbone": "dnn", "regime": "mt", "seed": "7"})
    tracker.log_params({"dataset": {"rows": 3000}, "seed": 7})
    tracker.log_metrics({f"test/auc/{s}": 0.7 + 0.01 * i for i, s in enumerate(SCENARIOS)})
    tracker.log_metrics({f"test/logloss/{s}": 0.5 for s in SCENARIOS})
    tracker.end("FINISHED")
    with mlflow_ui(uri) as address:
        yield address, tracker.experiment_id


def browse(url: str, screenshot: Path) -> str:
    """The DOM of `url` after the JS app has rendered (15 s of virtual time), and a 1600x1000 screenshot."""
    with tempfile.TemporaryDirectory() as profile:  # a fresh browser: no column choice in localStorage
        result = subprocess.run(
            [
                BROWSER,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                f"--user-data-dir={profile}",
                "--window-size=1600,1000",
                "--virtual-time-budget=15000",
                f"--screenshot={screenshot}",
                "--dump-dom",
                url,
            ],
            capture_output=True,
            text=True,
            timeout=180,
        )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_the_saved_view_shows_each_scenarios_test_auc(ui: tuple[str, str], tmp_path: Path) -> None:
    address, experiment_id = ui
    png = tmp_path / "runs.png"
    dom = browse(view_url(experiment_id, address), png)
    assert RUN_NAME in dom
    assert VIEW_NAME in dom  # the Views menu names the active view
    for scenario in SCENARIOS:
        assert f"test/auc/{scenario}" in dom  # a column header
    assert "test/logloss/s0" not in dom  # only the view's columns
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000  # a rendered page, not a blank one


SWEEP = ["regime=mt,mt_s,single", "seed=1,2,3"]  # `make sweep`, on small data
SMALL = ["dataset.rows=6000", "dataset.users=500", "dataset.items=200", "trainer=debug", "trainer.progress=false"]


def test_a_3x3_sweep_reads_at_a_glance(tmp_path: Path) -> None:
    """After a real 3 x 3 multirun (and a failed run): the saved view lists the nine jobs, named by what
    sets them apart, with each scenario's test AUC; the parent run and the failed run are filtered out.
    SSIMCTR_UI_SCREENSHOT=<file.png> keeps the screenshot (docs/mlflow-runs-view.png)."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    command = [sys.executable, "-m", "ssimctr", "-m", f"paths.outputs={tmp_path}", *SWEEP, *SMALL]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    tracker = MlflowTracker(uri, "ssimctr-synthetic", str(tmp_path / "mlartifacts"))
    tracker.start("a failed job", {})
    tracker.end("FAILED", "boom")
    png = Path(os.environ.get("SSIMCTR_UI_SCREENSHOT") or tmp_path / "runs.png")
    with mlflow_ui(uri) as address:
        dom = browse(view_url(tracker.experiment_id, address), png)
    names = [f"{regime} seed={seed} · synthetic-dnn" for regime in ("mt", "mt_s", "single") for seed in (1, 2, 3)]
    assert all(name in dom for name in names), [name for name in names if name not in dom]
    assert "a failed job" not in dom and "sweep " not in dom  # the view's filter: finished jobs only
    assert all(f"test/auc/{scenario}" in dom for scenario in ("s0", "s1", "s2", "mean"))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
