"""Training regimes: how models meet scenarios. A `Regime` is one object that knows its towers,
its sharing gate, how it trains and how it reports validation metrics (joint training logs val/*
each epoch; a model per scenario logs its own metrics per epoch and val/* once, at the end).

joint     one model on all rows; the sharing gate decides which towers a row trains
          (mt: own tower, mt_s: every tower, single: the one tower), `loss_reduction` how the
          batch's loss is normalised (row | scenario, ssimctr.train.sharing).
separate  ST-Backbone: one independent model per scenario, trained and early-stopped on that
          scenario's rows only, evaluated on them (docs/methods.md §1.7, a reading).
finetune  Finetune: one model trained on all rows, then a copy per scenario fine-tuned on its
          rows and evaluated on them (docs/methods.md §1.7, a reading); the pretrained copy
          competes as epoch 0, so a scenario whose fine-tuning never improves validation keeps it.
          A model trained on one scenario's rows has the same loss under both reductions.
All three report the same metric names: per-scenario, pooled and mean AUC / logloss.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from ssimctr.config.schema import RegimeConfig, TrainerConfig
from ssimctr.data.datasplit import DataSplit, Loader
from ssimctr.errors import UserError
from ssimctr.metrics import scenario_metrics
from ssimctr.models.base import MultiScenarioModel, PerScenarioModels
from ssimctr.train.loop import (
    FitResult,
    Logger,
    Outcome,
    Validator,
    eval_loader,
    evaluate,
    fit,
    make_optimizer,
    predict,
    train_loader,
    validator,
)
from ssimctr.train.sharing import REDUCTIONS, FixedSharing

Splits = dict[str, DataSplit]  # train / val / test
ModelBuilder = Callable[[], MultiScenarioModel]
TRAININGS = ("joint", "separate", "finetune")
TOWERS = ("per_scenario", "single")
SHARE_GATES = {"own": 0.0, "all": 1.0}


@dataclass(frozen=True)
class Regime:
    """One regime option (conf/regime/<name>.yaml), checked once when it is made."""

    name: str
    training: str  # joint | separate | finetune
    towers: str  # per_scenario | single
    share: str  # own | all
    scenario_feature: bool
    finetune_lr: float | None = None
    loss_reduction: str = "row"  # row | scenario

    def __post_init__(self) -> None:
        choices = (("training", TRAININGS), ("towers", TOWERS), ("share", SHARE_GATES), ("loss_reduction", REDUCTIONS))
        for key, allowed in choices:
            if getattr(self, key) not in allowed:
                raise UserError(f"regime.{key}={getattr(self, key)} is not known: use one of {', '.join(allowed)}")

    @classmethod
    def from_config(cls, config: RegimeConfig) -> Regime:
        """The regime of a composed `regime` config."""
        return cls(
            config.name,
            config.training,
            config.towers,
            config.share,
            bool(config.scenario_feature),
            config.finetune_lr,
            config.loss_reduction,
        )

    def num_towers(self, num_scenarios: int) -> int:
        """K towers (one per scenario) or a single tower broadcast to every scenario."""
        return num_scenarios if self.towers == "per_scenario" else 1

    @property
    def gate(self) -> float:
        """The fixed sharing gate of joint training: 0 = own tower, 1 = every tower."""
        return SHARE_GATES[self.share]

    @property
    def sharing(self) -> FixedSharing:
        """The loss of joint training: the fixed gate, reduced per row or per scenario."""
        return FixedSharing(self.gate, self.loss_reduction)

    @property
    def is_multi_tower_joint(self) -> bool:
        """One model, a tower per scenario, trained on all rows: what SSIM's search and retrain need."""
        return self.training == "joint" and self.towers == "per_scenario"

    def train(
        self,
        model: MultiScenarioModel,
        build: ModelBuilder,
        splits: Splits,
        names: Sequence[str],
        settings: TrainerConfig,
        log: Logger,
    ) -> Outcome:
        """Train and evaluate under this regime: `model` is the job's model (trained jointly, or
        pre-trained before fine-tuning); `build` makes a fresh one (one per scenario when separate)."""
        if self.training == "separate":
            return train_separately(build, splits, names, settings, log)
        if self.training == "finetune":
            return train_then_finetune(model, splits, names, settings, log, self.finetune_lr, self.loss_reduction)
        return train_jointly(model, self.sharing, splits, names, settings, log)


def train_jointly(
    model: MultiScenarioModel,
    loss: FixedSharing,
    splits: Splits,
    names: Sequence[str],
    settings: TrainerConfig,
    log: Logger,
    prefix: str = "",
) -> Outcome:
    """One model on all rows with a fixed sharing loss; metrics over all scenarios."""
    result = _fit(
        model,
        loss,
        splits["train"],
        validator(eval_loader(splits["val"], settings), names),
        settings,
        lambda metrics, epoch: log(_prefixed(metrics, prefix), epoch),
        settings.lr,
        phase=prefix.rstrip("/"),
    )
    test = evaluate(model, eval_loader(splits["test"], settings), "test", names)
    return Outcome(result.val, test, [result], model=model)


def train_separately(
    build: ModelBuilder, splits: Splits, names: Sequence[str], settings: TrainerConfig, log: Logger
) -> Outcome:
    """ST: a fresh model per scenario, trained on that scenario's rows only."""
    return _per_scenario(lambda _: build(), splits, names, settings, log, "st", settings.lr)


def train_then_finetune(
    model: MultiScenarioModel,
    splits: Splits,
    names: Sequence[str],
    settings: TrainerConfig,
    log: Logger,
    finetune_lr: float | None,
    reduction: str = "row",
) -> Outcome:
    """Finetune: pre-train on all rows (logged as pretrain/*, its loss reduced by `reduction`), then
    fine-tune a copy per scenario."""
    pretrain = train_jointly(model, FixedSharing(0.0, reduction), splits, names, settings, log, prefix="pretrain/")
    outcome = _per_scenario(
        lambda _: copy.deepcopy(model),
        splits,
        names,
        settings,
        log,
        "finetune",
        finetune_lr or settings.lr,
        keep_initial=True,
    )
    outcome.fits = pretrain.fits + outcome.fits
    return outcome


def _per_scenario(
    model_for: Callable[[int], MultiScenarioModel],
    splits: Splits,
    names: Sequence[str],
    settings: TrainerConfig,
    log: Logger,
    stage: str,
    lr: float,
    keep_initial: bool = False,
) -> Outcome:
    """A model per scenario; its validation metrics are logged once, at the end, as val/*.
    `keep_initial`: a scenario's model as given competes with its trained epochs (fine-tuning)."""
    predictions: dict[str, list[tuple[np.ndarray, ...]]] = {"val": [], "test": []}
    fits, models = [], []
    settings = replace(settings, monitor="/".join(settings.monitor.split("/")[:2] + ["mean"]))
    for k, name in enumerate(names):
        part = {split: data.of_scenario(k) for split, data in splits.items()}
        if part["train"].num_rows == 0:
            raise UserError(f"regime={stage} trains one model per scenario, but scenario '{name}' has no train rows")
        model = model_for(k)
        result = _fit(
            model,
            FixedSharing(0.0),
            part["train"],
            _one_scenario_validator(eval_loader(part["val"], settings), name),
            settings,
            lambda metrics, epoch, n=name: log(_scenario_only(metrics, n, stage), epoch),
            lr,
            keep_initial,
            phase=f"{stage} {name}",
        )
        fits.append(result)
        models.append(model)
        for split in predictions:
            labels, logits, _ = predict(model, eval_loader(part[split], settings))
            predictions[split].append((labels, logits, np.full(len(labels), k)))
    val, test = (
        scenario_metrics(split, *(np.concatenate(parts) for parts in zip(*predictions[split])), names)
        for split in ("val", "test")
    )
    return Outcome(val, test, fits, val_logged=False, model=PerScenarioModels(models))


def _one_scenario_validator(loader: Loader, name: str) -> Validator:
    """Validation of a model that serves one scenario: its metrics also fill the mean and overall keys."""

    def validate(model: MultiScenarioModel) -> dict[str, float]:
        labels, logits, _ = predict(model, loader)
        return scenario_metrics("val", labels, logits, np.zeros(len(labels), dtype=np.int64), [name])

    return validate


def _fit(
    model: MultiScenarioModel,
    loss: FixedSharing,
    train: DataSplit,
    validate: Validator,
    settings: TrainerConfig,
    log: Logger,
    lr: float,
    keep_initial: bool = False,
    phase: str = "",
) -> FitResult:
    optimizer = make_optimizer(model.parameters(), lr, settings.weight_decay, settings.embedding_optimizer)
    loader = train_loader(train, settings)
    return fit(model, loss, optimizer, loader, validate, settings, keep_initial=keep_initial, log=log, phase=phase)


def _prefixed(metrics: dict[str, float], prefix: str) -> dict[str, float]:
    return {f"{prefix}{key}": value for key, value in metrics.items()}


def _scenario_only(metrics: dict[str, float], name: str, stage: str) -> dict[str, float]:
    """Per-epoch metrics of one scenario's model, as `<stage>/val/auc/<name>`, `<stage>/train/loss/<name>`."""
    kept = {f"{stage}/{key}": value for key, value in metrics.items() if key.endswith(f"/{name}")}
    kept[f"{stage}/train/loss/{name}"] = metrics["train/loss"]
    return kept
