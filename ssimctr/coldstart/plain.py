"""`coldstart=none`: the plain model. A cold id is out of vocabulary, so it gets the OOV row of its
field's embedding in the cold phase; each warm-up round then updates the entity's own copy of that row
with Adam on the round's rows (`IdWarmup`), the model frozen: the baseline of docs/methods.md §2.2, §3.8
(the reference code's "base" warm-up, which trains only the new ids' embeddings)."""

from __future__ import annotations

import torch

from ssimctr.coldstart.base import Entity, Episodes, own_logits
from ssimctr.coldstart.warmup import IdWarmup
from ssimctr.config.schema import TrainerConfig
from ssimctr.data.batch import Batch
from ssimctr.data.datasplit import DataSplit, Loader
from ssimctr.models.base import MultiScenarioModel
from ssimctr.train.loop import FitResult, Logger, Validator, fit, make_optimizer, train_loader
from ssimctr.train.sharing import FixedSharing


class PlainModel:
    """The model as it is: trained on warm rows with each row's own tower; cold entities start from
    the OOV row and warm up their own copy of it."""

    def __init__(self, entity: Entity, *, warmup_lr: float, warmup_steps: int) -> None:
        self.entity = entity
        self.warmup = IdWarmup(entity.field, warmup_lr, warmup_steps)
        self.tags: dict[str, str] = {}

    def train(
        self,
        model: MultiScenarioModel,
        train: DataSplit,
        meta_tasks: Episodes,
        validate: Validator,
        settings: TrainerConfig,
        log: Logger,
    ) -> list[FitResult]:
        """Plain training on the warm rows (the meta tasks are not used)."""
        optimizer = make_optimizer(settings, model.parameters())
        loader = self.training_batches(train, settings)
        return [fit(model, FixedSharing(0.0), optimizer, loader, validate, settings, log=log)]

    def training_batches(self, train: DataSplit, settings: TrainerConfig) -> Loader:
        """The batches of plain training: the warm rows as they are."""
        return train_loader(train, settings)

    def initial(self, model: MultiScenarioModel, episodes: Episodes) -> torch.Tensor:
        """φ⁰ [T, D] of every task: the OOV row of the entity's field (what a cold id looks up)."""
        embedding = model.embedding
        oov = embedding.table.weight[embedding.offsets[self.entity.field]].detach()
        return oov.expand(episodes.num_tasks, -1).clone()

    def predict_cold(self, model: MultiScenarioModel, episodes: Episodes) -> list[torch.Tensor]:
        """The query rows with φ⁰ (the plain forward: their cold ids hit the OOV row), then after each
        warm-up round of the entities' own vectors."""
        return self.warmup.phases(model, episodes, self.initial(model, episodes))

    def predict_warm(self, model: MultiScenarioModel, batch: Batch) -> torch.Tensor:
        """Warm rows as they are."""
        return own_logits(model, batch)
