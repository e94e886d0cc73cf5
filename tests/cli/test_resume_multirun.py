"""`ssimctr resume=<multirun folder | parent run id>`: a grid stopped part-way (SIGTERM) runs only its
unfinished jobs again, with the same job numbers, under the same parent run, and ends as the grid run
without a stop ends, job by job."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import hydra
import pytest
import yaml
from mlflow.tracking import MlflowClient

from ssimctr.cli.main import CONFIG_DIR
from ssimctr.cli.resume import sweep_job, sweep_jobs
from ssimctr.errors import UserError
from ssimctr.tracking.runs import search_runs
from ssimctr.train.checkpoint import CHECKPOINTS, read_run

GRID = [
    "seed=1,2,3",
    "dataset.rows=20000",
    "backbone.hidden=[16]",
    "trainer.batch_size=128",
    "trainer.epochs=3",
    "trainer.patience=3",
    "trainer.threads=1",
    "trainer.progress=false",
]


def ssimctr(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "ssimctr", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs
    )


def results(uri: str, parent: str) -> dict[str, dict[str, float]]:
    """seed -> the test metrics of the parent's finished children."""
    return {
        run.tags["seed"]: {k: v for k, v in run.metrics.items() if k.startswith("test/")}
        for run in search_runs(uri, parent_run_id=parent)
    }


@pytest.mark.slow
def test_a_grid_stopped_in_its_second_job_resumes_its_unfinished_jobs_and_ends_as_the_whole_grid(tmp_path):
    cache = tmp_path / "cache"
    whole_uri, uri = f"sqlite:///{tmp_path}/whole.db", f"sqlite:///{tmp_path}/mlflow.db"
    whole = ssimctr("-m", *GRID, f"paths.outputs={tmp_path}/whole", f"paths.cache={cache}", f"tracking.uri={whole_uri}")
    _, stderr = whole.communicate(timeout=600)
    assert whole.returncode == 0, stderr

    outputs = tmp_path / "stopped"
    job = ssimctr("-m", *GRID, f"paths.outputs={outputs}", f"paths.cache={cache}", f"tracking.uri={uri}")
    try:
        deadline = time.monotonic() + 300
        while not list(outputs.glob(f"multirun/*/*/1/{CHECKPOINTS}/*.pt")):  # job 1 (seed 2) has an epoch done
            assert time.monotonic() < deadline and job.poll() is None, job.stderr.read() if job.poll() else ""
            time.sleep(0.05)
        job.send_signal(signal.SIGTERM)
        _, stderr = job.communicate(timeout=120)
    finally:
        job.kill()
    [sweep] = outputs.glob("multirun/*/*")
    assert job.returncode == 143
    assert stderr.strip().splitlines()[-1].endswith(f"(continue it: ssimctr resume={sweep})")
    assert [sweep_job(sweep / str(n)) for n in range(3)] == ["skip", "resume", "run"]
    parent = (sweep / "parent_run_id").read_text()
    assert len(search_runs(uri, parent_run_id=parent)) == 1  # job 0 finished

    resumed = ssimctr(f"resume={parent}", f"tracking.uri={uri}", f"paths.outputs={outputs}")  # the parent's run id
    stdout, stderr = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, stderr
    assert f"resuming multirun {sweep.resolve()}: jobs 1, 2 of 3" in stdout
    assert f"{sweep.resolve()}/0: finished already" in stdout.replace("\n", "")

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_run(parent).info.experiment_id])
    assert client.get_run(parent).info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent]
    assert sorted(r.data.tags["seed"] for r in children) == ["1", "2", "3"]  # one run per job: the stopped one resumed
    assert all(r.info.status == "FINISHED" for r in children) and len(runs) == 4  # the parent and its 3 jobs
    for n, seed in enumerate((1, 2, 3)):  # the same job numbers
        assert yaml.safe_load((sweep / str(n) / "config.yaml").read_text())["seed"] == seed
        assert read_run(sweep / str(n))["status"] == "finished" and not (sweep / str(n) / CHECKPOINTS).exists()
    [whole_parent] = [r.info.run_id for r in MlflowClient(whole_uri).search_runs(["1"]) if "sweep_dir" in r.data.tags]
    assert results(uri, parent) == results(whole_uri, whole_parent)  # job by job, to the last bit
    steps = [m.step for m in client.get_metric_history(read_run(sweep / "1")["run_id"], "val/auc/mean")]
    assert steps == [1, 2, 3]  # the stopped job's epochs, each logged once

    again = ssimctr(f"resume={sweep}", f"tracking.uri={uri}", f"paths.outputs={outputs}")
    _, stderr = again.communicate(timeout=120)
    assert again.returncode == 2
    assert stderr.strip().splitlines()[-1] == (
        f"error: resume={sweep}: all 3 jobs of the multirun finished; nothing to resume"
    )


def test_a_grid_replays_in_job_order_and_a_search_is_refused(tmp_path):
    recorded = {
        "hydra": {
            "sweeper": {
                "_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper",
                "params": {"seed": "1,2"},
            },
            "overrides": {"task": ["regime=mt,single", "trainer=debug"], "hydra": []},
        }
    }
    (tmp_path / "multirun.yaml").write_text(yaml.safe_dump(recorded))
    assert sweep_jobs(tmp_path) == [
        ["seed=1", "regime=mt", "trainer=debug"],
        ["seed=1", "regime=single", "trainer=debug"],
        ["seed=2", "regime=mt", "trainer=debug"],
        ["seed=2", "regime=single", "trainer=debug"],
    ]
    # a group's options, as in experiments
    recorded["hydra"]["sweeper"]["params"] = {"+_parts/table_ssim_ablation": "glob(*)"}
    (tmp_path / "multirun.yaml").write_text(yaml.safe_dump(recorded))
    with hydra.initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        jobs = sweep_jobs(tmp_path)
    options = sorted(path.stem for path in (Path(CONFIG_DIR) / "_parts" / "table_ssim_ablation").glob("*.yaml"))
    assert [job[0] for job in jobs] == [f"+_parts/table_ssim_ablation={o}" for o in options for _ in range(2)]
    recorded["hydra"]["sweeper"]["_target_"] = "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    (tmp_path / "multirun.yaml").write_text(yaml.safe_dump(recorded))
    with pytest.raises(UserError, match="its jobs came from OptunaSweeper, whose next trials depend on the results"):
        sweep_jobs(tmp_path)


def test_each_job_of_a_resumed_grid_is_skipped_resumed_rerun_or_run(tmp_path):
    (tmp_path / "finished").mkdir()
    (tmp_path / "finished" / "run.json").write_text('{"status": "finished"}')
    (tmp_path / "stopped" / CHECKPOINTS).mkdir(parents=True)
    (tmp_path / "stopped" / "run.json").write_text('{"status": "running"}')
    (tmp_path / "stopped" / CHECKPOINTS / "FixedSharing-0.pt").write_bytes(b"")
    (tmp_path / "early").mkdir()
    (tmp_path / "early" / "run.json").write_text('{"status": "running"}')
    states = {name: sweep_job(tmp_path / name) for name in ("finished", "stopped", "early", "never")}
    assert states == {"finished": "skip", "stopped": "resume", "early": "rerun", "never": "run"}
