"""Checkpoints of a job's trainings, so that a killed run continues where it stopped (`ssimctr resume=...`).

The runner opens a `Checkpointer` on `<run folder>/checkpoints/` for the whole job (`checkpointing`);
every `fit` inside the job takes the next name of its kind, `<loss>-<n>` (e.g. FixedSharing-0,
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
import json
import os
import random
import re
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ssimctr.errors import UserError

CHECKPOINTS = "checkpoints"  # the folder under the run's folder
RUN_FILE = "run.json"  # what `resume` needs besides the checkpoints: run id, store, overrides, status
SUFFIX = ".pt"

_current: ContextVar[Checkpointer | None] = ContextVar("ssimctr_checkpointer", default=None)


class Checkpointer:
    """The checkpoints of one job, in `folder` (`<run folder>/checkpoints`)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.counts: Counter[str] = Counter()
        self.latest: Path | None = None  # the last checkpoint written or read

    def begin(self, fresh: bool, **run: Any) -> None:
        """Create the folder and record the run (`run.json`: run id, tracking store, overrides, ...).
        `fresh`: a new job, which drops the checkpoints of an earlier job in the same folder."""
        self.folder.mkdir(parents=True, exist_ok=True)
        if fresh:
            for path in self.files():
                path.unlink(missing_ok=True)
        _write_json(self.folder / RUN_FILE, {**({} if fresh else read_run(self.folder)), **run, "status": "running"})

    def finish(self) -> None:
        """The job finished: drop its checkpoints (the run has its results) and record it in run.json."""
        for path in [*self.files(), *self.folder.glob(f".*{SUFFIX}.tmp")]:  # (a stop while writing leaves a .tmp)
            path.unlink(missing_ok=True)
        self.latest = None
        _write_json(self.folder / RUN_FILE, {**read_run(self.folder), "status": "finished"})

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
        """The checkpoint `name`, None when there is none."""
        path = self.path(name)
        if not path.is_file():
            return None
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as error:  # noqa: BLE001 (a truncated or foreign file: say which one)
            raise UserError(f"checkpoint {path} cannot be read ({type(error).__name__}: {error})") from None
        self.latest = path
        return state

    def save(self, name: str, state: dict) -> Path:
        """Write checkpoint `name` atomically (a reader, or a kill, sees the old file or the new one)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.path(name)
        partial = path.with_name(f".{path.name}.tmp")
        torch.save(state, partial)
        os.replace(partial, path)
        self.latest = path
        return path


def read_run(folder: Path) -> dict:
    """The run.json of a checkpoints folder ({} when there is none)."""
    path = Path(folder) / RUN_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def resumable(folder: Path) -> dict:
    """The run.json of a checkpoints folder whose job can be resumed; UserError (one line) when the
    folder has no checkpoints, or its job finished."""
    folder = Path(folder)
    run = read_run(folder)
    if not run:
        raise UserError(f"resume: {folder.parent} has no {CHECKPOINTS}/{RUN_FILE}: it is not a run's folder")
    if run.get("status") == "finished":
        raise UserError(f"resume: the run in {folder.parent} finished already; there is nothing to resume")
    if not Checkpointer(folder).files():
        raise UserError(
            f"resume: {folder} holds no checkpoint (the run stopped before its first epoch ended): start it again"
        )
    return run


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
        saved = self.checkpointer.load(self.name)
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
