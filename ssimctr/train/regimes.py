"""Training regimes: how models meet scenarios. A regime is one object, built from conf/regime/<name>.yaml
by its `_target_` (a class here that subclasses the schema, ssimctr.config.schema.RegimeConfig, whose
`__post_init__` checks the options), that knows its towers, its sharing gate, how it trains and how it
reports validation metrics (joint training logs val/* each epoch; a model per scenario logs its own
metrics per epoch and val/* once, at the end).

Joint     one model on all rows; the sharing gate decides which towers a row trains
          (mt: own tower, mt_s: every tower, single: the one tower), `loss_reduction` how the
          batch's loss is normalised (row | scenario, ssimctr.train.sharing).
Separate  ST-Backbone: one independent model per scenario, trained and early-stopped on that
          scenario's rows only, evaluated on them (docs/methods.md §1.7, a reading).
Finetune  Finetune: one model trained on all rows, then a copy per scenario fine-tuned on its
          rows and evaluated on them (docs/methods.md §1.7, a reading); the pretrained copy
          competes as epoch 0, so a scenario whose fine-tuning never improves validation keeps it.
          A model trained on one scenario's rows has the same loss under both reductions.
All three report the same metric names: per-scenario, pooled and mean AUC / logloss.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import ClassVar

import numpy as np

from ssimctr.config.schema import RegimeConfig, TrainerConfig
from ssimctr.data.datasplit import DataSplit, Loader
from ssimctr.errors import UserError
from ssimctr.metrics import scenario_metrics
from ssimctr.models.base import MultiScenarioModel, PerScenarioModels
from ssimctr.train.loop import (
    FitResult,
    Logger,
    Trained,
    Validator,
    eval_loader,
    evaluate,
    fit,
    make_optimizer,
    predict,
    train_loader,
    validator,
)
from ssimctr.train.sharing import FixedSharing
from ssimctr.utils.instantiate import BuiltFromSchema

Splits = Mapping[str, DataSplit]  # train / val / test
ModelBuilder = Callable[[], MultiScenarioModel]


class Regime(BuiltFromSchema, RegimeConfig, ABC):
    """A regime option; a subclass is one training procedure (`training` names it in messages)."""

    training: ClassVar[str]  # joint | separate | finetune

    def __post_init__(self) -> None:
        super().__post_init__()  # the schema's checks
        if self.finetune_lr is not None and self.training != "finetune":
            raise UserError(
                f"regime.finetune_lr is read by regime=finetune only; regime={self.name} would ignore it: "
                "drop it, or choose regime=finetune"
            )

    def num_towers(self, num_scenarios: int) -> int:
        """K towers (one per scenario) or a single tower broadcast to every scenario."""
        return num_scenarios if self.towers == "per_scenario" else 1

    @property
    def gate(self) -> float:
        """The fixed sharing gate of joint training: 0 = own tower, 1 = every tower."""
        return 1.0 if self.share == "all" else 0.0

    @property
    def sharing(self) -> FixedSharing:
        """The loss of joint training: the fixed gate, reduced per row or per scenario."""
        return FixedSharing(self.gate, self.loss_reduction)

    @property
    def is_multi_tower_joint(self) -> bool:
        """One model, a tower per scenario, trained on all rows: what SSIM's search and retrain need."""
        return self.training == "joint" and self.towers == "per_scenario"

    @abstractmethod
    def train(
        self,
        model: MultiScenarioModel,
        build: ModelBuilder,
        splits: Splits,
        names: Sequence[str],
        settings: TrainerConfig,
        log: Logger,
    ) -> Trained:
        """Train and evaluate under this regime: `model` is the job's model (trained jointly, or
        pre-trained before fine-tuning); `build` makes a fresh one (one per scenario when separate)."""


class Joint(Regime):
    """regime=mt | mt_s | single: one model on all rows, the fixed sharing loss."""

    training = "joint"

    def train(
        self,
        model: MultiScenarioModel,
        build: ModelBuilder,
        splits: Splits,
        names: Sequence[str],
        settings: TrainerConfig,
        log: Logger,
    ) -> Trained:
        return train_jointly(model, self.sharing, splits, names, settings, log)


class Separate(Regime):
    """regime=st: a fresh model per scenario, on its rows only."""

    training = "separate"

    def train(
        self,
        model: MultiScenarioModel,
        build: ModelBuilder,
        splits: Splits,
        names: Sequence[str],
        settings: TrainerConfig,
        log: Logger,
    ) -> Trained:
        return train_separately(build, splits, names, settings, log)


class Finetune(Regime):
    """regime=finetune: `model` pre-trained on all rows, then a copy per scenario fine-tuned (finetune_lr)."""

    training = "finetune"

    def train(
        self,
        model: MultiScenarioModel,
        build: ModelBuilder,
        splits: Splits,
        names: Sequence[str],
        settings: TrainerConfig,
        log: Logger,
    ) -> Trained:
        return train_then_finetune(model, splits, names, settings, log, self.finetune_lr, self.loss_reduction)


def train_jointly(
    model: MultiScenarioModel,
    loss: FixedSharing,
    splits: Splits,
    names: Sequence[str],
    settings: TrainerConfig,
    log: Logger,
    prefix: str = "",
) -> Trained:
    """One model on all rows with a fixed sharing loss; metrics over all scenarios."""
    result = _fit(
        model,
        loss,
        splits["train"],
        validator(eval_loader(splits["val"], settings), names),
        settings,
        lambda metrics, epoch: log(_prefixed(metrics, prefix), epoch),
        None,
        phase=prefix.rstrip("/"),
    )
    test = evaluate(model, eval_loader(splits["test"], settings), "test", names)
    return Trained(result.val, test, [result], model=model)


def train_separately(
    build: ModelBuilder, splits: Splits, names: Sequence[str], settings: TrainerConfig, log: Logger
) -> Trained:
    """ST: a fresh model per scenario, trained on that scenario's rows only."""
    return _per_scenario(lambda _: build(), splits, names, settings, log, "st", None)


def train_then_finetune(
    model: MultiScenarioModel,
    splits: Splits,
    names: Sequence[str],
    settings: TrainerConfig,
    log: Logger,
    finetune_lr: float | None,
    reduction: str = "row",
) -> Trained:
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
        finetune_lr,
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
    lr: float | None,
    keep_initial: bool = False,
) -> Trained:
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
    return Trained(val, test, fits, val_logged=False, model=PerScenarioModels(models))


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
    lr: float | None,
    keep_initial: bool = False,
    phase: str = "",
) -> FitResult:
    """`fit` with the job's optimizer, at learning rate `lr` (None: trainer.optimizer.lr)."""
    parameters = list(model.parameters())
    optimizer = make_optimizer(settings, parameters if lr is None else [{"params": parameters, "lr": lr}])
    loader = train_loader(train, settings)
    return fit(model, loss, optimizer, loader, validate, settings, keep_initial=keep_initial, log=log, phase=phase)


def _prefixed(metrics: dict[str, float], prefix: str) -> dict[str, float]:
    return {f"{prefix}{key}": value for key, value in metrics.items()}


def _scenario_only(metrics: dict[str, float], name: str, stage: str) -> dict[str, float]:
    """Per-epoch metrics of one scenario's model, as `<stage>/val/auc/<name>`, `<stage>/train/loss/<name>`."""
    kept = {f"{stage}/{key}": value for key, value in metrics.items() if key.endswith(f"/{name}")}
    kept[f"{stage}/train/loss/{name}"] = metrics["train/loss"]
    return kept
