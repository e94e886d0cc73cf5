"""The `ssimctr` command: a Hydra app (`ssimctr --help` lists the config groups)."""

from __future__ import annotations

import signal
import sys
import warnings
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from rich.console import Console

from ssimctr.cli.runner import JobInfo, run
from ssimctr.config.schema import register
from ssimctr.errors import Interrupted, UserError

CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "conf")  # conf/ at the repository root
register()
console = Console()
errors = Console(stderr=True)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    errors.print(f"[yellow]warning:[/] {message}")


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def app(cfg: DictConfig) -> float:
    """Run one job; return `optimized_metric` for sweepers."""
    hydra_cfg = HydraConfig.get()
    job = JobInfo(
        choices=dict(hydra_cfg.runtime.choices),
        overrides=list(hydra_cfg.overrides.task),
        output_dir=Path(hydra_cfg.runtime.output_dir),
    )
    warnings.showwarning = _show_warning
    try:
        results = run(cfg, job, console)
    except UserError as error:
        errors.print(f"[bold red]error:[/] {error}")
        sys.exit(2)
    except KeyboardInterrupt as stop:  # Ctrl-C or SIGTERM: the run is marked KILLED
        errors.print(f"[bold yellow]{stop or 'interrupted'}[/]; the run is marked KILLED", soft_wrap=True)
        sys.exit(128 + getattr(stop, "signum", signal.SIGINT))
    if cfg.optimized_metric not in results:
        errors.print(f"[bold red]error:[/] optimized_metric={cfg.optimized_metric} is not a metric of this run")
        sys.exit(2)
    return float(results[cfg.optimized_metric])


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM (`kill`, `timeout`, a cluster's scheduler) stops the job like Ctrl-C does."""
    raise Interrupted("terminated (SIGTERM)", signum=signal.SIGTERM)


def main() -> None:
    """Console-script entry point."""
    signal.signal(signal.SIGTERM, _terminate)
    app()
