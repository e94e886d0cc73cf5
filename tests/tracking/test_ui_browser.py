"""The MLflow UI, in a real headless browser, opens ssimctr's saved view: the runs table with each
scenario's test AUC as columns (ssimctr.tracking.views). Needs chromium (Debian: apt-get install chromium)."""

from __future__ import annotations

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
RUN_NAME = "synthetic-dnn-mt seed=7"
SCENARIOS = ("s0", "s1", "s2", "mean", "overall")


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(UI address, experiment id): `mlflow ui` on a free loopback port over a store with one finished
    ssimctr run, logged through ssimctr's own tracker."""
    root = tmp_path_factory.mktemp("ui-store")
    uri = f"sqlite:///{root}/mlflow.db"
    tracker = MlflowTracker(uri, "ssimctr-synthetic", str(root / "mlartifacts"))
    tracker.start(RUN_NAME, {"backbone": "dnn", "regime": "mt", "seed": "7"})
    tracker.log_params({"dataset": {"rows": 3000}, "seed": 7})
    tracker.log_metrics({f"test/auc/{s}": 0.7 + 0.01 * i for i, s in enumerate(SCENARIOS)})
    tracker.log_metrics({f"test/logloss/{s}": 0.5 for s in SCENARIOS})
    tracker.end("FINISHED")
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
        yield address, tracker.experiment_id
    finally:
        stop_group(server, timeout=20)


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
