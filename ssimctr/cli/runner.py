"""One job: prepare -> build -> train -> evaluate -> log. The only reader of the whole config."""
from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from ssimctr.cli.console import print_results, results_rows, write_results_csv
from ssimctr.data.loaders import InMemoryLoader, read_split
from ssimctr.data.prepare import PreparedDataset, prepare
from ssimctr.errors import UserError
from ssimctr.models.build import build_model
from ssimctr.tracking.base import PARENT_RUN_ENV, Tracker, flatten_params
from ssimctr.tracking.mlflow_tracker import make_tracker
from ssimctr.train.loop import evaluate, fit, make_optimizer
from ssimctr.train.metrics import scenario_summary
from ssimctr.train.sharing import FixedSharing
from ssimctr.utils.seed import configure_torch, resolve_device, seed_everything

SHARE_GATES = {"own": 0.0, "all": 1.0}


@dataclass
class JobInfo:
    """What Hydra knows about the job: chosen option per group, overrides, output folder."""

    choices: dict[str, str] = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)
    output_dir: Path = Path("outputs/runs/unnamed")


def run(cfg: DictConfig, job: JobInfo, console: Console | None = None) -> dict[str, float]:
    """Run one job and return its metrics (val/* of the best epoch and test/*)."""
    console = console or Console()
    tracker = make_tracker(cfg.tracking.backend, cfg.tracking.uri, cfg.tracking.experiment,
                           cfg.tracking.get("artifact_location"))
    tracker.start(run_name=cfg.tracking.get("run_name") or _run_name(job), tags=_tags(cfg, job),
                  parent_run_id=os.environ.get(PARENT_RUN_ENV))
    try:
        results = _run(cfg, job, tracker, console)
    except KeyboardInterrupt:
        tracker.end("KILLED", "interrupted")
        raise
    except UserError as error:
        tracker.end("FAILED", str(error))
        raise
    except Exception as error:
        tracker.end("FAILED", f"{type(error).__name__}: {error}")
        raise
    tracker.end("FINISHED")
    return results


def _run(cfg: DictConfig, job: JobInfo, tracker: Tracker, console: Console) -> dict[str, float]:
    seed_everything(cfg.seed)
    configure_torch(cfg.trainer.threads)
    device = resolve_device(cfg.trainer.device)
    job.output_dir.mkdir(parents=True, exist_ok=True)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    tracker.log_params(flatten_params(resolved))
    (job.output_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    tracker.log_artifact(job.output_dir / "config.yaml")

    data = prepare(OmegaConf.to_object(cfg.dataset), OmegaConf.to_object(cfg.scenario),
                   OmegaConf.to_object(cfg.split), Path(cfg.paths.cache))
    _describe(console, data)
    tracker.log_artifact(data.path / "feature_map.json")
    tracker.log_artifact(data.path / "manifest.json")
    feature_map = data.feature_map
    names = feature_map.scenario_names
    splits = {name: read_split(data.split_path(name), feature_map) for name in ("train", "val", "test")}
    loaders = {name: InMemoryLoader(batch, cfg.trainer.batch_size if name == "train" else cfg.trainer.eval_batch_size,
                                    shuffle=name == "train", seed=cfg.seed, device=device)
               for name, batch in splits.items()}

    model = build_model(cfg.backbone, cfg.regime, feature_map).to(device)
    if cfg.regime.share not in SHARE_GATES:
        raise UserError(f"regime.share={cfg.regime.share} is not known: use one of {', '.join(SHARE_GATES)}")
    optimizer = make_optimizer(model.parameters(), cfg.trainer.lr, cfg.trainer.weight_decay)
    console.print(f"[bold]{job.choices.get('backbone', 'model')}[/] / regime {cfg.regime.name}: "
                  f"{sum(p.numel() for p in model.parameters()):,} parameters on {device}")
    history = fit(model, FixedSharing(SHARE_GATES[cfg.regime.share]), optimizer, loaders["train"], loaders["val"],
                  names, epochs=cfg.trainer.epochs, monitor=cfg.trainer.monitor, mode=cfg.trainer.monitor_mode,
                  patience=cfg.trainer.patience, limit_batches=cfg.trainer.limit_train_batches,
                  progress=cfg.trainer.progress,
                  on_epoch_end=lambda epoch, metrics: tracker.log_metrics(metrics, step=epoch))

    results = dict(history.history[history.best_epoch - 1]) if history.best_epoch else {}
    results.update(evaluate(model, loaders["test"], "test", names))
    results.update({"best/epoch": float(history.best_epoch), "train/rows_per_s_mean": history.rows_per_second})
    tracker.log_metrics({k: v for k, v in results.items() if k.startswith(("test/", "best/", "train/rows_per_s_mean"))})

    test = splits["test"]
    rows = results_rows(results, scenario_summary(test.label.numpy(), test.scenario.numpy(), names), split="test")
    write_results_csv(job.output_dir / "test_results.csv", rows)
    tracker.log_artifact(job.output_dir / "test_results.csv")
    hydra_dir = job.output_dir / ".hydra"
    if hydra_dir.is_dir():
        tracker.log_artifact(hydra_dir, "hydra")
    footer = f"MLflow run {tracker.run_id} in {cfg.tracking.uri}" if tracker.run_id else "tracking=none"
    print_results(console, rows, title=f"test, best epoch {history.best_epoch}", footer=footer)
    return results


def _describe(console: Console, data: PreparedDataset) -> None:
    manifest = data.manifest
    sizes = ", ".join(f"{s} {manifest['splits'][s]['rows']:,}" for s in ("train", "val", "test"))
    state = "cached" if data.cache_hit else f"prepared in {manifest.get('seconds', 0):.1f}s"
    console.print(f"data [bold]{manifest['dataset']}[/]: {len(manifest['scenarios'])} scenarios "
                  f"({', '.join(manifest['scenarios'])}); {sizes} rows; {state} -> {data.path}")
    if manifest.get("dropped"):
        console.print(f"dropped rows: {manifest['dropped']}")
    if "oracle_auc" in manifest:
        oracle = manifest["oracle_auc"]["test"]
        console.print("oracle test AUC (true click probability): "
                      + ", ".join(f"{k} {v:.4f}" for k, v in oracle.items()))


def _run_name(job: JobInfo) -> str:
    parts = [job.choices.get(g) for g in ("dataset", "backbone", "regime")]
    if job.choices.get("ssim") not in (None, "disabled"):
        parts.append(f"ssim-{job.choices['ssim']}")
    return "-".join(p for p in parts if p) or "ssimctr"


def _tags(cfg: DictConfig, job: JobInfo) -> dict[str, str]:
    tags = {group: str(option) for group, option in job.choices.items() if not group.startswith("hydra")}
    tags.update({"overrides": " ".join(job.overrides), "seed": str(cfg.seed), "git_commit": _git_commit(),
                 "output_dir": str(job.output_dir)})
    return tags


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
