"""`ssimctr resume=<run folder | multirun folder | MLflow run id>`: a stopped job, or the unfinished jobs
of a stopped multirun, again as they were configured, in their folders and runs.

A job: its config is composed again from its overrides (`run.json`) and completed with the values of
its `config.yaml`; the runner then continues it from its checkpoints in the same MLflow run
(ssimctr.train.checkpoint). Overrides that do not change results (`RESULT_FREE`) may come with it.

A multirun (its folder, or its parent run's id): the multirun is launched again as it was (its
overrides and launcher, from `multirun.yaml`) into the same folder, under the same parent run and
with the same job numbers; each job then looks at its folder (`sweep_job`): a finished job is
skipped, a stopped one resumes from its checkpoints, one stopped before its first checkpoint runs
again in its run, one never started runs.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from ssimctr.errors import UserError
from ssimctr.tracking import keeps_runs
from ssimctr.tracking.callbacks import PARENT_RUN_FILE, RESUME_SWEEP_ENV
from ssimctr.train.checkpoint import Checkpointer, read_run, resumable

# what a resume takes: its target, where to find a run id (tracking.uri, by default under paths.outputs)
WITH_RESUME = ("resume", "tracking", "tracking.uri", "paths.outputs")
# overrides a resumed job takes: how it runs, not what it computes (threads change float sums' order only)
RESULT_FREE = ("trainer.threads", "trainer.progress", "trainer.device")
MULTIRUN_FILE = "multirun.yaml"  # Hydra's record of a multirun, in its folder
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


@dataclass(frozen=True)
class Target:
    """What `resume=` names: a job's folder, or a multirun's folder (and its parent run id, when known)."""

    folder: Path
    multirun: bool = False
    parent_run_id: str | None = None


def resume_target(target: str, tracking: DictConfig) -> Target:
    """The folder `target` names: itself, or the folder of MLflow run `target` in `tracking.uri` (a
    job's `output_dir`, a multirun parent's `sweep_dir`). UserError (one line) when there is none."""
    path = Path(target)
    if path.is_dir():
        return Target(path, multirun=(path / MULTIRUN_FILE).is_file())
    if not keeps_runs(tracking):  # tracking=none knows no run ids
        raise UserError(f"resume={target}: no such folder (give the run's folder, or its MLflow run id)")
    from ssimctr.tracking.runs import run_tags

    tags = run_tags(str(tracking.uri), target)
    if tags is None:
        raise UserError(
            f"resume={target}: no such folder, and no such run in {tracking.uri} "
            "(give the run's folder, or its MLflow run id with the tracking.uri it logged to)"
        )
    multirun = tags.get("ssimctr.kind") == "sweep"
    folder = tags.get("sweep_dir" if multirun else "output_dir")
    if not folder or not Path(folder).is_dir():
        raise UserError(f"resume={target}: the run's folder {folder or '(no output_dir tag)'} is not here")
    return Target(Path(folder), multirun, target if multirun else None)


def resumed_job(
    folder: Path,
    target: str,
    overrides: list[str],
    compose: Callable[[list[str]], DictConfig],
    current: DictConfig,
) -> tuple[DictConfig, dict[str, str], list[str]]:
    """The config, group choices and overrides of the stopped job in `folder` (named by `target`);
    UserError (one line) when it cannot be resumed. `overrides`: those given with resume= (only
    RESULT_FREE ones are taken, with their values in `current`, the resume command's config);
    `compose(overrides)` composes the app's config."""
    keys = [o.split("=", 1)[0].lstrip("+~") for o in overrides]
    others = [o for o, key in zip(overrides, keys) if key not in (*WITH_RESUME, *RESULT_FREE)]
    if others:
        raise UserError(
            f"resume={target} continues the job as it was configured: drop {' '.join(others)} "
            f"(a resume takes only {', '.join(RESULT_FREE)})"
        )
    run = resumable(folder)
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
    for key in dict.fromkeys(k for k in keys if k in RESULT_FREE):
        OmegaConf.update(cfg, key, OmegaConf.select(current, key), merge=False)
    return cfg, dict(run.get("choices", {})), job_overrides


def keep_resume_files(hydra_folder: Path, run_folder: Path) -> Path:
    """Move the resume command's own Hydra files (`.hydra/`, its log) from `hydra_folder` into
    `<run_folder>/resumes/<its name>`, beside the run they belong to; return where they went."""
    place = run_folder / "resumes" / hydra_folder.name
    if hydra_folder.resolve() == place.resolve() or not hydra_folder.is_dir():
        return place
    place.mkdir(parents=True, exist_ok=True)
    for item in list(hydra_folder.iterdir()):
        shutil.move(str(item), str(place / item.name))
    _remove_with_empty_parents(hydra_folder)
    return place


def _remove_with_empty_parents(folder: Path, levels: int = 2) -> None:
    """Remove `folder` and its first `levels` parents while they are empty (`runs/<date>/<time>`)."""
    shutil.rmtree(folder, ignore_errors=True)
    for parent in list(folder.parents)[:levels]:
        try:
            parent.rmdir()
        except OSError:  # not empty
            return


# -- multiruns ------------------------------------------------------------------------------------------


def sweep_jobs(folder: Path) -> list[list[str]]:
    """The overrides of every job of the multirun in `folder`, in job-number order, as Hydra's basic
    sweeper expands them from `multirun.yaml`; UserError for a sweeper whose jobs cannot be replayed."""
    recorded = OmegaConf.load(folder / MULTIRUN_FILE)
    sweeper = str(OmegaConf.select(recorded, "hydra.sweeper._target_", default=""))
    if sweeper != BASIC_SWEEPER:
        raise UserError(
            f"resume={folder}: its jobs came from {sweeper.rsplit('.', 1)[-1]}, whose next trials depend on the "
            "results so far: only a grid (Hydra's basic sweeper) resumes; start the search again"
        )
    params = OmegaConf.select(recorded, "hydra.sweeper.params", default=None) or {}
    arguments = [f"{key}={value}" for key, value in params.items()]
    arguments += list(OmegaConf.select(recorded, "hydra.overrides.task", default=[]))
    hydra = GlobalHydra.instance()  # its config loader expands sweeps over a group's options (glob(*))
    loader = hydra.config_loader() if hydra.is_initialized() else None
    parsed = OverridesParser.create(config_loader=loader).parse_overrides(arguments)
    return [list(job) for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def sweep_job(folder: Path) -> str:
    """What a relaunched multirun does with job folder `folder`: skip (finished), resume (stopped with
    checkpoints), rerun (started, no checkpoint yet: again from the start, in its run) or run (new)."""
    run = read_run(folder)
    if not run:
        return "run"
    if run.get("status") == "finished":
        return "skip"
    return "resume" if Checkpointer(folder).files() else "rerun"


def relaunch_multirun(target: Target, overrides: list[str], command_folder: Path) -> None:
    """Launch the multirun in `target.folder` again, as it was launched, into the same folder, under its
    parent run; replaces this process (`os.execv`) and does not return. `overrides`: the resume command's
    (RESULT_FREE ones are passed on); `command_folder`: the resume command's own Hydra folder, removed
    (the relaunched multirun logs into the multirun's folder). UserError when nothing is left to run."""
    folder = target.folder.resolve()
    jobs = sweep_jobs(folder)
    left = [n for n in range(len(jobs)) if sweep_job(folder / str(n)) != "skip"]
    if not left:
        raise UserError(f"resume={target.folder}: all {len(jobs)} jobs of the multirun finished; nothing to resume")
    recorded = OmegaConf.load(folder / MULTIRUN_FILE)
    task = list(OmegaConf.select(recorded, "hydra.overrides.task", default=[]))
    hydra = [o for o in OmegaConf.select(recorded, "hydra.overrides.hydra", default=[]) if _key(o) != "hydra.sweep.dir"]
    passed = [o for o in overrides if _key(o) in RESULT_FREE]
    task = [o for o in task if _key(o) not in {_key(p) for p in passed}] + passed
    parent = target.parent_run_id or _parent_of(folder, len(jobs))
    _remove_with_empty_parents(command_folder)
    print(f"resuming multirun {folder}: jobs {', '.join(map(str, left))} of {len(jobs)}", flush=True)
    os.environ[RESUME_SWEEP_ENV] = parent or ""
    os.environ.pop("HYDRA_FULL_ERROR", None)  # set by main() around Hydra; the relaunched main() sets its own
    command = [sys.executable, "-m", "ssimctr", "--multirun", *task, *hydra, f"hydra.sweep.dir={folder}"]
    sys.stdout.flush()
    os.execv(sys.executable, command)


def _parent_of(folder: Path, jobs: int) -> str | None:
    """The multirun's parent run id, as its callback recorded it in the folder (or its started jobs in
    their run.json); None for an untracked multirun."""
    recorded = folder / PARENT_RUN_FILE
    if recorded.is_file():
        return recorded.read_text().strip() or None
    return next((p for n in range(jobs) if (p := read_run(folder / str(n)).get("parent_run_id"))), None)


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")
