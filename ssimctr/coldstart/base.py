"""What every cold-start method works with (docs/methods.md §2.2, §3.8).

An *entity* is the user or the item whose cold start is studied. A *task* (episode) is one entity's
rows split in time order into a support set (its first K rows: what a few-shot method may adapt on)
and a query set (the rest: what is evaluated, or the meta-training target). A method wraps any
model through the `towers()` contract: it trains the model (and its own parts) on warm rows, then
predicts cold entities' query rows, adapting on their support rows when there are any.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from ssimctr.config.schema import TrainerConfig
from ssimctr.data.batch import Batch
from ssimctr.data.datasplit import DataSplit
from ssimctr.models.base import MultiScenarioModel
from ssimctr.train.loop import FitResult, Logger, Validator


@dataclass(frozen=True)
class Entity:
    """The entity whose cold start is studied."""

    kind: str  # "user" | "item"
    field: int  # index of its id among the categorical fields (and in FeatureEmbedding's fields)
    column: str  # the categorical column holding its id
    id_fields: tuple[int, ...]  # every user / item id field of the data (MeLU drops them all)


@dataclass(frozen=True)
class Episodes:
    """Tasks of one entity each. Support rows come first in time within a task; rows of a task are
    contiguous in `support` and in `query`. `*_task` gives each row's task index in 0..num_tasks-1."""

    support: Batch
    support_task: torch.Tensor  # [S] long
    query: Batch
    query_task: torch.Tensor  # [Q] long
    num_tasks: int

    @property
    def shots(self) -> int:
        """Support rows per task (0: zero-shot)."""
        return len(self.support) // self.num_tasks if self.num_tasks else 0

    def to(self, device: torch.device) -> Episodes:
        """The same episodes on `device`."""
        return Episodes(
            self.support.to(device),
            self.support_task.to(device),
            self.query.to(device),
            self.query_task.to(device),
            self.num_tasks,
        )


class ColdStartMethod(Protocol):
    """A cold-start method (conf/coldstart/<name>.yaml names its class; `entity` is given at build)."""

    def train(
        self,
        model: MultiScenarioModel,
        train: DataSplit,
        meta_tasks: Episodes,
        validate: Validator,
        settings: TrainerConfig,
        log: Logger,
    ) -> list[FitResult]:
        """Train the model (and the method's own parts) on the warm training rows; `meta_tasks` are
        episodes of warm entities built from those rows (earlier rows support, later rows query)."""

    def predict_cold(self, model: MultiScenarioModel, episodes: Episodes) -> torch.Tensor:
        """Own-tower logits [Q] of every query row of `episodes`, adapting on its support rows when
        `episodes.shots` > 0. Never changes the model's weights."""

    def predict_warm(self, model: MultiScenarioModel, batch: Batch) -> torch.Tensor:
        """Own-tower logits [B] of warm rows."""
