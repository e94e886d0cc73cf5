"""`coldstart=metaemb`: Meta-Embedding (Pan et al., SIGIR 2019), docs/methods.md §3.8.

1. **Base model.** The model is trained plainly on the warm rows (PlainModel's training: the first
   FitResult). A cold id is out of vocabulary, so without MetaEmb it would get its field's OOV row.
2. **Generator.** g_w reads the frozen, detached embeddings of the entity's own attribute fields only
   (`Entity.attributes`: the dataset's declared user or item features; never the id, never the other
   side's fields, never a row's context) from the entity's profile (`Episodes.profile`: one row per
   entity holding nothing but those values), flattened [T, A·D], and maps them to an id embedding:
   `tanh(W x) / 5` with one bias-free dense layer W (the authors' code), or with
   `generator_hidden` > 0 an MLP with one hidden layer of that width before the output layer.
   φ⁰_e = g_w(sg(E_attr(e))). The model sees the id embedding through
   `FeatureEmbedding.replacing(entity.field, ·)`.
3. **Meta phase.** The base model is frozen (evaluation mode, no parameter is updated); only w is
   trained, with Adam (`generator_lr`), `tasks_per_batch` warm entities (the `meta_tasks`) per step,
   `meta_epochs` passes over them in a seeded order. For each entity e: batch a = its support rows,
   batch b = its query rows,
       L_a(e) = mean BCE on a with id embedding φ⁰_e,
       φ'_e   = φ⁰_e − cold_lr · ∇_{φ⁰_e} L_a(e)       (the graph is kept: w learns through the step),
       L_b(e) = mean BCE on b with id embedding φ'_e,
   and the generator loss is α·L_a + (1 − α)·L_b with L_a, L_b the means over the step's entities
   (each entity weighs the same, as the paper's per-ad batches do). All entities of a step run in one
   forward: each row gets its entity's vector by task index, and the per-entity gradients come from
   one gradient of the sum of the per-entity losses (an entity's loss depends only on its own φ).
   The meta phase is recorded as one more FitResult: rows seen, seconds, and per meta epoch the
   metrics of `validate` (unchanged by the meta phase: `validate` scores warm rows, which the
   generator does not touch) with the generator losses `meta/{loss,cold_loss,warm_loss}`.
4. **Cold phase and warm-up** (`predict_cold`, which never changes a weight). The cold phase scores
   each query row with its entity's φ⁰_e = g_w(profile); each warm-up round then updates the entity's
   vector with Adam (`warmup_lr`, `warmup_steps` steps) on the round's support rows, the model frozen
   (`IdWarmup`, the authors' warm-up: the new ads' embeddings trained by Adam on their new rows).
   `predict_warm` scores warm rows with the plain model (their own id embeddings).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ssimctr.coldstart.base import Entity, Episodes, at_least, require_attributes
from ssimctr.coldstart.generating import GeneratingMethod
from ssimctr.coldstart.warmup import entity_losses
from ssimctr.config.schema import TrainerConfig
from ssimctr.data.batch import Batch
from ssimctr.data.datasplit import DataSplit
from ssimctr.errors import UserError
from ssimctr.models.base import MultiScenarioModel
from ssimctr.models.layers.core import MLP
from ssimctr.train.loop import FitResult, Logger, Validator

GENERATOR_SCALE = 0.2  # the generated embedding is tanh(·) / 5, as in the authors' code


class EmbeddingGenerator(nn.Module):
    """g_w: field embeddings [B, F, D] -> a generated id embedding [B, D] read from the `fields`
    positions only (flattened): one bias-free dense layer (hidden=0) or MLP([hidden]) -> D, then tanh,
    times GENERATOR_SCALE."""

    def __init__(self, fields: list[int], dim: int, hidden: int) -> None:
        super().__init__()
        self.register_buffer("keep", torch.tensor(fields, dtype=torch.long), persistent=False)
        width = len(fields) * dim
        self.net = nn.Linear(width, dim, bias=False) if hidden == 0 else MLP(width, [hidden], output_dim=dim)

    def forward(self, fields: torch.Tensor) -> torch.Tensor:
        return GENERATOR_SCALE * torch.tanh(self.net(fields.index_select(1, self.keep).flatten(1)))


@dataclass
class MetaTerms:
    """One meta step's quantities: the generator loss α·L_a + (1 − α)·L_b, its two terms (means
    over the step's entities), the generated φ⁰ [T, D] and the adapted φ' [T, D]."""

    loss: torch.Tensor
    cold: torch.Tensor
    warm: torch.Tensor
    phi0: torch.Tensor
    phi1: torch.Tensor


class MetaEmb(GeneratingMethod):
    """A frozen base model plus a generator of cold ids' embeddings from the entity's own attributes."""

    method = "metaemb"
    loss_names = ("meta/loss", "meta/cold_loss", "meta/warm_loss")

    def __init__(
        self,
        entity: Entity,
        *,
        alpha: float,
        cold_lr: float,
        generator_lr: float,
        generator_hidden: int,
        tasks_per_batch: int,
        meta_epochs: int,
        warmup_lr: float,
        warmup_steps: int,
    ) -> None:
        if not 0.0 <= alpha <= 1.0:
            raise UserError(f"coldstart.alpha={alpha}: use a weight in [0, 1]")
        at_least("generator_hidden", generator_hidden, 0)  # 0: one bias-free layer
        at_least("tasks_per_batch", tasks_per_batch, 1)
        at_least("meta_epochs", meta_epochs, 0)
        super().__init__(entity, warmup_lr, warmup_steps)
        self.alpha, self.cold_lr, self.generator_hidden = alpha, cold_lr, generator_hidden
        self.lr, self.passes, self.tasks_per_batch = generator_lr, meta_epochs, tasks_per_batch

    def make_networks(self, fields: list[int], dim: int) -> EmbeddingGenerator:
        return EmbeddingGenerator(fields, dim, self.generator_hidden)

    def train(
        self,
        model: MultiScenarioModel,
        train: DataSplit,
        meta_tasks: Episodes,
        validate: Validator,
        settings: TrainerConfig,
        log: Logger,
    ) -> list[FitResult]:
        """Plain training of the base model on the warm rows, then the meta phase on `meta_tasks`."""
        require_attributes(self.entity, self.method)
        if meta_tasks.num_tasks and not meta_tasks.shots:
            raise UserError("coldstart=metaemb needs support rows in its meta tasks: set task.meta_shots >= 1")
        return super().train(model, train, meta_tasks, validate, settings, log)

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
        """[α·L_a + (1 − α)·L_b, L_a, L_b] of the entities `chosen` (`meta_loss`)."""
        step = self.meta_loss(model, tasks.profile.take(chosen), a, a_task, b, b_task)
        return torch.stack([step.loss, step.cold, step.warm])

    def meta_loss(
        self,
        model: MultiScenarioModel,
        profile: Batch,
        a: Batch,
        a_task: torch.Tensor,
        b: Batch,
        b_task: torch.Tensor,
    ) -> MetaTerms:
        """The generator loss of the len(profile) entities of `profile`: φ⁰ from their profiles, L_a on
        batch a (rows `a`, entity index `a_task` into `profile`), one step of size cold_lr gives φ', L_b
        on batch b. Expects the model frozen (see `frozen`)."""
        phi0 = self.initial(model, profile)
        if not phi0.requires_grad:  # a generator without gradients (e.g. frozen): the step still needs ∇φ
            phi0 = phi0.detach().requires_grad_()
        cold = entity_losses(model, self.entity.field, a, a_task, phi0)
        (gradient,) = torch.autograd.grad(cold.sum(), phi0, create_graph=True)
        phi1 = phi0 - self.cold_lr * gradient
        warm = entity_losses(model, self.entity.field, b, b_task, phi1)
        loss = self.alpha * cold.mean() + (1.0 - self.alpha) * warm.mean()
        return MetaTerms(loss, cold.mean(), warm.mean(), phi0, phi1)

    def initial(self, model: MultiScenarioModel, profile: Batch) -> torch.Tensor:
        """φ⁰ [T, D]: the generator of each entity's profile row (its attribute values only); the
        model's field embeddings are read without gradients."""
        with torch.no_grad():
            fields = model.embedding(profile).float()
        return self.built()(fields)
