"""Every job gets its own folder, whatever starts at the same moment, and a folder whose files belong to
different jobs is refused by resume instead of resumed (issue: two jobs started in the same second
shared one folder, and resume then finished the wrong run)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from conftest import compose
from ssimctr.cli.runner import JobInfo, run
from ssimctr.errors import UserError
from ssimctr.train.checkpoint import CHECKPOINTS, RUN_FILE, Checkpointer, read_run, resumable

TINY = ["dataset.rows=3000", "dataset.users=300", "dataset.items=100", "trainer=debug", "trainer.progress=false"]
QUIET = Console(quiet=True)


@pytest.mark.slow
def test_jobs_started_in_the_same_second_get_a_folder_each_with_their_own_files(tmp_path):
    """Four jobs started together (one shared data cache and store): four folders, each with the seed it
    was given in its config.yaml, run.json and MLflow run, and nothing of another job."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    subprocess.run(  # the data and the store once, so that the four jobs below start at once
        [sys.executable, "-m", "ssimctr", *TINY, f"paths.outputs={tmp_path}", "tracking=none"], check=True, timeout=300
    )
    shutil.rmtree(tmp_path / "runs")
    seeds = [21, 22, 23, 24]
    jobs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ssimctr",
                *TINY,
                f"seed={seed}",
                f"paths.outputs={tmp_path}",
                f"tracking.uri={uri}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in seeds
    ]
    errors = [job.communicate(timeout=600)[1] for job in jobs]
    assert [job.returncode for job in jobs] == [0] * len(jobs), errors
    folders = sorted(tmp_path.glob("runs/*/*"))
    assert len(folders) == len(seeds)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    found = []
    for folder in folders:
        seed = yaml.safe_load((folder / "config.yaml").read_text())["seed"]
        recorded = read_run(folder)
        assert f"seed={seed}" in recorded["overrides"] and recorded["status"] == "finished"
        tags = client.get_run(recorded["run_id"]).data.tags
        assert (tags["seed"], tags["output_dir"]) == (str(seed), str(folder))
        assert yaml.safe_load((folder / ".hydra" / "config.yaml").read_text())["seed"] == seed
        found.append(seed)
    assert sorted(found) == seeds


FOLDER_OF = "from ssimctr.cli.folders import job_folder; print(job_folder())"
TWO_RANKS = f"""
import subprocess, sys, time
first = subprocess.run([sys.executable, "-c", {FOLDER_OF!r}], capture_output=True, text=True, check=True).stdout
time.sleep(1.1)  # the second rank starts in another second
second = subprocess.run([sys.executable, "-c", {FOLDER_OF!r}], capture_output=True, text=True, check=True).stdout
print(first.strip(), second.strip())
"""


def _ranks(run_id: str | None) -> list[str]:
    """The folders two ranks started by one agent (this script's process) name, under torchrun's run id."""
    env = {k: v for k, v in os.environ.items() if k != "TORCHELASTIC_RUN_ID"}
    if run_id is not None:
        env["TORCHELASTIC_RUN_ID"] = run_id
    return subprocess.run(
        [sys.executable, "-c", TWO_RANKS], capture_output=True, text=True, check=True, env=env
    ).stdout.split()


def test_the_ranks_of_one_torchrun_job_agree_on_one_folder_and_two_jobs_do_not():
    static = _ranks("none")  # torchrun's default static rendezvous: the agent (their parent) names it
    assert static[0] == static[1] and "-torchrun-" in static[0]
    assert _ranks("none")[0] != static[0]  # another torchrun job (another agent)
    named = _ranks("job-7")  # --rdzv-id / --standalone's uuid
    assert named[0] == named[1] and named[0] != static[0]
    plain = _ranks(None)  # two processes outside torchrun: their own pids
    assert plain[0] != plain[1] and plain[0].rsplit("-", 1)[1].isdigit()


def stopped_job(folder: Path, seed: int, cache: Path, monkeypatch) -> None:
    """Job `seed` in `folder`, stopped by Ctrl-C right after its first checkpoint."""
    save = Checkpointer.save

    def stopping(self, name, state):
        save(self, name, state)
        raise KeyboardInterrupt

    cfg = compose(*TINY, "trainer.epochs=3", f"seed={seed}", "tracking=none", f"paths.cache={cache}")
    with monkeypatch.context() as patch:
        patch.setattr(Checkpointer, "save", stopping)
        with pytest.raises(KeyboardInterrupt):
            run(cfg, JobInfo(overrides=[f"seed={seed}"], output_dir=folder), QUIET)


def test_a_folder_whose_checkpoint_run_json_and_config_disagree_is_refused_in_one_line(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    stopped_job(tmp_path / "a", 21, cache, monkeypatch)
    stopped_job(tmp_path / "b", 22, cache, monkeypatch)
    assert resumable(tmp_path / "a")["job"] != resumable(tmp_path / "b")["job"]  # each resumes alone

    mixed = tmp_path / "mixed"  # seed 21's checkpoint, seed 22's run.json and config.yaml
    shutil.copytree(tmp_path / "a", mixed)
    for name in (RUN_FILE, "config.yaml"):
        shutil.copy(tmp_path / "b" / name, mixed / name)
    [checkpoint] = (mixed / CHECKPOINTS).glob("*.pt")
    with pytest.raises(UserError) as refused:
        resumable(mixed)
    assert str(refused.value) == (
        f"resume: checkpoint {checkpoint} belongs to another job than {mixed / RUN_FILE} (two jobs wrote into one "
        "folder): start the run again"
    )

    shutil.copy(tmp_path / "a" / RUN_FILE, mixed / RUN_FILE)  # seed 21's run.json and checkpoint, 22's config
    with pytest.raises(UserError) as refused:
        resumable(mixed)
    assert str(refused.value) == (
        f"resume: {mixed / 'config.yaml'} is not the config {mixed / RUN_FILE} recorded for its job (two jobs "
        "wrote into one folder, or the file was edited): start the run again"
    )
    shutil.copy(tmp_path / "a" / "config.yaml", mixed / "config.yaml")
    assert resumable(mixed)["job"] == resumable(tmp_path / "a")["job"]


def test_a_job_does_not_start_in_the_folder_of_a_job_that_runs(tmp_path):
    """hydra.run.dir set to the same folder twice: the second job is refused while the first one's process lives."""
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        record = {"job": "x", "status": "running", "host": os.uname().nodename, "pid": holder.pid, "since": time.time()}
        (tmp_path / RUN_FILE).write_text(json.dumps(record))
        with pytest.raises(UserError, match=rf"is the folder of a job running in process {holder.pid}: give each job"):
            Checkpointer(tmp_path).begin(fresh=True, config="seed: 1")
    finally:
        holder.kill()
        holder.wait()
    Checkpointer(tmp_path).begin(fresh=True, config="seed: 1")  # its process is gone: the folder is free
    assert read_run(tmp_path)["pid"] == os.getpid()
