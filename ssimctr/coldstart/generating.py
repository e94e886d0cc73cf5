"""What MetaEmb and CVAR share (docs/methods.md §3.8): a base model trained plainly on the warm rows, then
networks of the method's own trained over the warm entities with the model frozen (`entity_passes`), which
give a cold entity its id embedding from its profile (its own attributes) in the cold phase; each warm-up
round then trains that vector with Adam on the round's rows (`IdWarmup`), optionally mapped again by the
networks before it is scored (`refine`)."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn

from ssimctr.coldstart.base import Entity, Episodes, frozen, own_logits, require_attributes
from ssimctr.coldstart.passes import entity_passes
from ssimctr.coldstart.plain import PlainModel
from ssimctr.coldstart.warmup import IdWarmup
from ssimctr.config.schema import TrainerConfig
from ssimctr.data.batch import Batch
from ssimctr.data.datasplit import DataSplit
from ssimctr.models.base import MultiScenarioModel
from ssimctr.train.loop import FitResult, Logger, Validator, make_optimizer, training_phase


class GeneratingMethod(ABC):
    """A frozen base model plus networks that turn an entity's attributes into its id embedding. A
    subclass sets `method` (its coldstart name), `loss_names` (the logged losses, the first minimized)
    and, in its __init__, `lr`, `passes` and `tasks_per_batch`; it makes the networks (`make_networks`),
    says which warm entities train them (`pool`) on which losses (`terms`), and how a profile becomes
    a vector (`initial`); `refine` (None: none) maps a round's updated vector before it is scored."""

    method: str
    loss_names: tuple[str, ...]
    lr: float
    passes: int
    tasks_per_batch: int

    def __init__(self, entity: Entity, warmup_lr: float, warmup_steps: int) -> None:
        self.entity = entity
        self.warmup = IdWarmup(entity.field, warmup_lr, warmup_steps)
        self.networks: nn.Module | None = None
        self.tags: dict[str, str] = {}

    # -- what a subclass gives ---------------------------------------------------------------------

    @abstractmethod
    def make_networks(self, fields: list[int], dim: int) -> nn.Module:
        """The method's networks for attribute fields `fields` of a D = `dim` embedding."""

    @abstractmethod
    def terms(
        self,
        model: MultiScenarioModel,
        tasks: Episodes,
        chosen: torch.Tensor,
        a: Batch,
        a_task: torch.Tensor,
        b: Batch,
        b_task: torch.Tensor,
    ) -> torch.Tensor:
        """[len(loss_names)] losses of the warm entities `chosen` of `tasks` (support rows a, query rows b)."""

    @abstractmethod
    def initial(self, model: MultiScenarioModel, profile: Batch) -> torch.Tensor:
        """[T, D]: the id embedding of each entity of `profile` (its attribute values only)."""

    def pool(self, tasks: Episodes) -> torch.Tensor:
        """The warm entities the networks train on: all of them."""
        return torch.arange(tasks.num_tasks)

    refine = None

    # -- the ColdStartMethod protocol ------------------------------------------------------------------

    def train(
        self,
        model: MultiScenarioModel,
        train: DataSplit,
        meta_tasks: Episodes,
        validate: Validator,
        settings: TrainerConfig,
        log: Logger,
    ) -> list[FitResult]:
        """Plain training of the base model on the warm rows, then the networks' passes over `meta_tasks`."""
        require_attributes(self.entity, self.method)
        with training_phase("base" if self.passes else ""):
            fits = PlainModel(self.entity, warmup_lr=self.warmup.lr, warmup_steps=self.warmup.steps).train(
                model, train, meta_tasks, validate, settings, log
            )
        self.build(model)
        first_step = sum(len(f.epochs) for f in fits)
        return [*fits, self.fit_networks(model, meta_tasks, validate, settings, log, first_step)]

    def build(self, model: MultiScenarioModel) -> nn.Module:
        """Fresh networks for `model`'s embedding (drawn from torch's global generator), on its device."""
        require_attributes(self.entity, self.method)
        embedding = model.embedding
        networks = self.make_networks(self.entity.attributes.fields(embedding), embedding.dim)
        self.networks = networks.to(embedding.table.weight.device)
        return self.networks

    def fit_networks(
        self,
        model: MultiScenarioModel,
        tasks: Episodes,
        validate: Validator,
        settings: TrainerConfig,
        log: Logger | None = None,
        first_step: int = 0,
    ) -> FitResult:
        """`passes` seeded passes over the `pool` entities of `tasks` training the networks (trainer/optimizer at `lr`),
        the model frozen; pass i is logged at step first_step + i with `validate`'s metrics (unchanged:
        warm rows) and the losses. `settings.limit_train_batches` caps the steps per pass."""
        networks = self.built()

        def terms(chosen: torch.Tensor, a: Batch, a_task: torch.Tensor, b: Batch, b_task: torch.Tensor):
            return self.terms(model, tasks, chosen, a, a_task, b, b_task)

        optimizer = make_optimizer(
            settings, [{"params": list(networks.parameters()), "lr": self.lr, "weight_decay": 0.0}]
        )
        pool = self.pool(tasks)
        return entity_passes(
            model, networks, optimizer, tasks, pool, terms, self.loss_names, self.passes, self.tasks_per_batch,
            validate, settings, log, first_step,
        )  # fmt: skip

    def predict_cold(self, model: MultiScenarioModel, episodes: Episodes) -> list[torch.Tensor]:
        """The query rows with each entity's `initial` vector from its profile, then after each warm-up round."""
        networks = self.built()
        was_training = networks.training
        networks.eval()
        try:
            with frozen(model), torch.no_grad():
                start = self.initial(model, episodes.profile)
            return self.warmup.phases(model, episodes, start, self.refine)
        finally:
            networks.train(was_training)

    def predict_warm(self, model: MultiScenarioModel, batch: Batch) -> torch.Tensor:
        """Warm rows as they are: their own id embeddings."""
        return own_logits(model, batch)

    def built(self) -> nn.Module:
        """The networks (after `build` or `train`)."""
        if self.networks is None:
            raise RuntimeError(f"{type(self).__name__} has no networks yet: call train() (or build()) first")
        return self.networks
