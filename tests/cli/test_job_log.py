"""Hydra's job log, <run dir>/main.log, holds the key lines of a job; the terminal shows each line once."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

TINY = ["dataset.rows=3000", "dataset.users=300", "dataset.items=100", "trainer=debug", "trainer.epochs=2"]


@pytest.mark.slow  # a whole job in a subprocess (about 10 s on an idle 2-core machine)
def test_main_log_has_the_key_lines_and_the_terminal_no_log_records(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ssimctr", f"paths.outputs={tmp_path}", *TINY],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (log,) = tmp_path.glob("runs/*/*/main.log")
    lines = log.read_text().splitlines()
    messages = [re.sub(r"^\[[^]]+\]\[([\w.]+)\]\[INFO\] - ", r"\1: ", line) for line in lines]
    run_id = re.search(r"MLflow run (\w+) in\s+sqlite:///", result.stdout).group(1)
    expected = [
        rf"ssimctr.cli.runner: MLflow run {run_id} in sqlite:///{tmp_path}/mlflow.db; outputs in {log.parent}; "
        r"overrides: paths.outputs=.*trainer.epochs=2$",
        r"ssimctr.cli.console: data synthetic: 3 scenarios \(s0, s1, s2\); train [\d,]+, val [\d,]+, test [\d,]+ ",
        r"ssimctr.cli.console: oracle test AUC \(true click probability\): s0 0.\d{4}, ",
        r"ssimctr.tasks.multi_scenario: DNN / regime mt: [\d,]+ parameters on cpu$",
        r"ssimctr.train.loop: epoch 1/2: val/auc/mean 0.\d{4} \(best\), train loss 0.\d{4}, [\d,]+ rows/s; 1 more ",
        r"ssimctr.train.loop: epoch 2/2: ",
        r"ssimctr.cli.console: test: regime mt; best epoch \d: s0 AUC 0.\d{4} logloss 0.\d{4}; s1 .*; "
        r"overall AUC 0.\d{4} logloss 0.\d{4}; mean AUC 0.\d{4} logloss 0.\d{4}$",
        rf"ssimctr.cli.console: MLflow run {run_id} in sqlite:///{tmp_path}/mlflow.db$",
    ]
    for pattern in expected:
        assert any(re.match(pattern, message) for message in messages), (pattern, messages)
    # each epoch's line is printed once: the log records do not reach the terminal
    assert "[INFO]" not in result.stdout and "[INFO]" not in result.stderr
    assert len(re.findall(r"^epoch 1/2: val/auc/mean", result.stdout, re.MULTILINE)) == 1
    # Hydra's own files are the run's artifacts hydra/*
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    hydra = {a.path for a in client.list_artifacts(run_id, "hydra")}
    assert hydra == {"hydra/config.yaml", "hydra/hydra.yaml", "hydra/overrides.yaml"}
