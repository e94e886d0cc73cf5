"""`coldstart=dropoutnet`: DropoutNet (Volkovs et al., NeurIPS 2017) read for CTR (docs/methods.md §3.8).

The paper's "preference" input is here the entity's id embedding, its "content" every other field.
A cold id is out of vocabulary: id 0 of its field, whose embedding row (the OOV row) plays the
learned "missing" vector. Training is plain BCE training of the model on the warm rows, except that
in every batch a seeded random share `tau` of the rows (exactly round(tau * B) of them) has its
entity id (`batch.cat[:, entity.field]`) set to 0: those rows reach the model through the missing
vector, so the OOV row is trained as "an entity we know nothing about" and the rest of the model
learns to score such rows from the other features (the paper's input dropout, with the learned
missing vector instead of zeros). Nothing else of a batch changes.

At test a cold entity's rows already carry id 0 (the cold-start task makes their ids out of
vocabulary), so they are scored as they are and get the trained missing vector. DropoutNet does not
adapt: zero-shot and few-shot predict the same way and the support rows are not used.
`predict_warm` scores warm rows as they are.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import torch

from ssimctr.coldstart.base import Entity
from ssimctr.coldstart.plain import PlainModel
from ssimctr.config.schema import TrainerConfig
from ssimctr.data.batch import Batch
from ssimctr.data.datasplit import DataSplit, Loader
from ssimctr.errors import UserError
from ssimctr.train.checkpoint import load_state_into, state_of
from ssimctr.train.loop import train_loader
from ssimctr.utils.seed import GeneratorState


class IdDropout(GeneratorState):
    """A training loader whose batches have the id of `field` set to 0 (OOV) on a seeded random
    share `tau` of their rows (round(tau * B) rows per batch); every other value is untouched."""

    def __init__(self, loader: Loader, field: int, tau: float, seed: int) -> None:
        self.loader = loader
        self.field = field
        self.tau = tau
        self.generator = torch.Generator().manual_seed(seed)

    @property
    def num_rows(self) -> int:
        return self.loader.num_rows

    @property
    def device(self) -> torch.device:
        return self.loader.device

    def __len__(self) -> int:
        return len(self.loader)

    def state_dict(self) -> dict:
        """The dropout generator's state and the wrapped loader's (a checkpoint keeps them)."""
        return {**super().state_dict(), "loader": state_of(self.loader)}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        load_state_into(self.loader, state["loader"])

    def __iter__(self) -> Iterator[Batch]:
        for batch in self.loader:
            yield self.drop(batch)

    def drop(self, batch: Batch) -> Batch:
        """`batch` with the id of round(tau * B) random rows set to 0 (a copy; `batch` is kept)."""
        dropped = round(self.tau * len(batch))
        if dropped == 0:
            return batch
        rows = torch.randperm(len(batch), generator=self.generator)[:dropped].to(batch.cat.device)
        cat = batch.cat.clone()
        cat[rows, self.field] = 0
        return dataclasses.replace(batch, cat=cat)


class DropoutNet(PlainModel):
    """Plain training with the entity's id dropped to the missing (OOV) vector on a share `tau` of
    each batch's rows. Prediction is PlainModel's: cold rows (id 0) are scored as they are, through the
    trained missing vector; the support rows of few-shot episodes are not used (no adaptation)."""

    def __init__(self, entity: Entity, *, tau: float) -> None:
        if not 0.0 <= tau <= 1.0:
            raise UserError(f"coldstart.tau={tau}: use a share in [0, 1]")
        super().__init__(entity)
        self.tau = tau

    def training_batches(self, train: DataSplit, settings: TrainerConfig) -> Loader:
        """The warm rows through `IdDropout`: a share tau of each batch's entity ids set to 0."""
        return IdDropout(train_loader(train, settings), self.entity.field, self.tau, settings.seed)
