"""`ssimctr resume=<run folder | MLflow run id>`: a stopped job again, as it was configured, in its folder.

The job's config is composed again from its overrides (`checkpoints/run.json`) and completed with the
values of its `config.yaml`; the runner then continues the job from its checkpoints in the same MLflow
run (ssimctr.train.checkpoint)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ssimctr.errors import UserError
from ssimctr.tracking import keeps_runs
from ssimctr.train.checkpoint import CHECKPOINTS, resumable

WITH_RESUME = ("resume", "tracking", "tracking.uri")  # what a resume takes: its target, where to find a run id


def resumed_job(
    target: str, tracking: DictConfig, overrides: list[str], compose: Callable[[list[str]], DictConfig]
) -> tuple[DictConfig, dict[str, str], list[str], Path]:
    """The config, group choices, overrides and folder of the stopped job `target` (its folder, or its
    MLflow run id in `tracking.uri`); UserError (one line) when it cannot be resumed. `overrides`: those
    given with resume=; `compose(overrides)` composes the app's config."""
    others = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in WITH_RESUME]
    if others:
        raise UserError(f"resume={target} continues the job as it was configured: drop {' '.join(others)}")
    folder = run_folder(target, tracking)
    run = resumable(folder / CHECKPOINTS)
    saved = folder / "config.yaml"
    if not saved.is_file():
        raise UserError(f"resume={target}: {folder} has no config.yaml")
    job_overrides = list(run.get("overrides", []))
    try:
        cfg = OmegaConf.merge(compose(job_overrides), OmegaConf.load(saved))
    except Exception as error:  # noqa: BLE001 (conf/ or the schemas changed since the run)
        raise UserError(
            f"resume={target}: the job's config ({saved}) no longer composes ({type(error).__name__}: {error})"
        ) from None
    return cfg, dict(run.get("choices", {})), job_overrides, folder


def run_folder(target: str, tracking: DictConfig) -> Path:
    """The folder `target` names: itself, or the `output_dir` of MLflow run `target`."""
    path = Path(target)
    if path.is_dir():
        return path
    if not keeps_runs(tracking):  # tracking=none knows no run ids
        raise UserError(f"resume={target}: no such folder (give the run's folder, or its MLflow run id)")
    from mlflow.exceptions import MlflowException

    from ssimctr.tracking.mlflow_tracker import connect

    try:
        run = connect(tracking.uri).get_run(target)
    except MlflowException:
        raise UserError(
            f"resume={target}: no such folder, and no such run in {tracking.uri} "
            "(give the run's folder, or its MLflow run id with the tracking.uri it logged to)"
        ) from None
    folder = run.data.tags.get("output_dir")
    if not folder or not Path(folder).is_dir():
        raise UserError(f"resume={target}: the run's folder {folder or '(no output_dir tag)'} is not here")
    return Path(folder)
