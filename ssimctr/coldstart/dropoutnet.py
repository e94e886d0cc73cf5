"""`coldstart=dropoutnet`: DropoutNet (Volkovs et al., NeurIPS 2017) read for CTR (docs/methods.md §3.8).

The paper's "preference" inputs are here the id embeddings, its "content" every other field. Training
is plain BCE training of the model on the warm rows, except that in every batch a seeded random share
`tau` of the rows (exactly round(tau * B) of them, drawn apart for each dropped field) has its id set to
0, the out-of-vocabulary id, so the model learns to score rows whose id it does not know from the other
features (the paper's input dropout). Two options say what is dropped and what the model sees instead:

- `drop`: `entity` (default) drops only the studied entity's id; `both` drops the user id and the item
  id, each on its own random rows (the paper drops both preference inputs).
- `missing`: `learned` (default) lets the dropped field's OOV row train as a learned "missing" vector;
  `zeros` feeds the zero vector instead (the paper's form): the OOV rows of the dropped fields are set
  to 0 and a forward hook on the embedding masks those fields wherever their id is 0 during training,
  so the rows get no gradient and stay exactly 0.

`drop=both missing=zeros` is the paper's form. The default drops only the studied side with a learned
vector: at test only that side is unknown (the other id is known and informative, so training without
it removes information the test rows have), and a learned vector can become the zero vector when that
is best, so it holds the paper's input as a special case (docs/methods.md §3.8 for the measured
difference).

A cold entity's rows carry id 0 (the cold-start task makes their ids out of vocabulary): the cold phase
scores them through the trained missing vector (or zeros). Each warm-up round updates the entity's own
copy of that vector with Adam on the round's rows, as `coldstart=none` does (`IdWarmup`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from ssimctr.coldstart.base import Entity, Episodes
from ssimctr.coldstart.plain import PlainModel
from ssimctr.config.schema import TrainerConfig
from ssimctr.data.batch import Batch
from ssimctr.data.datasplit import DataSplit, Loader
from ssimctr.errors import UserError
from ssimctr.models.base import MultiScenarioModel
from ssimctr.train.checkpoint import load_state_into, state_of
from ssimctr.train.loop import FitResult, Logger, Validator, train_loader
from ssimctr.utils.seed import GeneratorState

DROPS = ("entity", "both")
MISSING = ("learned", "zeros")


class IdDropout(GeneratorState):
    """A training loader whose batches have the id of each of `fields` set to 0 (OOV) on a seeded random
    share `tau` of their rows (round(tau * B) rows per batch and field, drawn apart per field); every
    other value is untouched."""

    def __init__(self, loader: Loader, fields: tuple[int, ...], tau: float, seed: int) -> None:
        self.loader = loader
        self.fields = fields
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
        """`batch` with the id of round(tau * B) random rows set to 0 in each field (a copy; `batch` is kept)."""
        dropped = round(self.tau * len(batch))
        if dropped == 0:
            return batch
        cat = batch.cat.clone()
        for field in self.fields:
            rows = torch.randperm(len(batch), generator=self.generator)[:dropped].to(batch.cat.device)
            cat[rows, field] = 0
        return dataclasses.replace(batch, cat=cat)


class DropoutNet(PlainModel):
    """Plain training with ids dropped to the missing vector (the OOV row, or zeros) on a share `tau` of
    each batch's rows; cold prediction and warm-up as `coldstart=none`: φ⁰ is the trained missing
    vector (the OOV row, which is 0 for missing=zeros)."""

    def __init__(self, entity: Entity, *, tau: float, drop: str, missing: str, warmup_lr: float, warmup_steps: int):
        if not 0.0 <= tau <= 1.0:
            raise UserError(f"coldstart.tau={tau}: use a share in [0, 1]")
        if drop not in DROPS or missing not in MISSING:
            raise UserError(
                f"coldstart.drop={drop}, coldstart.missing={missing}: use drop in {DROPS} and missing in {MISSING}"
            )
        super().__init__(entity, warmup_lr=warmup_lr, warmup_steps=warmup_steps)
        self.tau, self.missing = tau, missing
        self.fields = tuple(dict.fromkeys(entity.id_fields)) if drop == "both" else (entity.field,)

    def train(
        self,
        model: MultiScenarioModel,
        train: DataSplit,
        meta_tasks: Episodes,
        validate: Validator,
        settings: TrainerConfig,
        log: Logger,
    ) -> list[FitResult]:
        """Plain training on the warm rows with ids dropped (and, for missing=zeros, fed as zeros)."""
        with self.zero_missing(model):
            return super().train(model, train, meta_tasks, validate, settings, log)

    def training_batches(self, train: DataSplit, settings: TrainerConfig) -> Loader:
        """The warm rows through `IdDropout`: a share tau of each batch's dropped ids set to 0."""
        return IdDropout(train_loader(train, settings), self.fields, self.tau, settings.seed)

    @contextmanager
    def zero_missing(self, model: MultiScenarioModel) -> Iterator[None]:
        """missing=zeros: within the block, the dropped fields' OOV rows are 0 and the embedding's output
        of those fields is masked where their id is 0, so those rows get no gradient (they stay 0)."""
        if self.missing == "learned":
            yield
            return
        embedding = model.embedding
        fields = torch.tensor(self.fields, device=embedding.offsets.device)
        with torch.no_grad():
            embedding.table.weight[embedding.offsets[fields]] = 0.0

        def masked(module, args, output: torch.Tensor) -> torch.Tensor:
            known = torch.ones(output.shape[:2], dtype=output.dtype, device=output.device)
            known[:, fields] = (args[0].cat[:, fields] != 0).to(output.dtype)
            return output * known.unsqueeze(-1)

        handle = embedding.register_forward_hook(masked)
        try:
            yield
        finally:
            handle.remove()
