"""Schemas of the optimizer groups nested in the trainer, and the one place of their defaults.

`trainer/optimizer` (the dense weights), `trainer/embedding_optimizer` (the id tables' row rule),
`trainer/lr_schedule` and `trainer/regularizer` (any number of them): each option is a YAML under
conf/trainer/<group>/ naming its class with `_target_`; its values are checked here, once, when the
trainer config is read (docs/methods.md §3.11, §3.13). A new optimizer, rule, schedule or regularizer is
one class and one YAML (and its schema here).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from ssimctr.errors import UserError


def _check(group: str, values: dict[str, tuple[bool, str]], config: Any) -> None:
    """One line for the first value out of its range: `trainer.<group>.<key>=<value>: <rule>`."""
    for key, (holds, rule) in values.items():
        if not holds:
            raise UserError(f"trainer.{group}.{key}={getattr(config, key)}: {rule}")


@dataclass
class OptimizerConfig:
    """A torch optimizer for the dense weights: `_target_` names its class, the other keys its options."""

    _target_: str = MISSING


@dataclass
class AdamConfig(OptimizerConfig):
    """torch.optim.Adam (fused on CPU where torch supports it). weight_decay: Adam's coupled L2 on the dense
    weights (FuxiCTR's net_regularizer; an id table gets it only under embedding_optimizer=adam)."""

    _target_: str = "torch.optim.Adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8

    def __post_init__(self) -> None:
        _check(
            "optimizer",
            {
                "lr": (self.lr >= 0, "must be 0 or positive (e.g. trainer.optimizer.lr=1e-3; 0 freezes the model)"),
                "weight_decay": (self.weight_decay >= 0, "must be 0 or positive"),
                "betas": (len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "must be two values in [0, 1)"),
                "eps": (self.eps > 0, "must be positive"),
            },
            self,
        )


@dataclass
class RowRuleConfig:
    """An embedding table's row rule (ssimctr.train.optim.RowRule): `_target_` names its class."""

    _target_: str = MISSING


def _check_rule(config: Any) -> None:
    values = {"lr": (config.lr is None or config.lr >= 0, "must be 0 or positive, or null (the optimizer's lr)")}
    if hasattr(config, "weight_decay"):
        values["weight_decay"] = (config.weight_decay >= 0, "must be 0 or positive")
    if hasattr(config, "eps"):
        values["eps"] = (config.eps > 0, "must be positive")
    _check("embedding_optimizer", values, config)


@dataclass
class LazyAdamConfig(RowRuleConfig):
    """sparse_adam: Adam on the touched rows only (lazy); lr null = trainer.optimizer.lr."""

    _target_: str = "ssimctr.train.optim.LazyAdam"
    lr: float | None = None
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        _check_rule(self)


@dataclass
class RowwiseAdagradConfig(RowRuleConfig):
    """rowwise_adagrad: one Adagrad accumulator per row (torchrec / FBGEMM's default for id tables)."""

    _target_: str = "ssimctr.train.optim.RowwiseAdagrad"
    lr: float | None = 0.01
    eps: float = 1e-8
    initial_accumulator: float = 0.0
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        _check_rule(self)


@dataclass
class RowSGDConfig(RowRuleConfig):
    """sgd: plain gradient descent on the touched rows: a row moves in proportion to how often it is looked
    up (a mean loss's gradient per lookup is of order 1/B, hence the large rate)."""

    _target_: str = "ssimctr.train.optim.RowSGD"
    lr: float | None = 1.0
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        _check_rule(self)


@dataclass
class DenseTablesConfig(RowRuleConfig):
    """adam (dense): the tables' gradients made dense and stepped by trainer.optimizer, O(vocabulary) a step."""

    _target_: str = "ssimctr.train.optim.DenseTables"


@dataclass
class LrScheduleConfig:
    _target_: str = MISSING


@dataclass
class ConstantLrConfig(LrScheduleConfig):
    _target_: str = "ssimctr.train.schedule.ConstantLr"


@dataclass
class PlateauConfig(LrScheduleConfig):
    """Multiply the learning rates by `factor` after `patience` epochs without improvement of
    trainer.monitor (FuxiCTR's reduce_lr_on_plateau), never below `min_lr`."""

    _target_: str = "ssimctr.train.schedule.ReduceOnPlateau"
    factor: float = 0.1
    patience: int = 1
    min_lr: float = 1e-6

    def __post_init__(self) -> None:
        _check(
            "lr_schedule",
            {
                "factor": (0 < self.factor < 1, "must be in (0, 1) (e.g. 0.1: a tenth of the rate)"),
                "patience": (self.patience >= 1, "must be at least 1 (epochs without improvement)"),
                "min_lr": (self.min_lr >= 0, "must be 0 or positive"),
            },
            self,
        )


@dataclass
class RegularizerConfig:
    _target_: str = MISSING


@dataclass
class EmbeddingL2Config(RegularizerConfig):
    """λ · mean over the batch's rows of Σ_f ||e_f||² over the id table rows they look up."""

    _target_: str = "ssimctr.train.regularizers.EmbeddingL2"
    l2: float = 1e-2

    def __post_init__(self) -> None:
        _check("regularizer.embedding_l2", {"l2": (self.l2 >= 0, "must be 0 or positive")}, self)


@dataclass
class IdDropoutConfig(RegularizerConfig):
    """Each training row's user / item id becomes the OOV id 0 with probability `rate` (per field)."""

    _target_: str = "ssimctr.train.regularizers.IdDropout"
    rate: float = 0.5

    def __post_init__(self) -> None:
        _check("regularizer.id_dropout", {"rate": (0 <= self.rate < 1, "must be in [0, 1)")}, self)


OPTIM_SCHEMAS: dict[str, dict[str, type]] = {
    "trainer_optimizer": {"adam": AdamConfig},
    "trainer_embedding_optimizer": {
        "sparse_adam": LazyAdamConfig,
        "rowwise_adagrad": RowwiseAdagradConfig,
        "sgd": RowSGDConfig,
        "adam": DenseTablesConfig,
    },
    "trainer_lr_schedule": {"constant": ConstantLrConfig, "plateau": PlateauConfig},
    "trainer_regularizer": {"embedding_l2": EmbeddingL2Config, "id_dropout": IdDropoutConfig},
}
