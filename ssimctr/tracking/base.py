"""The tracking interface the rest of ssimctr talks to, the no-op tracker and mlflow-free helpers."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from ssimctr.errors import UserError

PARENT_RUN_ENV = "SSIMCTR_MLFLOW_PARENT_RUN_ID"
SWEEP_COMMON_ENV = "SSIMCTR_SWEEP_COMMON_OVERRIDES"  # a multirun's overrides that every job shares (JSON list)
RUN_STATUSES = ("FINISHED", "FAILED", "KILLED")


@runtime_checkable
class Tracker(Protocol):
    """One tracked run (start it, log to it, end it), and read access to other runs' artifacts."""

    def start(self, run_name: str | None, tags: dict[str, str], parent_run_id: str | None = None) -> str | None:
        """Start a run (nested under `parent_run_id` when given); return its id."""

    def resume(self, run_id: str | None) -> None:
        """Log into the existing run `run_id` again (a resumed job): it is RUNNING until `end`.
        Raises UserError when it cannot be continued (unknown, FINISHED, or still running)."""

    @property
    def run_id(self) -> str | None:
        """The id of the started run, None before `start` (always None when not tracking)."""

    def log_params(self, params: dict[str, object]) -> None:
        """Log parameters; nested dicts become dotted keys, values are stringified."""

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Log metrics at one step (NaN allowed)."""

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        """Log a file, or a directory under its own name, into `artifact_path`."""

    def set_tags(self, tags: dict[str, str]) -> None:
        """Set run tags."""

    def log_model(self, model: object, files: Sequence[Path], name: str = "model") -> str | None:
        """Log `model` (a torch module) as an MLflow logged model of the run, named `name`, with `files`
        beside it (a folder is copied under its own name); return the logged model's id (None: not tracking)."""

    def end(self, status: str = "FINISHED", error: str | None = None) -> None:
        """Terminate the run as FINISHED, FAILED or KILLED; `error` goes to tag `error`."""

    def download_artifacts(self, run_id: str, artifact_path: str, destination: Path) -> Path:
        """Copy the artifact folder `artifact_path` of run `run_id` into `destination`; return its local path.

        Raises UserError when the run, or its `artifact_path` artifacts, cannot be found.
        """


class NullTracker:
    """A tracker that records nothing (tracking=none)."""

    def __init__(self, **store: object) -> None:
        """The `tracking` group's store keys (uri, experiment, ...) are taken and unused: there is no store."""

    def start(self, run_name: str | None, tags: dict[str, str], parent_run_id: str | None = None) -> str | None:
        """Start nothing."""
        return None

    def resume(self, run_id: str | None) -> None:
        """Resume nothing."""

    @property
    def run_id(self) -> str | None:
        """Always None."""
        return None

    def log_params(self, params: dict[str, object]) -> None:
        """Do nothing."""

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Do nothing."""

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        """Do nothing."""

    def set_tags(self, tags: dict[str, str]) -> None:
        """Do nothing."""

    def log_model(self, model: object, files: Sequence[Path], name: str = "model") -> str | None:
        """Log nothing."""
        return None

    def end(self, status: str = "FINISHED", error: str | None = None) -> None:
        """Do nothing."""

    def download_artifacts(self, run_id: str, artifact_path: str, destination: Path) -> Path:
        """Raise UserError: without a tracking store there are no run artifacts to download."""
        raise UserError(
            "ssim.from_run needs tracking=mlflow (this run has tracking=none): "
            "use ssim.from_path=<the search run's ssim/ folder>"
        )


def check_status(status: str) -> None:
    """Raise ValueError unless `status` is a terminal run status."""
    if status not in RUN_STATUSES:
        raise ValueError(f"run status must be one of {', '.join(RUN_STATUSES)}, got {status!r}")


def parent_run_id_from_env() -> str | None:
    """The sweep's parent run id exported by the multirun callback, if any."""
    return os.environ.get(PARENT_RUN_ENV) or None


def sweep_common_overrides_from_env() -> list[str]:
    """The overrides every job of the running multirun shares (exported by the multirun callback), if any."""
    return list(json.loads(os.environ.get(SWEEP_COMMON_ENV) or "[]"))


def param_value(value: object) -> str:
    """Render one param value: JSON for None, bools, lists and tuples; str() otherwise."""
    if value is None or isinstance(value, bool | list | tuple):
        return json.dumps(value, default=str)
    return str(value)


def flatten_params(config: Mapping[str, object], prefix: str = "", max_len: int | None = None) -> dict[str, str]:
    """Flatten nested mappings to dotted keys with string values cut to `max_len` chars."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten_params(value, f"{name}.", max_len))
        else:
            text = "{}" if isinstance(value, Mapping) else param_value(value)
            flat[name] = text if max_len is None else text[:max_len]
    return flat
