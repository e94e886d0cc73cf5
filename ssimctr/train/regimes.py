"""Training regimes: how models meet scenarios.

joint     one model on all rows; the sharing gate decides which towers a row trains
          (mt: own tower, mt_s: every tower, single: the one tower).
separate  ST-Backbone: one independent model per scenario, trained and early-stopped on that
          scenario's rows only, evaluated on them (methods.md §1.7, a [reading]).
finetune  Finetune: one model trained on all rows, then a copy per scenario fine-tuned on its
          rows and evaluated on them (methods.md §1.7, a [reading]).
All three report the same metric names: per-scenario, pooled and mean AUC / logloss.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import numpy as np

from ssimctr.data.batch import Batch
from ssimctr.data.datasplit import DataSplit, Loader, as_splits
from ssimctr.errors import UserError
from ssimctr.models.base import MultiScenarioModel
from ssimctr.train.loop import FitResult, Validator, evaluate, fit, make_optimizer, predict, validator
from ssimctr.metrics import scenario_metrics
from ssimctr.train.sharing import FixedSharing

Logger = Callable[[dict[str, float], int], None]
Splits = dict[str, Batch | DataSplit]  # train / val / test; a Batch is a split held in memory
TRAININGS = ("joint", "separate", "finetune")


@dataclass(frozen=True)
class TrainSettings:
    """Trainer options, the same for every regime."""

    batch_size: int
    eval_batch_size: int
    epochs: int
    lr: float
    weight_decay: float
    monitor: str
    mode: str
    patience: int
    limit_batches: int | None
    progress: bool
    seed: int


@dataclass
class Outcome:
    """Validation metrics of the selected model(s), test metrics, and how training went."""

    val: dict[str, float]
    test: dict[str, float]
    fits: list[FitResult]

    @property
    def best_epoch(self) -> float:
        """The best epoch (the mean over models when there are several)."""
        return float(np.mean([f.best_epoch for f in self.fits]))

    @property
    def rows_per_second(self) -> float:
        seconds = sum(f.train_seconds for f in self.fits)
        return sum(f.train_rows for f in self.fits) / seconds if seconds else float("nan")


def train_jointly(model: MultiScenarioModel, gate: float, splits: Splits, names: Sequence[str],
                  settings: TrainSettings, log: Logger, prefix: str = "") -> Outcome:
    """One model on all rows with a fixed sharing gate; metrics over all scenarios."""
    splits = as_splits(splits)
    history = _fit(model, gate, splits["train"], validator(eval_loader(splits["val"], settings), names), settings,
                   lambda metrics, epoch: log(_prefixed(metrics, prefix), epoch), settings.lr)
    val = history.history[history.best_epoch - 1] if history.best_epoch else {}
    val = {k: v for k, v in val.items() if k.startswith("val/")}
    return Outcome(val, evaluate(model, eval_loader(splits["test"], settings), "test", names), [history])


def train_separately(build: Callable[[], MultiScenarioModel], splits: Splits, names: Sequence[str],
                     settings: TrainSettings, log: Logger) -> Outcome:
    """ST: a fresh model per scenario, trained on that scenario's rows only."""
    return _per_scenario(lambda _: build(), splits, names, settings, log, "st", settings.lr)


def train_then_finetune(model: MultiScenarioModel, splits: Splits, names: Sequence[str],
                        settings: TrainSettings, log: Logger, finetune_lr: float | None) -> Outcome:
    """Finetune: pre-train on all rows (logged as pretrain/*), then fine-tune a copy per scenario."""
    pretrain = train_jointly(model, 0.0, splits, names, settings, log, prefix="pretrain/")
    outcome = _per_scenario(lambda _: copy.deepcopy(model), splits, names, settings, log, "finetune",
                            finetune_lr or settings.lr)
    outcome.fits = pretrain.fits + outcome.fits
    return outcome


def _per_scenario(model_for: Callable[[int], MultiScenarioModel], splits: Splits, names: Sequence[str],
                  settings: TrainSettings, log: Logger, stage: str, lr: float) -> Outcome:
    predictions: dict[str, list[tuple[np.ndarray, ...]]] = {"val": [], "test": []}
    fits = []
    settings = replace(settings, monitor="/".join(settings.monitor.split("/")[:2] + ["mean"]))
    for k, name in enumerate(names):
        part = {split: data.of_scenario(k) for split, data in as_splits(splits).items()}
        if part["train"].num_rows == 0:
            raise UserError(f"regime={stage} trains one model per scenario, but scenario '{name}' has no train rows")
        model = model_for(k)
        history = _fit(model, 0.0, part["train"], _one_scenario_validator(eval_loader(part["val"], settings), name),
                       settings, lambda metrics, epoch, n=name: log(_scenario_only(metrics, n, stage), epoch), lr)
        fits.append(history)
        for split in predictions:
            labels, logits, _ = predict(model, eval_loader(part[split], settings))
            predictions[split].append((labels, logits, np.full(len(labels), k)))
    val, test = (scenario_metrics(split, *(np.concatenate(parts) for parts in zip(*predictions[split])), names)
                 for split in ("val", "test"))
    return Outcome(val, test, fits)


def _one_scenario_validator(loader: Loader, name: str) -> Validator:
    """Validation of a model that serves one scenario: its metrics also fill the mean and overall keys."""
    def validate(model: MultiScenarioModel) -> dict[str, float]:
        labels, logits, _ = predict(model, loader)
        return scenario_metrics("val", labels, logits, np.zeros(len(labels), dtype=np.int64), [name])
    return validate


def _fit(model: MultiScenarioModel, gate: float, train: DataSplit, validate: Validator,
         settings: TrainSettings, log: Logger, lr: float) -> FitResult:
    optimizer = make_optimizer(model.parameters(), lr, settings.weight_decay)
    loader = train.loader(settings.batch_size, shuffle=True, seed=settings.seed)
    return fit(model, FixedSharing(gate), optimizer, loader, validate, epochs=settings.epochs, monitor=settings.monitor,
               mode=settings.mode, patience=settings.patience, limit_batches=settings.limit_batches,
               progress=settings.progress, on_epoch_end=lambda epoch, metrics: log(metrics, epoch))


def eval_loader(data: DataSplit, settings: TrainSettings) -> Loader:
    """An evaluation loader: unshuffled, eval batch size."""
    return data.loader(settings.eval_batch_size, shuffle=False)


def _prefixed(metrics: dict[str, float], prefix: str) -> dict[str, float]:
    return {f"{prefix}{key}": value for key, value in metrics.items()}


def _scenario_only(metrics: dict[str, float], name: str, stage: str) -> dict[str, float]:
    """Per-epoch metrics of one scenario's model, as `<stage>/val/auc/<name>`, `<stage>/train/loss/<name>`."""
    kept = {f"{stage}/{key}": value for key, value in metrics.items() if key.endswith(f"/{name}")}
    kept[f"{stage}/train/loss/{name}"] = metrics["train/loss"]
    return kept
