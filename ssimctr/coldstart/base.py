"""What every cold-start method works with (docs/methods.md §2.2, §3.8).

An *entity* is the user or the item whose cold start is studied. A *task* (episode) is one entity's
rows in time order: its first `rounds` × `shots` rows form the support set (the rows a method may
adapt on, in `rounds` successive warm-up rounds of `shots` rows each), the rest its query set (what is
evaluated, or the meta-training target). A task also carries the entity's *profile*: its own attribute
values (the dataset's declared user or item features) and nothing else, which is all a method may read
to build an embedding for an entity it has never seen.

A method wraps any model through the `towers()` contract: it trains the model (and its own parts) on
warm rows, then scores cold entities' query rows before any warm-up round (the cold phase) and after
each round (warm-a, warm-b, ...), adapting only its cold-entity parameters on the support rows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

import torch

from ssimctr.config.schema import TrainerConfig
from ssimctr.data.batch import Batch
from ssimctr.data.datasplit import DataSplit
from ssimctr.errors import UserError
from ssimctr.models.base import MultiScenarioModel
from ssimctr.models.layers.core import FeatureEmbedding
from ssimctr.train.loop import FitResult, Logger, Validator

EVAL_ROWS = 65536  # rows scored (or differentiated) at once when predicting


@dataclass(frozen=True)
class Attributes:
    """An entity's own attribute fields, by their position in each part of a Batch: `cat` columns of
    `batch.cat`, `num` columns of `batch.num`, `text` columns of `batch.text` (encoded fields)."""

    cat: tuple[int, ...] = ()
    num: tuple[int, ...] = ()
    text: tuple[int, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.cat or self.num or self.text)

    def fields(self, embedding: FeatureEmbedding) -> list[int]:
        """Their positions among `embedding`'s fields [B, F, D]: categorical fields first, then the
        scenario field when the model reads it, then numeric, then encoded fields."""
        categorical = embedding.offsets.numel() - int(embedding.scenario_feature)
        numeric = categorical + int(embedding.scenario_feature)
        encoded = numeric + embedding.numeric.shape[0]
        return [*self.cat, *(numeric + j for j in self.num), *(encoded + k for k in self.text)]

    def blank(self, batch: Batch) -> Batch:
        """`batch` with every value that is not one of these attributes blanked: other categorical
        fields 0 (out of vocabulary), other numeric fields 0, other encoded fields 0 (empty), label,
        scenario and row id 0."""
        return Batch(
            cat=_keep(batch.cat, self.cat),
            num=_keep(batch.num, self.num),
            scenario=torch.zeros_like(batch.scenario),
            label=torch.zeros_like(batch.label),
            row_id=torch.zeros_like(batch.row_id),
            text=None if batch.text is None else _keep(batch.text, self.text),
        )


@dataclass(frozen=True)
class Entity:
    """The entity whose cold start is studied."""

    kind: str  # "user" | "item"
    field: int  # index of its id among the categorical fields (and in FeatureEmbedding's fields)
    column: str  # the categorical column holding its id
    id_fields: tuple[int, ...]  # every user / item id field of the data (MeLU drops them all)
    attributes: Attributes = Attributes()  # its own attribute fields (dataset.user_features / item_features)
    attribute_names: tuple[str, ...] = ()  # their column names, for messages


@dataclass(frozen=True)
class Episodes:
    """Tasks of one entity each. Within a task, support rows come first in time and form `rounds`
    successive blocks of `shots` rows (warm-up round r holds the task's support rows r·shots ..
    (r+1)·shots − 1); rows of a task are contiguous in `support` and in `query`. `*_task` gives each
    row's task index in 0..num_tasks-1; `profile` holds one row per task: the entity's attribute values
    (read from its first row in time) with everything else blanked (`Attributes.blank`)."""

    support: Batch
    support_task: torch.Tensor  # [S] long
    query: Batch
    query_task: torch.Tensor  # [Q] long
    num_tasks: int
    profile: Batch  # [num_tasks] rows
    rounds: int = 1

    @property
    def shots(self) -> int:
        """Support rows per task and round (0: zero-shot)."""
        return len(self.support) // (self.num_tasks * self.rounds) if self.num_tasks and self.rounds else 0

    def round_rows(self, r: int) -> tuple[Batch, torch.Tensor]:
        """The support rows of warm-up round r (0-based) and each one's task."""
        counts = torch.bincount(self.support_task, minlength=self.num_tasks)
        starts = counts.cumsum(0) - counts
        within = torch.arange(len(self.support_task), device=counts.device) - starts[self.support_task]
        chosen = torch.nonzero(within // max(self.shots, 1) == r).squeeze(1)
        return self.support.take(chosen), self.support_task[chosen]

    def to(self, device: torch.device) -> Episodes:
        """The same episodes on `device`."""
        return dataclasses.replace(
            self,
            support=self.support.to(device),
            support_task=self.support_task.to(device),
            query=self.query.to(device),
            query_task=self.query_task.to(device),
            profile=self.profile.to(device),
        )


class ColdStartMethod(Protocol):
    """A cold-start method (conf/coldstart/<name>.yaml names its class; `entity` is given at build).
    `tags`: what the method reports about its training (e.g. whether a meta phase was kept), set by
    `train` and tagged on the run as coldstart.<key>."""

    tags: dict[str, str]

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

    def predict_cold(self, model: MultiScenarioModel, episodes: Episodes) -> list[torch.Tensor]:
        """Own-tower logits [Q] of every query row of `episodes`: in the cold phase (from the entity's
        profile only), then after each of `episodes.rounds` warm-up rounds on its support rows (each
        round adapting only the method's cold-entity parameters on that round's rows). Reads no query
        label and no other query row than the one it scores; never changes the model's weights."""

    def predict_warm(self, model: MultiScenarioModel, batch: Batch) -> torch.Tensor:
        """Own-tower logits [B] of warm rows."""


def at_least(key: str, value: int, least: int) -> None:
    """A method option that must be an integer >= `least`, or one clear error naming it."""
    if value < least:
        raise UserError(f"coldstart.{key}={value}: use an integer >= {least}")


def require_attributes(entity: Entity, method: str) -> None:
    """A clear error when the studied entity has no attribute field to generate its embedding from."""
    if not entity.attributes:
        declared = f"dataset.{entity.kind}_features"
        named = f" ({', '.join(entity.attribute_names)} are not fields of this job)" if entity.attribute_names else ""
        raise UserError(
            f"coldstart={method} generates a cold {entity.kind}'s embedding from its own attribute fields, and "
            f"{declared} declares none{named}: list the {entity.kind}'s attribute columns, e.g. "
            f"{declared}=[<column>,...]"
        )


@contextmanager
def frozen(model: MultiScenarioModel) -> Iterator[None]:
    """The model in evaluation mode with no parameter requiring gradients; restored on exit."""
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)


@torch.inference_mode()
def own_logits(model: MultiScenarioModel, batch: Batch) -> torch.Tensor:
    """Own-tower logits of every row of `batch` in evaluation mode, scored in chunks."""
    model.eval()
    parts = [model(batch.slice(start, start + EVAL_ROWS)).float() for start in range(0, len(batch), EVAL_ROWS)]
    return torch.cat(parts) if parts else torch.zeros(0, device=batch.label.device)


def _keep(values: torch.Tensor, columns: tuple[int, ...]) -> torch.Tensor:
    kept = torch.zeros(values.shape[1], dtype=torch.bool, device=values.device)
    kept[list(columns)] = True
    return torch.where(kept, values, torch.zeros((), dtype=values.dtype, device=values.device))
