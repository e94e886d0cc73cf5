"""The `ssimctr` command: a Hydra app (`ssimctr --help`: what it does, examples and the config groups)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import hydra
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.markup import escape

from ssimctr import __version__
from ssimctr.cli.config_errors import composition_error, faulty_override
from ssimctr.cli.folders import register_resolver
from ssimctr.cli.help import register_help
from ssimctr.cli.resume import (
    RESUME_SWEEP_ENV,
    keep_resume_files,
    relaunch_multirun,
    resume_target,
    resumed_job,
    sweep_job,
)
from ssimctr.cli.runner import CONFIG_DIR, JobInfo, run
from ssimctr.config.schema import register
from ssimctr.errors import Interrupted, UserError, cannot_write
from ssimctr.tracking import keeps_runs
from ssimctr.tracking.store import unwritable_store
from ssimctr.train.checkpoint import read_run

register()
register_resolver()
register_help()
console = Console()
errors = Console(stderr=True)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    errors.print(f"[yellow]warning:[/] {message}")


def task(cfg: DictConfig) -> float:
    """Run one job; return `optimized_metric` for sweepers. Launchers that run jobs in other processes
    (joblib, submitit, ray) pickle this function: undecorated at module level, it pickles by reference
    (the decorated `app` would pickle by value, with the module's consoles, which do not pickle)."""
    hydra_cfg = HydraConfig.get()
    job = JobInfo(
        choices=dict(hydra_cfg.runtime.choices),
        overrides=list(hydra_cfg.overrides.task),
        output_dir=Path(hydra_cfg.runtime.output_dir),
    )
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    sweep = Path(hydra_cfg.sweep.dir) if multirun else None
    warnings.showwarning = _show_warning
    resume = rerun = False
    try:
        if cfg.resume:  # the stopped job's own config, folder and run, or the stopped multirun's jobs
            target = resume_target(str(cfg.resume), cfg.tracking)
            if target.multirun:
                relaunch_multirun(target, job.overrides, job.output_dir)
            cfg, choices, overrides = resumed_job(target.folder, str(cfg.resume), job.overrides, _compose, cfg)
            keep_resume_files(job.output_dir, target.folder)
            job, resume = JobInfo(choices=choices, overrides=overrides, output_dir=target.folder), True
        elif multirun and RESUME_SWEEP_ENV in os.environ:  # a job of a resumed multirun
            state = sweep_job(job.output_dir)
            if state == "skip":
                return _finished_already(job.output_dir)
            resume, rerun = state == "resume", state == "rerun"
        results = run(cfg, job, console, resume=resume, rerun=rerun)
    except UserError as error:
        _drop_unused(job.output_dir, resume or rerun)
        _fail(error)
    except Exception as error:  # a read-only or full disk, a file in the way: one line naming the path
        _fail(_write_problem(cfg, error) or error)
    except KeyboardInterrupt as stop:  # Ctrl-C or SIGTERM: the run is marked KILLED
        _drop_unused(job.output_dir, resume or rerun)
        errors.print(
            f"[bold yellow]{escape(str(stop) or 'interrupted')}[/]; {escape(_stopped(stop, sweep))}", soft_wrap=True
        )
        sys.exit(128 + getattr(stop, "signum", signal.SIGINT))
    if cfg.optimized_metric not in results:
        errors.print(f"[bold red]error:[/] optimized_metric={cfg.optimized_metric} is not a metric of this run")
        sys.exit(2)
    return float(results[cfg.optimized_metric])


HYDRA_FILES = {".hydra", "main.log"}  # what Hydra writes into a job's folder before the job runs


def _drop_unused(folder: Path, resumed: bool) -> None:
    """Remove the folder Hydra made for a job that stopped before it wrote anything (a mistake in its
    config or data, a stop while preparing): no half-made folder stays behind. A resumed job's stays."""
    if not resumed and folder.is_dir() and {item.name for item in folder.iterdir()} <= HYDRA_FILES:
        shutil.rmtree(folder, ignore_errors=True)
        with contextlib.suppress(OSError):  # its date folder, when it was the only run of the day
            folder.parent.rmdir()


def _finished_already(folder: Path) -> float:
    """A finished job of a resumed multirun: say so, and return the optimized metric it recorded."""
    recorded = read_run(folder)
    console.print(f"{folder}: finished already (run {recorded.get('run_id') or 'untracked'}); not run again")
    value = recorded.get("optimized_metric")
    return float("nan") if value is None else float(value)


def _fail(error: Exception) -> None:
    """Print a user's mistake as one line and exit 2; anything else keeps its traceback."""
    if not isinstance(error, UserError):
        raise error
    errors.print(f"[bold red]error:[/] {escape(str(error))}", soft_wrap=True)
    sys.exit(2)


def _write_problem(cfg: DictConfig, error: Exception) -> UserError | None:
    """The one line for a write the disk or its permissions refused (None for any other error): a file
    under paths.cache (the prepared data) or paths.outputs, or the MLflow store of tracking.uri."""
    if isinstance(error, OSError):
        cache = Path(str(OmegaConf.select(cfg, "paths.cache", default="") or ".")).resolve()
        inside = error.filename is not None and Path(str(error.filename)).resolve().is_relative_to(cache)
        return cannot_write(error, "paths.cache" if inside else "paths.outputs")
    if keeps_runs(cfg.tracking):
        return unwritable_store(error, str(cfg.tracking.uri))
    return None


class WritableOutputs(Callback):
    """Before Hydra makes the job's folder (run.dir, or a multirun's sweep.dir) under paths.outputs: one
    line and exit 2 when it cannot be written (a read-only or full disk, a file in the way), not Hydra's
    traceback. Listed first under hydra.callbacks in conf/config.yaml."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _check_writable(OmegaConf.select(config, "hydra.run.dir"))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _check_writable(OmegaConf.select(config, "hydra.sweep.dir"))


PROBE_BYTES = 256 * 1024  # more than Hydra's .hydra/*.yaml: a full disk refuses the probe, not them


def _check_writable(folder: str | None) -> None:
    """Make the parent of `folder` (Hydra makes `folder` itself) and write a file there, or fail in one line."""
    if not folder:
        return
    parent = Path(folder).parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=parent) as probe:
            probe.write(bytes(PROBE_BYTES))
            probe.flush()
    except OSError as error:
        _fail(cannot_write(error, "paths.outputs", parent, any_errno=True) or error)


def _compose(overrides: list[str]) -> DictConfig:
    """The app's config composed with `overrides` (as `ssimctr <overrides>` would run it)."""
    return hydra.compose(config_name="config", overrides=overrides)


def _stopped(stop: KeyboardInterrupt, sweep: Path | None = None) -> str:
    """The rest of the interruption line: the checkpoint to resume from (set by the runner), if any, and
    what to resume (the job's folder; a multirun's folder for a job of a multirun)."""
    if not hasattr(stop, "checkpoint"):
        return "stopped before its run started (nothing was logged)"
    checkpoint = stop.checkpoint
    if checkpoint is None:
        return "no checkpoint yet; the run is marked KILLED"
    if checkpoint == "off":
        return "no checkpoints (trainer.checkpoints=false); the run is marked KILLED"
    again = sweep if sweep is not None else checkpoint.parent.parent
    return f"checkpoint at {checkpoint}; the run is marked KILLED (continue it: ssimctr resume={again})"


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM (`kill`, `timeout`, a cluster's scheduler) stops the job like Ctrl-C does."""
    raise Interrupted("terminated (SIGTERM)", signum=signal.SIGTERM)


app = hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")(task)


def main() -> None:
    """Console-script entry point. `--version` prints ssimctr's version (Hydra's own flag would print
    Hydra's). A config the command line got wrong (an unknown key or option, a key a class replaced, a
    value of the wrong type) is one line and exit 2 (ssimctr.cli.config_errors); HYDRA_FULL_ERROR=1 keeps
    Hydra's own report."""
    if "--version" in sys.argv[1:]:
        print(f"ssimctr {__version__}")
        return
    signal.signal(signal.SIGTERM, _terminate)
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        app()
        return
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises instead of printing: the error is ours to word
    try:
        app()
    except Exception as error:
        overrides = [a for a in sys.argv[1:] if not a.startswith("-") and "=" in a]
        line = composition_error(error, overrides, _config_without(overrides, faulty_override(error)))
        if line is None:
            raise
        _fail(line)
    finally:
        del os.environ["HYDRA_FULL_ERROR"]


def _config_without(overrides: list[str], faulty: str | None) -> DictConfig | None:
    """The config composed without the override keyed `faulty` (without any, if that fails too; None
    when even the defaults do not compose): what the closest real key is looked up in."""
    kept = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") != faulty]
    for attempt in (kept, []):
        GlobalHydra.instance().clear()
        try:
            with hydra.initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
                return hydra.compose(config_name="config", overrides=attempt)
        except Exception:  # noqa: BLE001 (another faulty override: try the defaults)
            continue
    return None
