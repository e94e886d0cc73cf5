"""One job: prepare -> build -> train -> evaluate -> log. The only reader of the whole config."""
from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from ssimctr.cli.console import print_results, results_rows, write_results_csv
from ssimctr.data.datasplit import DataSplit, open_split
from ssimctr.data.prepare import PreparedDataset, prepare
from ssimctr.errors import UserError
from ssimctr.models.base import MultiScenarioModel
from ssimctr.models.build import build_model
from ssimctr.tracking.base import PARENT_RUN_ENV, Tracker, flatten_params, make_tracker
from ssimctr.config.schema import SsimConfig
from ssimctr.ssim import phases
from ssimctr.train.regimes import (TRAININGS, Outcome, TrainSettings, train_jointly, train_separately,
                                   train_then_finetune)
from ssimctr.utils.seed import configure_torch, resolve_device, seed_everything

SHARE_GATES = {"own": 0.0, "all": 1.0}
SSIM_PHASES = ("disabled", "search", "retrain", "pipeline")


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

    with console.status("preparing data") as status:
        data = prepare(OmegaConf.to_object(cfg.dataset), OmegaConf.to_object(cfg.scenario),
                       OmegaConf.to_object(cfg.split), Path(cfg.paths.cache),
                       progress=lambda message: (console.print(f"  {message}"), status.update(message)))
    _describe(console, data)
    tracker.log_artifact(data.path / "feature_map.json")
    tracker.log_artifact(data.path / "manifest.json")
    splits = _open_splits(cfg.trainer, data, device)
    outcome = _train(cfg, data, splits, device, tracker, console, job)

    results = {**outcome.val, **outcome.test, "best/epoch": outcome.best_epoch,
               "train/rows_per_s_mean": outcome.rows_per_second}
    tracker.log_metrics({k: v for k, v in results.items() if not k.startswith("val/")})
    if cfg.regime.training != "joint":
        tracker.log_metrics(outcome.val)
    best = f"best epoch {outcome.best_epoch:g}"

    rows = results_rows(results, _split_summary(data, "test"), split="test")
    write_results_csv(job.output_dir / "test_results.csv", rows)
    tracker.log_artifact(job.output_dir / "test_results.csv")
    hydra_dir = job.output_dir / ".hydra"
    if hydra_dir.is_dir():
        tracker.log_artifact(hydra_dir, "hydra")
    footer = f"MLflow run {tracker.run_id} in {cfg.tracking.uri}" if tracker.run_id else "tracking=none"
    print_results(console, rows, title=f"test, regime {cfg.regime.name}, {best}", footer=footer)
    return results


def _open_splits(trainer: DictConfig, data: PreparedDataset, device: torch.device) -> dict[str, DataSplit]:
    """Each split in memory, or streamed from its parquet shards (trainer.in_memory=false, or
    automatically for a split of more than trainer.stream_above_rows rows)."""
    splits = {}
    for name in ("train", "val", "test"):
        rows = data.manifest["splits"][name]["rows"]
        in_memory = trainer.in_memory if trainer.in_memory is not None else rows <= trainer.stream_above_rows
        splits[name] = open_split(data.split_path(name), data.feature_map, in_memory, trainer.stream_buffer_rows,
                                  device)
    return splits


def _split_summary(data: PreparedDataset, split: str) -> list[dict]:
    """Rows, positives and CTR per scenario of a split, from the manifest."""
    counts = data.manifest["splits"][split]["scenarios"]
    return [{"scenario": name, "rows": counts[name]["rows"], "positives": counts[name]["positives"],
             "ctr": counts[name]["positives"] / counts[name]["rows"] if counts[name]["rows"] else float("nan")}
            for name in data.feature_map.scenario_names]


def _train(cfg: DictConfig, data: PreparedDataset, splits: dict[str, DataSplit], device: torch.device,
           tracker: Tracker, console: Console, job: JobInfo) -> Outcome:
    """Dispatch on the SSIM phase and the regime's training kind."""
    regime, trainer, feature_map = cfg.regime, cfg.trainer, data.feature_map
    if regime.training not in TRAININGS:
        raise UserError(f"regime.training={regime.training} is not known: use one of {', '.join(TRAININGS)}")
    if regime.share not in SHARE_GATES:
        raise UserError(f"regime.share={regime.share} is not known: use one of {', '.join(SHARE_GATES)}")
    settings = TrainSettings(batch_size=trainer.batch_size, eval_batch_size=trainer.eval_batch_size,
                             epochs=trainer.epochs, lr=trainer.lr, weight_decay=trainer.weight_decay,
                             monitor=trainer.monitor, mode=trainer.monitor_mode, patience=trainer.patience,
                             limit_batches=trainer.limit_train_batches, progress=trainer.progress, seed=cfg.seed)

    ssim = OmegaConf.to_object(cfg.ssim)
    backbone = cfg.backbone
    if ssim.phase == "retrain" and ssim.retrain_dropout is not None:
        backbone = OmegaConf.merge(backbone, {"dropout": ssim.retrain_dropout})

    def build() -> MultiScenarioModel:
        return build_model(backbone, regime, feature_map).to(device)

    model = build()
    console.print(f"[bold]{backbone._target_.rsplit('.', 1)[-1]}[/] / regime {regime.name}"
                  f"{'' if ssim.phase == 'disabled' else ' / ssim ' + ssim.phase}: "
                  f"{sum(p.numel() for p in model.parameters()):,} parameters on {device}")
    names = feature_map.scenario_names
    if ssim.phase != "disabled":
        return _ssim(cfg, ssim, data, splits, settings, build, model, tracker, job)
    if regime.training == "separate":
        return train_separately(build, splits, names, settings, tracker.log_metrics)
    if regime.training == "finetune":
        return train_then_finetune(model, splits, names, settings, tracker.log_metrics, regime.finetune_lr)
    return train_jointly(model, SHARE_GATES[regime.share], splits, names, settings, tracker.log_metrics)


def _ssim(cfg: DictConfig, ssim: SsimConfig, data: PreparedDataset, splits: dict[str, DataSplit],
          settings: TrainSettings, build, model: MultiScenarioModel, tracker: Tracker, job: JobInfo) -> Outcome:
    """SSIM search or retrain (K towers trained jointly)."""
    if ssim.phase not in SSIM_PHASES:
        raise UserError(f"ssim.phase={ssim.phase} is not known: use one of {', '.join(SSIM_PHASES)}")
    if cfg.regime.training != "joint" or cfg.regime.towers != "per_scenario":
        raise UserError(f"ssim={ssim.phase} trains one model with a tower per scenario: use regime=mt "
                        f"(not regime={cfg.regime.name})")
    phases.check_options(ssim)
    folder = job.output_dir / "ssim"
    if ssim.phase in ("search", "pipeline"):
        searcher = model
        if ssim.phase == "pipeline" and ssim.search_backbone is not None:
            searcher = build_model(OmegaConf.create(ssim.search_backbone), cfg.regime, data.feature_map)
            searcher = searcher.to(splits["train"].device)
        log = tracker.log_metrics if ssim.phase == "search" else (
            lambda metrics, step: tracker.log_metrics({f"search/{k}": v for k, v in metrics.items()}, step))
        summary = {"dataset": cfg.dataset.name, "data_key": data.manifest["cache_key"],
                   "backbone": ssim.search_backbone or OmegaConf.to_container(cfg.backbone, resolve=True),
                   "seed": cfg.seed}
        outcome = phases.search(searcher, splits, data.feature_map.scenario_names, settings, ssim, log, folder,
                                summary)
        tracker.log_artifact(folder)
        if ssim.phase == "search":
            tracker.set_tags({"ssim.phase": "search"})
            return outcome
        source, tags = folder, {"ssim.search_run_id": tracker.run_id or "this run"}
    else:
        source, tags = _search_folder(cfg, ssim, job)
    outcome, info = phases.retrain(build, splits, data.feature_map, settings, ssim, tracker.log_metrics, source,
                                   data.manifest["cache_key"])
    tracker.set_tags({**tags, "ssim.phase": ssim.phase, "ssim.initial_weights": info.initial_weights,
                      "ssim.selection": info.selection})
    return outcome


def _search_folder(cfg: DictConfig, ssim: SsimConfig, job: JobInfo) -> tuple[Path | None, dict[str, str]]:
    """The search artifacts a retrain reads, and the lineage tags for its run."""
    if ssim.from_run and ssim.from_path:
        raise UserError("set one of ssim.from_run and ssim.from_path, not both")
    if ssim.from_run:
        from ssimctr.tracking.mlflow_tracker import download_run_artifacts

        folder = download_run_artifacts(cfg.tracking.uri, ssim.from_run, "ssim", job.output_dir / "search")
        return folder, {"ssim.search_run_id": ssim.from_run}
    if ssim.from_path:
        return Path(ssim.from_path), {"ssim.search_path": str(ssim.from_path)}
    return None, {}


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
