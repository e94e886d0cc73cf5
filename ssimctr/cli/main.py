"""The `ssimctr` command: a Hydra app (`ssimctr --help` lists the config groups)."""

from __future__ import annotations

import signal
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.markup import escape

from ssimctr import __version__
from ssimctr.cli.resume import resumed_job
from ssimctr.cli.runner import JobInfo, run
from ssimctr.config.replaced import check_overrides
from ssimctr.config.schema import register
from ssimctr.errors import Interrupted, UserError, cannot_write
from ssimctr.tracking import keeps_runs
from ssimctr.tracking.store import unwritable_store

PACKAGE = Path(__file__).resolve().parents[1]
# conf/: shipped inside an installed wheel as ssimctr/conf (setup.py), else beside the package (the source tree,
# an editable install)
CONFIG_DIR = str(PACKAGE / "conf" if (PACKAGE / "conf").is_dir() else PACKAGE.parent / "conf")
register()
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
    warnings.showwarning = _show_warning
    try:
        resume = bool(cfg.resume)
        if resume:  # the stopped job's own config, folder and run
            cfg, choices, overrides, folder = resumed_job(cfg.resume, cfg.tracking, job.overrides, _compose)
            job = JobInfo(choices=choices, overrides=overrides, output_dir=folder)
        results = run(cfg, job, console, resume=resume)
    except UserError as error:
        _fail(error)
    except Exception as error:  # a read-only or full disk, a file in the way: one line naming the path
        _fail(_write_problem(cfg, error) or error)
    except KeyboardInterrupt as stop:  # Ctrl-C or SIGTERM: the run is marked KILLED
        errors.print(f"[bold yellow]{escape(str(stop) or 'interrupted')}[/]; {escape(_stopped(stop))}", soft_wrap=True)
        sys.exit(128 + getattr(stop, "signum", signal.SIGINT))
    if cfg.optimized_metric not in results:
        errors.print(f"[bold red]error:[/] optimized_metric={cfg.optimized_metric} is not a metric of this run")
        sys.exit(2)
    return float(results[cfg.optimized_metric])


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


def _stopped(stop: KeyboardInterrupt) -> str:
    """The rest of the interruption line: the checkpoint to resume from (set by the runner), if any."""
    checkpoint = getattr(stop, "checkpoint", None)
    if checkpoint is None:
        return "no checkpoint yet; the run is marked KILLED"
    if checkpoint == "off":
        return "no checkpoints (trainer.checkpoints=false); the run is marked KILLED"
    return (
        f"checkpoint at {checkpoint}; the run is marked KILLED (continue it: ssimctr resume={checkpoint.parent.parent})"
    )


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM (`kill`, `timeout`, a cluster's scheduler) stops the job like Ctrl-C does."""
    raise Interrupted("terminated (SIGTERM)", signum=signal.SIGTERM)


app = hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")(task)


def main() -> None:
    """Console-script entry point. `--version` prints ssimctr's version (Hydra's own flag would print
    Hydra's); an override of a key that a class replaced is one line (ssimctr.config.replaced)."""
    arguments = sys.argv[1:]
    if "--version" in arguments:
        print(f"ssimctr {__version__}")
        return
    try:
        check_overrides(arguments)
    except UserError as error:
        _fail(error)
    signal.signal(signal.SIGTERM, _terminate)
    app()
