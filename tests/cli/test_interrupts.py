"""Runs that end early end cleanly: Ctrl-C and SIGTERM mark the run KILLED with one line, and a
run whose process died without a word is marked FAILED at the next start (real processes)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ssimctr.tracking.mlflow_tracker import HOST_TAG, PID_TAG, MlflowTracker, connect

LONG = ["dataset.rows=20000", "trainer.epochs=1000", "trainer.patience=1000", "trainer.progress=false"]


def _only_run(uri: str, timeout: float = 120):
    """The store's one run, once it has logged its first epoch's validation."""
    client = connect(uri)  # under the store's lock: the job may be creating it
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        experiment = client.get_experiment_by_name("ssimctr-synthetic")
        runs = client.search_runs([experiment.experiment_id]) if experiment else []
        if runs and "val/auc/mean" in runs[0].data.metrics:
            return client, runs[0]
        time.sleep(0.5)
    raise AssertionError("the run logged no epoch in time")


@pytest.mark.parametrize(
    ("signum", "code", "cause"), [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated (SIGTERM)")]
)
def test_a_stopped_training_marks_the_run_killed_and_says_where_in_one_line(tmp_path, signum, code, cause):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    job = subprocess.Popen(
        [sys.executable, "-m", "ssimctr", f"paths.outputs={tmp_path}", *LONG],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        client, run = _only_run(uri)
        job.send_signal(signum)
        _, stderr = job.communicate(timeout=60)
    finally:
        job.kill()
    assert job.returncode == code
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()[-1:]  # (MLflow's lines about creating the store come first)
    where = r"epoch \d+, (batch \d+/\d+|after its training batches)"
    saved = (  # the first epoch's checkpoint, unless the stop came between its metrics and its checkpoint
        r"checkpoint at (?P<checkpoint>\S+); the run is marked KILLED \(continue it: ssimctr resume=(?P<folder>\S+)\)"
        r"|no checkpoint yet; the run is marked KILLED"
    )
    said = re.fullmatch(rf"{re.escape(cause)} at {where}; ({saved})", lines[0])
    assert said, lines
    if said["checkpoint"]:
        assert Path(said["checkpoint"]).is_file() and Path(said["checkpoint"]).parent.parent == Path(said["folder"])
    run = client.get_run(run.info.run_id)
    assert run.info.status == "KILLED" and run.data.tags["error"].startswith(f"{cause} at epoch ")


HOLD_A_RUN = """
import sys, time
from ssimctr.tracking.mlflow_tracker import MlflowTracker
tracker = MlflowTracker(sys.argv[1], "orphans")
print(tracker.start("doomed", {}), flush=True)
time.sleep(600)
"""


def test_a_run_whose_process_died_is_marked_failed_at_the_next_start(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_A_RUN, uri], stdout=subprocess.PIPE, text=True)
    doomed = holder.stdout.readline().strip()
    alive = MlflowTracker(uri, "orphans")
    alive.start("beside it", {})  # its process is alive: the run stays RUNNING
    client = alive.client
    assert client.get_run(doomed).info.status == "RUNNING"
    assert client.get_run(doomed).data.tags[PID_TAG] == str(holder.pid) and HOST_TAG in client.get_run(doomed).data.tags
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=30)
    MlflowTracker(uri, "orphans").start("next", {})
    dead = client.get_run(doomed)
    assert dead.info.status == "FAILED" and f"process {holder.pid}" in dead.data.tags["error"]
    assert client.get_run(alive.run_id).info.status == "RUNNING"  # this process is alive
