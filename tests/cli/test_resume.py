"""Checkpoints and resume: a job stopped after a checkpoint and resumed ends with the same metrics, in
the same MLflow run, as the job run without a stop; the epochs done before the stop are not trained
(or logged) again; a target that cannot be resumed is refused in one line."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from rich.console import Console

from conftest import compose
from ssimctr.cli import main
from ssimctr.cli.resume import resume_target, resumed_job
from ssimctr.cli.runner import JobInfo, run
from ssimctr.errors import UserError
from ssimctr.tracking.mlflow_tracker import PID_TAG, MlflowTracker
from ssimctr.train import loop
from ssimctr.train.checkpoint import CHECKPOINTS, Checkpointer, read_run

SMALL = (
    "dataset.rows=3000",
    "dataset.users=300",
    "dataset.items=100",
    "backbone.hidden=[16]",
    "trainer.progress=false",
    "trainer.epochs=3",
    "trainer.patience=3",
    "trainer.batch_size=256",
    "trainer.optimizer.lr=0.01",  # every epoch moves the model
    "trainer.threads=1",  # the same threads in every job (and process): the same sums, to the last bit
)
QUIET = Console(quiet=True)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """One data cache for the module's jobs: the data is prepared once."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def job_config(tmp_path: Path, cache: Path):
    def composed(*overrides: str):
        return compose(
            f"paths.outputs={tmp_path}",
            f"paths.cache={cache}",
            f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
            *SMALL,
            *overrides,
        )

    return composed


def metrics_of(results: dict[str, float]) -> dict[str, str]:
    """The val/* and test/* results, to the last bit (repr: NaN equals NaN)."""
    return {key: repr(value) for key, value in results.items() if key.startswith(("test/", "val/"))}


@pytest.fixture
def trained(monkeypatch) -> list[int]:
    """The epochs `fit` trains, in order."""
    epochs: list[int] = []
    train_epoch = loop._train_epoch

    def recorded(model, loss_fn, optimizer, loader, where, *args):
        epochs.append(where[1])  # (phase, epoch, clock)
        return train_epoch(model, loss_fn, optimizer, loader, where, *args)

    monkeypatch.setattr(loop, "_train_epoch", recorded)
    return epochs


@pytest.fixture
def validated(monkeypatch) -> list[float]:
    """The monitored metric of every validation `fit` makes, in order (epoch by epoch)."""
    values: list[float] = []
    checked = loop._validated

    def recorded(metrics, monitor):
        values.append(metrics[monitor])
        return checked(metrics, monitor)

    monkeypatch.setattr(loop, "_validated", recorded)
    return values


def stop_after_checkpoint(monkeypatch, count: int) -> None:
    """Ctrl-C right after the `count`-th checkpoint is written."""
    save, written = Checkpointer.save, []

    def stopping(self, name, state):
        path = save(self, name, state)
        written.append(path)
        if len(written) == count:
            raise KeyboardInterrupt
        return path

    monkeypatch.setattr(Checkpointer, "save", stopping)


def stopped_then_resumed(cfg, folder: Path, monkeypatch, checkpoints: int) -> tuple[KeyboardInterrupt, dict]:
    with monkeypatch.context() as patch:
        stop_after_checkpoint(patch, checkpoints)
        with pytest.raises(KeyboardInterrupt) as stop:
            run(cfg, JobInfo(output_dir=folder), QUIET)
    return stop.value, run(cfg, JobInfo(output_dir=folder), QUIET, resume=True)


def test_a_job_stopped_after_epoch_1_resumes_in_its_run_and_ends_as_if_not_stopped(
    tmp_path, monkeypatch, trained, validated, job_config
):
    cfg = job_config()
    whole = run(cfg, JobInfo(output_dir=tmp_path / "whole"), QUIET)
    assert trained == [1, 2, 3]
    every_epoch = list(validated)
    folder = tmp_path / "stopped"
    trained.clear()
    with monkeypatch.context() as patch:
        stop_after_checkpoint(patch, 1)
        with pytest.raises(KeyboardInterrupt) as stop:
            run(cfg, JobInfo(output_dir=folder), QUIET)
    assert trained == [1]
    assert stop.value.checkpoint == folder / CHECKPOINTS / "FixedSharing-0.pt"  # what the CLI's line names
    run_id = read_run(folder)["run_id"]
    client = MlflowClient(cfg.tracking.uri)
    assert client.get_run(run_id).info.status == "KILLED"

    trained.clear()
    resumed = run(cfg, JobInfo(output_dir=folder), QUIET, resume=True)
    assert trained == [2, 3]  # epoch 1 came from the checkpoint
    assert validated == every_epoch + every_epoch[:1] + every_epoch[1:]  # whole, stopped, resumed
    assert metrics_of(resumed) == metrics_of(whole) and resumed["best/epoch"] == whole["best/epoch"]
    record = client.get_run(run_id)
    assert record.info.status == "FINISHED" and "error" not in record.data.tags
    assert len(client.search_runs([record.info.experiment_id])) == 2  # whole, and the stopped one resumed
    steps = [m.step for m in client.get_metric_history(run_id, "val/auc/mean")]
    assert steps == [1, 2, 3]  # each epoch logged once
    assert record.data.metrics["test/auc/mean"] == whole["test/auc/mean"]
    assert not (folder / CHECKPOINTS).exists()  # a finished run drops its checkpoints, folder and all
    assert read_run(folder)["status"] == "finished"
    with pytest.raises(UserError, match="finished already"):
        run(cfg, JobInfo(output_dir=folder), QUIET, resume=True)


@pytest.mark.parametrize(
    ("overrides", "checkpoints", "before", "after"),
    [  # regime=st: a model per scenario (3 fits); stopped in the second scenario's epoch 2
        (("regime=st",), 6, [1, 2, 3, 1, 2], [3, 1, 2, 3]),
        # regime=finetune: pre-training, then a copy per scenario (epoch 0 competes); stopped in the first copy
        (("regime=finetune", "tracking=none"), 5, [1, 2, 3, 1], [2, 3, 1, 2, 3, 1, 2, 3]),
        # ssim=pipeline: the search (1 epoch) then the retrain, stopped after the retrain's first epoch
        (("ssim=pipeline", "ssim.reuse_search=false", "tracking=none"), 3, [1, 1], [2, 3]),
        # the stopped job stores its search, the resumed one reuses it: the retrain still finds its checkpoint
        (("ssim=pipeline", "ssim.reuse_search=true", "tracking=none"), 3, [1, 1], [2, 3]),
        # SSIM-R: the random gate's generator
        (("ssim=retrain", "ssim/selection=random", "ssim.ratio=0.5", "tracking=none"), 1, [1], [2, 3]),
        # early stopping: stopped after epoch 2, one epoch without improvement, patience 2: epoch 3 ends it
        (("trainer.epochs=6", "trainer.patience=2", "tracking=none"), 2, [1, 2], [3]),
        # dropout: torch's global random stream
        (("backbone.dropout=0.3", "tracking=none"), 1, [1], [2, 3]),
        # streamed from parquet: the row-group order and the shuffle buffer's generator
        (("trainer.in_memory=false", "trainer.stream_buffer_rows=700", "tracking=none"), 1, [1], [2, 3]),
        # cold start: DropoutNet's id-dropout generator; MAML's meta epochs (their pass counter)
        (("task=cold_start", "task.holdout=0.2", "coldstart=dropoutnet", "tracking=none"), 1, [1], [2, 3]),
        (
            ("task=cold_start", "task.holdout=0.2", "coldstart=maml", "coldstart.meta_epochs=2", "tracking=none"),
            5,
            [1, 2, 3, 1],
            [2],
        ),
    ],
    ids=[
        "separate",
        "finetune",
        "ssim-pipeline",
        "ssim-pipeline-reused",
        "ssim-random",
        "early-stopping",
        "dropout",
        "streamed",
        "dropoutnet",
        "maml",
    ],
)
@pytest.mark.filterwarnings("ignore:.*has only one class:UserWarning")  # cold start's small test split
def test_every_kind_of_training_stopped_after_a_checkpoint_resumes_and_matches(
    tmp_path, monkeypatch, trained, validated, job_config, overrides, checkpoints, before, after
):
    cfg = job_config(*overrides)
    searches = [o.replace("=true", "=false") for o in overrides]  # the whole job stores no search for the others
    whole = run(job_config(*searches), JobInfo(output_dir=tmp_path / "whole"), QUIET)
    every_epoch = list(validated)
    validated.clear()
    trained.clear()
    with monkeypatch.context() as patch:
        stop_after_checkpoint(patch, checkpoints)
        with pytest.raises(KeyboardInterrupt):
            run(cfg, JobInfo(output_dir=tmp_path / "stopped"), QUIET)
    assert trained == before
    trained.clear()
    resumed = run(cfg, JobInfo(output_dir=tmp_path / "stopped"), QUIET, resume=True)
    assert trained == after
    assert validated == every_epoch  # before the stop, then after it: each epoch once, as in the whole job
    assert metrics_of(resumed) == metrics_of(whole)


@pytest.mark.parametrize(
    "broken",
    [
        "ssimctr.data.loaders.InMemoryLoader.load_state_dict",  # epoch 2 would see epoch 1's order again
        "torch.optim.Optimizer.load_state_dict",  # Adam's moments and step count would start afresh
    ],
)
def test_without_each_part_of_the_checkpoint_a_resumed_job_trains_otherwise(
    tmp_path, monkeypatch, job_config, validated, broken
):
    """The tests above would catch a checkpoint that leaves out the loader's or the optimizer's state."""
    cfg = job_config("tracking=none")
    run(cfg, JobInfo(output_dir=tmp_path / "whole"), QUIET)
    every_epoch = list(validated)
    validated.clear()
    monkeypatch.setattr(broken, lambda self, state: None)
    stopped_then_resumed(cfg, tmp_path / "broken", monkeypatch, 1)
    assert validated[0] == every_epoch[0] and validated[1:] != every_epoch[1:]


def test_a_new_job_in_the_folder_of_a_stopped_one_starts_afresh(tmp_path, monkeypatch, trained, job_config):
    cfg = job_config("tracking=none")
    with monkeypatch.context() as patch:
        stop_after_checkpoint(patch, 2)
        with pytest.raises(KeyboardInterrupt):
            run(cfg, JobInfo(output_dir=tmp_path / "run"), QUIET)
    trained.clear()
    run(cfg, JobInfo(output_dir=tmp_path / "run"), QUIET)  # not resume=True: the old checkpoints are not read
    assert trained == [1, 2, 3]


def resume_of(target: str, tracking, overrides: list[str], current=None):
    """The stopped job `target` names, as `ssimctr resume=<target> <overrides>` finds it."""
    folder = resume_target(target, tracking).folder
    return resumed_job(folder, target, overrides, compose, current if current is not None else compose())


def test_bad_resume_targets_are_refused_in_one_line(tmp_path, job_config):
    cfg = job_config("tracking=none")
    never = tmp_path / "empty"
    never.mkdir()
    cases = {
        str(tmp_path / "nowhere"): "no such folder",
        str(never): "has no run.json: it is not a run's folder",
    }
    for target, message in cases.items():
        with pytest.raises(UserError, match=message) as refused:
            resume_of(target, cfg.tracking, [f"resume={target}"])
        assert "\n" not in str(refused.value)
    with pytest.raises(UserError, match=r"drop trainer.epochs=5 \(a resume takes only trainer.threads, "):
        resume_of(str(never), cfg.tracking, [f"resume={never}", "trainer.epochs=5", "trainer.threads=1"])
    started = tmp_path / "started"
    Checkpointer(started).begin(fresh=True, config="seed: 1", run_id=None)
    with pytest.raises(UserError, match="holds no checkpoint"):
        resume_of(str(started), cfg.tracking, [])
    tracked = job_config()
    with pytest.raises(UserError, match="no such run in"):
        resume_target("0123456789abcdef", tracked.tracking)


# -- a real process: SIGTERM after the first checkpoint, then `ssimctr resume=<folder>` ---------------------

PROCESS = [
    "dataset.rows=20000",
    "backbone.hidden=[16]",
    "trainer.batch_size=128",
    "trainer.epochs=4",
    "trainer.patience=4",
    "trainer.threads=1",
    "trainer.progress=false",
]
STOPPED = re.compile(
    r"terminated \(SIGTERM\) at epoch \d+, (batch \d+/\d+|after its training batches); "
    r"checkpoint at (?P<checkpoint>\S+); the run is marked KILLED \(continue it: ssimctr resume=(?P<folder>\S+)\)"
)


def _first_checkpoint(outputs: Path, job: subprocess.Popen, timeout: float = 120) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and job.poll() is None:
        found = list(outputs.glob(f"runs/*/*/{CHECKPOINTS}/*.pt"))
        if found:
            return found[0]
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint in time (exit code {job.poll()})")


def test_a_terminated_process_says_its_checkpoint_and_resume_finishes_its_run(tmp_path, cache):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    overrides = [f"paths.outputs={tmp_path}", f"paths.cache={cache}", f"tracking.uri={uri}", *PROCESS]
    job = subprocess.Popen(
        [sys.executable, "-m", "ssimctr", *overrides], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        checkpoint = _first_checkpoint(tmp_path, job)
        job.send_signal(signal.SIGTERM)
        _, stderr = job.communicate(timeout=60)
    finally:
        job.kill()
    assert job.returncode == 143, stderr
    line = stderr.strip().splitlines()[-1]
    said = STOPPED.fullmatch(line)
    assert said, line
    folder = checkpoint.parent.parent
    assert Path(said["checkpoint"]).is_file() and Path(said["folder"]) == folder
    run_id = read_run(folder)["run_id"]

    resumed = subprocess.run(  # with overrides that do not change results, which a resume takes
        [sys.executable, "-m", "ssimctr", f"resume={folder}", f"tracking.uri={uri}", f"paths.outputs={tmp_path}"]
        + ["trainer.threads=1", "trainer.progress=true", "trainer.device=cpu"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert [p.parent for p in tmp_path.glob("runs/*/*")] == [folder.parent]  # no folder of the resume's own
    [kept] = folder.glob("resumes/*/.hydra/overrides.yaml")  # its Hydra files sit beside the run they resumed
    assert f"resume={folder}" in kept.read_text()
    assert "  device: cpu\n" in (folder / "config.yaml").read_text()  # was auto: the resume's override holds
    assert read_run(folder)["status"] == "finished" and not (folder / CHECKPOINTS).exists()
    client = MlflowClient(uri)
    record = client.get_run(run_id)
    assert record.info.status == "FINISHED"
    assert len(client.search_runs([record.info.experiment_id])) == 1  # the same run, no new one
    steps = [m.step for m in client.get_metric_history(run_id, "val/auc/mean")]
    assert steps == sorted(set(steps)) == list(range(1, len(steps) + 1))

    whole = run(compose(*overrides), JobInfo(output_dir=tmp_path / "whole"), QUIET)
    test = {
        key: value for key, value in whole.items() if key.startswith("test/")
    }  # (the store's val/* are the last epoch's)
    assert {key: record.data.metrics[key] for key in test} == test


def test_the_cli_refuses_a_bad_target_in_one_line(tmp_path):
    refused = subprocess.run(
        [sys.executable, "-m", "ssimctr", f"resume={tmp_path / 'nowhere'}", "tracking=none"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        f"error: resume={tmp_path / 'nowhere'}: no such folder (give the run's folder, or its MLflow run id)"
    ]


HOLD_A_RESUMED_RUN = """
import sys, time
from ssimctr.tracking.mlflow_tracker import MlflowTracker
MlflowTracker(sys.argv[1], "resumed").resume(sys.argv[2])
print("resumed", flush=True)
time.sleep(600)
"""


def test_a_resumed_run_runs_in_its_new_process_and_is_refused_while_it_runs(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    first = MlflowTracker(uri, "resumed")
    run_id = first.start("stopped", {})
    first.end("KILLED", "interrupted at epoch 1")
    client = first.client
    time.sleep(1.5)  # the resuming process starts well after the run did
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_A_RESUMED_RUN, uri, run_id], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "resumed"
        run = client.get_run(run_id)
        assert run.info.status == "RUNNING" and "error" not in run.data.tags
        assert run.data.tags[PID_TAG] == str(holder.pid)
        MlflowTracker(uri, "resumed").start("beside it", {})  # marks dead processes' runs FAILED: not this one
        assert client.get_run(run_id).info.status == "RUNNING"
        with pytest.raises(UserError, match="is still running"):
            MlflowTracker(uri, "resumed").resume(run_id)
    finally:
        holder.kill()
        holder.wait(timeout=30)
    finished = MlflowTracker(uri, "resumed")
    finished.start("finished", {})
    finished.end("FINISHED")
    with pytest.raises(UserError, match="FINISHED already"):
        MlflowTracker(uri, "resumed").resume(finished.run_id)


def test_without_checkpoints_a_job_writes_none_and_its_stop_says_so(tmp_path, monkeypatch, trained, job_config):
    saved: list[str] = []
    monkeypatch.setattr(Checkpointer, "save", lambda self, name, state: saved.append(name))
    results = run(job_config("trainer.checkpoints=false"), JobInfo(output_dir=tmp_path / "off"), QUIET)
    assert trained == [1, 2, 3] and saved == [] and "test/auc/mean" in results

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "_train_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt) as stop:
        run(job_config("trainer.checkpoints=false"), JobInfo(output_dir=tmp_path / "stopped"), QUIET)
    assert stop.value.checkpoint == "off"
    assert main._stopped(stop.value) == "no checkpoints (trainer.checkpoints=false); the run is marked KILLED"
