"""Regularizers of training (`trainer/regularizer`, docs/methods.md §3.13): each one an object built from
its YAML, applied by `fit` to every model, regime, SSIM phase and cold-start method's training loss.

A regularizer may change a training batch before the loss sees it (`prepare`) and may add a penalty to
the loss (`penalty`). The penalty of the dense weights is the dense optimizer's `weight_decay`
(trainer.optimizer.weight_decay); these act on the embedding tables.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from ssimctr.data.batch import Batch
from ssimctr.models.base import MultiScenarioModel
from ssimctr.train.checkpoint import load_state_into, state_of
from ssimctr.utils.seed import GeneratorState

LossFn = Callable[[MultiScenarioModel, Batch], torch.Tensor]


class Regularizer:
    """A training-time change of the batch (`prepare`) and / or a penalty added to the loss (`penalty`)."""

    def bind(self, model: MultiScenarioModel, seed: int) -> None:
        """Called once before training `model` with the job's seed (a regularizer that draws seeds here)."""

    def prepare(self, batch: Batch) -> Batch:
        """The batch the loss sees (default: as it is)."""
        return batch

    def penalty(self, model: MultiScenarioModel, batch: Batch) -> torch.Tensor | None:
        """A term added to the loss (default: none)."""
        return None


@dataclass
class EmbeddingL2(Regularizer):
    """L2 on the embedding rows a batch looks up (FuxiCTR's `embedding_regularizer`, on the rows in use):
    λ · (1/B) Σ_i Σ_f ||e_{x_if}||² over the id table's fields of the batch's rows (every categorical
    field, and the scenario field when the model reads it). A row looked up n times in a batch is
    penalized n times, like its data term; rows no batch looks up are untouched, so it works with any
    embedding optimizer (the sparse ones included) at O(B·F·D) per step."""

    l2: float = 0.0

    def penalty(self, model: MultiScenarioModel, batch: Batch) -> torch.Tensor | None:
        if not self.l2:
            return None
        embedding = model.embedding
        ids = batch.cat
        if embedding.scenario_feature:
            ids = torch.cat([ids, batch.scenario.unsqueeze(1)], dim=1)
        rows = embedding.table(ids + embedding.offsets)
        return self.l2 * rows.square().sum((1, 2)).mean()


@dataclass
class IdDropout(Regularizer, GeneratorState):
    """Field dropout of the id fields (the dataset's user and item columns): in training, each row's id
    becomes the out-of-vocabulary id 0 with probability `rate`, independently per field, so the model
    learns to score a row from its other fields too and the OOV row learns what an unknown id means
    (the rows of rare ids, mapped to 0 by dataset.min_freq, teach it as well)."""

    rate: float = 0.0
    fields: tuple[int, ...] = field(default=(), init=False)

    def bind(self, model: MultiScenarioModel, seed: int) -> None:
        self.fields = model.embedding.id_fields
        self.generator = torch.Generator().manual_seed(seed)

    def prepare(self, batch: Batch) -> Batch:
        if not (self.rate and self.fields):
            return batch
        cat = batch.cat.clone()
        columns = list(self.fields)
        keep = torch.rand(len(batch), len(columns), generator=self.generator) >= self.rate
        cat[:, columns] *= keep.to(cat.device, cat.dtype)
        return replace(batch, cat=cat)


class RegularizedLoss:
    """`loss_fn` on each regularizer's prepared batch, plus their penalties. Its checkpoint state is the
    loss's and the regularizers' (their random generators); a checkpoint names it as the loss it wraps."""

    def __init__(self, loss_fn: LossFn, regularizers: list[Regularizer]) -> None:
        self.loss_fn = loss_fn
        self.regularizers = regularizers
        self.__qualname__ = getattr(loss_fn, "__qualname__", None) or type(loss_fn).__qualname__

    def __call__(self, model: MultiScenarioModel, batch: Batch) -> torch.Tensor:
        for regularizer in self.regularizers:
            batch = regularizer.prepare(batch)
        loss = self.loss_fn(model, batch)
        for regularizer in self.regularizers:
            term = regularizer.penalty(model, batch)
            if term is not None:
                loss = loss + term
        return loss

    def state_dict(self) -> dict:
        return {"loss": state_of(self.loss_fn), "regularizers": [state_of(r) for r in self.regularizers]}

    def load_state_dict(self, state: dict) -> None:
        for thing, saved in zip([self.loss_fn, *self.regularizers], [state["loss"], *state["regularizers"]]):
            load_state_into(thing, saved)


def regularized(loss_fn: LossFn, regularizers: list[Regularizer], model: MultiScenarioModel, settings: Any) -> LossFn:
    """`loss_fn` with `regularizers` bound to `model` and the trainer's seed (itself when there are none)."""
    if not regularizers:
        return loss_fn
    for regularizer in regularizers:
        regularizer.bind(model, settings.seed)
    return RegularizedLoss(loss_fn, regularizers)
