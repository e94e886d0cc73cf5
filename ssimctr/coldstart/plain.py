"""`coldstart=none`: the plain model. A cold id is out of vocabulary, so it gets the OOV row of its
field's embedding; no adaptation, zero- or few-shot (the baseline of docs/methods.md §2.2)."""

from __future__ import annotations

import torch

from ssimctr.coldstart.base import Entity, Episodes
from ssimctr.config.schema import TrainerConfig
from ssimctr.data.batch import Batch
from ssimctr.data.datasplit import DataSplit, Loader
from ssimctr.models.base import MultiScenarioModel
from ssimctr.train.loop import FitResult, Logger, Validator, fit, make_optimizer, train_loader
from ssimctr.train.sharing import FixedSharing

EVAL_ROWS = 65536  # rows scored at once when predicting


class PlainModel:
    """The model as it is: trained on warm rows with each row's own tower."""

    def __init__(self, entity: Entity) -> None:
        self.entity = entity

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

    def predict_cold(self, model: MultiScenarioModel, episodes: Episodes) -> torch.Tensor:
        """The query rows as they are: their cold ids hit the OOV embedding."""
        return own_logits(model, episodes.query)

    def predict_warm(self, model: MultiScenarioModel, batch: Batch) -> torch.Tensor:
        """Warm rows as they are."""
        return own_logits(model, batch)


@torch.inference_mode()
def own_logits(model: MultiScenarioModel, batch: Batch) -> torch.Tensor:
    """Own-tower logits of every row of `batch` in evaluation mode, scored in chunks."""
    model.eval()
    parts = [model(batch.slice(start, start + EVAL_ROWS)).float() for start in range(0, len(batch), EVAL_ROWS)]
    return torch.cat(parts) if parts else torch.zeros(0, device=batch.label.device)
