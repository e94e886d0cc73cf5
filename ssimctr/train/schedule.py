"""Learning-rate schedules over epochs (`trainer/lr_schedule`), applied by `fit` after each validation.

A schedule reads only the number of epochs since the monitored metric last improved (`stale`, which a
checkpoint keeps) and the optimizer's current rates (in its state dict), so a resumed fit continues
with exactly the rates an uninterrupted one would have.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class HasParamGroups(Protocol):
    param_groups: list[dict]


class ConstantLr:
    """`constant`: the rates stay as configured."""

    def after_epoch(self, optimizer: HasParamGroups, stale: int) -> None:
        """Nothing to change."""


@dataclass
class ReduceOnPlateau:
    """`plateau` (FuxiCTR's reduce_lr_on_plateau): after every `patience` epochs in a row without
    improvement, each parameter group's rate (and with it the embedding rule's) is multiplied by
    `factor`, never below `min_lr` (a rate already below it, e.g. 0, stays)."""

    factor: float
    patience: int
    min_lr: float

    def after_epoch(self, optimizer: HasParamGroups, stale: int) -> None:
        """Lower the rates when `stale` (epochs since the last improvement) reaches a multiple of patience."""
        if stale and stale % self.patience == 0:
            for group in optimizer.param_groups:
                group["lr"] = max(group["lr"] * self.factor, min(self.min_lr, group["lr"]))
