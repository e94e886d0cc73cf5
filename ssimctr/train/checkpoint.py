"""Checkpoints of a job's trainings, so that a killed run continues where it stopped (`ssimctr resume=...`).

The runner opens a `Checkpointer` on the run's folder (`checkpoints/`, `run.json`) for the whole job
(`checkpointing`); every `fit` inside the job takes the next name of its kind, `<loss>-<n>` (e.g. FixedSharing-0,
FixedSharing-1, SearchLoss-0) in call order, and saves after each epoch, atomically, everything the
next epoch depends on: model, optimizer, loss and loader state (`state_dict()` where they have one:
a selector and its step counter, a shuffling generator), the epoch, the result so far, the early
stopping state and the random states (torch, CUDA, NumPy, Python). When the fit ends the file holds
its final state instead ("done"). A job is deterministic, so a resumed job makes the same calls in
the same order: a done fit restores its final state and returns without training, a partial one
restores its last epoch and trains on from the next, and the job ends as it would have.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import random
import re
import shutil
import socket
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ssimctr.errors import UserError
from ssimctr.utils.process import alive_since

CHECKPOINTS = "checkpoints"  # the folder under the run's folder, removed when the job finishes
RUN_FILE = "run.json"  # in the run's folder: the job's identity and status, run id, store, overrides
SUFFIX = ".pt"

_current: ContextVar[Checkpointer | None] = ContextVar("ssimctr_checkpointer", default=None)


def config_digest(text: str) -> str:
    """The digest of a job's resolved config (the text of its config.yaml), recorded in run.json."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Checkpointer:
    """The checkpoints of one job: `<run folder>/checkpoints/*.pt`, and its record `<run folder>/run.json`.

    Every checkpoint names the job it belongs to (`job`, a fresh id per job, and the digest of its
    config), so that a folder two jobs wrote into is refused instead of resumed (`resumable`)."""

    def __init__(self, run_folder: Path) -> None:
        self.run_folder = Path(run_folder)
        self.folder = self.run_folder / CHECKPOINTS
        self.counts: Counter[str] = Counter()
        self.latest: Path | None = None  # the last checkpoint written or read
        self.job: dict[str, str] = {}  # {"job": id, "config": digest} of the job, set by `begin`

    def begin(self, fresh: bool, config: str, **run: Any) -> None:
        """Record the job in run.json (a fresh id, or the stopped job's when resuming; the digest of its
        resolved config `config`; this process), status running. `fresh`: a new job, which drops the
        checkpoints of an earlier job in the folder. Refused (UserError) while a live process runs a job
        there (two jobs would mix their files)."""
        recorded = read_run(self.run_folder)
        _refuse_if_running(self.run_folder, recorded)
        if fresh:
            for path in self.files():
                path.unlink(missing_ok=True)
            recorded = {"job": uuid.uuid4().hex}
        self.job = {"job": recorded["job"], "config": config_digest(config)}
        owner = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}
        self.folder.mkdir(parents=True, exist_ok=True)
        _write_json(self.run_folder / RUN_FILE, {**recorded, **run, **self.job, **owner, "status": "running"})

    def record(self, **fields: Any) -> None:
        """Add `fields` to run.json (e.g. the run id, once the run is started)."""
        _write_json(self.run_folder / RUN_FILE, {**read_run(self.run_folder), **fields})

    def finish(self, **fields: Any) -> None:
        """The job finished: drop its checkpoints, folder and all (the run has its results), and record
        it in run.json with `fields` (e.g. its optimized metric)."""
        shutil.rmtree(self.folder, ignore_errors=True)
        self.latest = None
        self.record(**fields, status="finished")

    def files(self) -> list[Path]:
        """The checkpoint files written so far."""
        return sorted(self.folder.glob(f"*{SUFFIX}")) if self.folder.is_dir() else []

    def newest(self) -> Path | None:
        """The last checkpoint written or read, else the newest on disk (None when there is none)."""
        files = self.files()
        return self.latest or (max(files, key=lambda path: path.stat().st_mtime) if files else None)

    def next_name(self, kind: str) -> str:
        """The name of the next training of this kind in the job: `<kind>-<n>`."""
        kind = re.sub(r"[^A-Za-z0-9_.]+", "_", kind)
        name = f"{kind}-{self.counts[kind]}"
        self.counts[kind] += 1
        return name

    def path(self, name: str) -> Path:
        return self.folder / f"{name}{SUFFIX}"

    def load(self, name: str) -> dict | None:
        """The checkpoint `name`, None when there is none; UserError when it belongs to another job."""
        path = self.path(name)
        if not path.is_file():
            return None
        state = _read_checkpoint(path)
        if state.get("job") != self.job.get("job"):
            raise UserError(_foreign(path, self.run_folder))
        self.latest = path
        return state

    def save(self, name: str, state: dict) -> Path:
        """Write checkpoint `name` atomically (a reader, or a kill, sees the old file or the new one),
        naming the job it belongs to."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.path(name)
        partial = path.with_name(f".{path.name}.tmp")
        torch.save({**state, **self.job}, partial)
        os.replace(partial, path)
        self.latest = path
        return path


def read_run(run_folder: Path) -> dict:
    """The run.json of a run's folder ({} when there is none)."""
    path = Path(run_folder) / RUN_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def resumable(run_folder: Path) -> dict:
    """The run.json of a run's folder whose job can be resumed; UserError (one line) when the folder is
    not a run's, its job finished, it holds no checkpoint, or its files belong to different jobs (its
    config.yaml is not the config run.json recorded, a checkpoint names another job)."""
    folder = Path(run_folder)
    run = read_run(folder)
    if not run:
        raise UserError(f"resume: {folder} has no {RUN_FILE}: it is not a run's folder")
    if run.get("status") == "finished":
        raise UserError(f"resume: the run in {folder} finished already; there is nothing to resume")
    files = Checkpointer(folder).files()
    if not files:
        raise UserError(
            f"resume: {folder / CHECKPOINTS} holds no checkpoint (the run stopped before its first epoch ended): "
            "start it again"
        )
    saved = folder / "config.yaml"
    if saved.is_file() and config_digest(saved.read_text()) != run.get("config"):
        raise UserError(
            f"resume: {saved} is not the config {folder / RUN_FILE} recorded for its job (two jobs wrote into "
            "one folder, or the file was edited): start the run again"
        )
    for path in files:
        if _read_checkpoint(path, mmap=True).get("job") != run.get("job"):
            raise UserError(_foreign(path, folder))
    return run


def _read_checkpoint(path: Path, mmap: bool = False) -> dict:
    """A checkpoint's content (`mmap`: tensors mapped, not read: enough to read its fields)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False, mmap=mmap)
    except Exception as error:  # noqa: BLE001 (a truncated or foreign file: say which one)
        raise UserError(f"checkpoint {path} cannot be read ({type(error).__name__}: {error})") from None


def _foreign(path: Path, folder: Path) -> str:
    return (
        f"resume: checkpoint {path} belongs to another job than {folder / RUN_FILE} (two jobs wrote into one "
        "folder): start the run again"
    )


def _refuse_if_running(folder: Path, recorded: dict) -> None:
    """UserError when run.json says a job runs in `folder` in a live process of this host (not this one)."""
    if recorded.get("status") != "running" or recorded.get("host") != socket.gethostname():
        return
    pid = int(recorded.get("pid", 0))
    if pid and pid != os.getpid() and alive_since(pid, float(recorded.get("since", 0))):
        raise UserError(
            f"{folder} is the folder of a job running in process {pid}: give each job its own folder "
            "(leave hydra.run.dir at its default, which is one per process)"
        )


def _write_json(path: Path, content: dict) -> None:
    partial = path.with_name(f".{path.name}.tmp")
    partial.write_text(json.dumps(content, indent=1, default=str))
    os.replace(partial, path)


@contextmanager
def checkpointing(checkpointer: Checkpointer | None) -> Iterator[Checkpointer | None]:
    """Inside the block, every `fit` checkpoints into `checkpointer` (None: no checkpoints)."""
    token = _current.set(checkpointer)
    try:
        yield checkpointer
    finally:
        _current.reset(token)


def current() -> Checkpointer | None:
    """The checkpointer of the job being run, if any."""
    return _current.get()


class FitCheckpoint:
    """The checkpoint of one `fit` call: what it saves after each epoch and restores on resume."""

    def __init__(
        self, checkpointer: Checkpointer, model: torch.nn.Module, optimizer: Any, loss_fn: Any, loader: Any, epochs: int
    ) -> None:
        self.checkpointer = checkpointer
        self.model, self.optimizer, self.loss_fn, self.loader = model, optimizer, loss_fn, loader
        kind = getattr(loss_fn, "__qualname__", None) or type(loss_fn).__qualname__
        self.name = checkpointer.next_name(kind)
        self.signature = {
            "kind": kind,
            "epochs": epochs,
            "model": [[key, list(value.shape)] for key, value in model.state_dict().items()],
        }

    @classmethod
    def of_current(cls, model, optimizer, loss_fn, loader, epochs: int) -> FitCheckpoint | None:
        """The checkpoint of a fit in the current job, None outside `checkpointing`."""
        checkpointer = current()
        return None if checkpointer is None else cls(checkpointer, model, optimizer, loss_fn, loader, epochs)

    @property
    def path(self) -> Path:
        return self.checkpointer.path(self.name)

    def restore(self) -> dict | None:
        """Load the saved state into model, optimizer, loss, loader and the random generators; return
        the saved fields (done, epoch, result, best_state, stale), None when nothing was saved."""
        saved = self.checkpointer.load(self.name)  # refused when it names another job
        if saved is None:
            return None
        if saved["signature"] != self.signature:
            raise UserError(
                f"checkpoint {self.path} belongs to another training than this job's {self.name} (the code or "
                "the config changed since it was written): start the run again"
            )
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        load_state_into(self.loss_fn, saved["loss"])
        load_state_into(self.loader, saved["loader"])
        set_random_state(saved["random"])
        if saved.get("best_is_current"):
            saved["best_state"] = copy.deepcopy(self.model.state_dict())
        return saved

    def save_epoch(self, epoch: int, result: dict, best_state: dict | None, best_is_current: bool, stale: int) -> None:
        """After epoch `epoch`: everything the next epoch needs (the best weights only when they are not
        the model's current ones)."""
        self._save(
            done=False,
            epoch=epoch,
            result=result,
            stale=stale,
            best_state=None if best_is_current else best_state,
            best_is_current=best_is_current,
        )

    def save_done(self, result: dict) -> None:
        """The fit ended: its final state (the weights it returns) replaces the epoch's checkpoint."""
        self._save(done=True, epoch=len(result["epochs"]), result=result, stale=0, best_state=None)

    def _save(self, **fields: Any) -> None:
        self.checkpointer.save(
            self.name,
            {
                **fields,
                "signature": self.signature,
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "loss": state_of(self.loss_fn),
                "loader": state_of(self.loader),
                "random": random_state(),
            },
        )


def state_of(thing: Any) -> Any:
    """`thing.state_dict()` when it has one (a stateful loss, loader or gate), else None."""
    state_dict = getattr(thing, "state_dict", None)
    return state_dict() if callable(state_dict) else None


def load_state_into(thing: Any, state: Any) -> None:
    """`thing.load_state_dict(state)`, unless `state_of` found no state (None)."""
    if state is not None:
        thing.load_state_dict(state)


def random_state() -> dict:
    """The global random states: torch (CPU and every initialised CUDA device), NumPy, Python."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    return {"torch": torch.get_rng_state(), "cuda": cuda, "numpy": np.random.get_state(), "python": random.getstate()}


def set_random_state(state: dict) -> None:
    """Put back the states of `random_state`."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
