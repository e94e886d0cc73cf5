"""`coldstart=metaemb`: Meta-Embedding (Pan et al., SIGIR 2019), docs/methods.md §3.8.

1. **Base model.** The model is trained plainly on the warm rows (PlainModel's training: the first
   FitResult). A cold id is out of vocabulary, so without MetaEmb it would get its field's OOV row.
2. **Generator.** g_w reads the frozen, detached field embeddings of a row, every field but the
   entity's id (flattened, [B, (F − 1)·D]), through an MLP with one hidden layer of
   `generator_hidden` units and an output of size D squashed by tanh and scaled by 1/5 (the authors'
   code divides the tanh output by 5). An entity's generated embedding is the mean of g over its
   rows: φ⁰_e = mean_{rows r of e} g_w(sg(E_{−id}(r))). The model itself sees the id embedding only
   through `FeatureEmbedding.replacing(entity.field, ·)`.
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
4. **Cold phase** (`predict_cold`, which never changes a weight). Zero-shot (`episodes.shots == 0`):
   φ⁰_e is the mean of g over the entity's query rows (their features, never their labels), and
   each query row is scored with its entity's φ⁰_e. Few-shot: φ⁰_e comes from the support rows,
   then `warmup_steps` gradient steps φ ← φ − cold_lr · ∇_φ (mean support BCE of e) warm it up (the
   paper's warm-up phase), and the query rows are scored with the warmed-up φ_e.
   `predict_warm` scores warm rows with the plain model (their own id embeddings).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ssimctr.coldstart.base import Entity, Episodes
from ssimctr.coldstart.plain import EVAL_ROWS, PlainModel, own_logits
from ssimctr.config.schema import TrainerConfig
from ssimctr.data.batch import Batch
from ssimctr.data.datasplit import DataSplit
from ssimctr.errors import UserError
from ssimctr.models.base import MultiScenarioModel
from ssimctr.models.layers.core import MLP
from ssimctr.train.loop import EpochClock, FitResult, Logger, Validator, make_optimizer, print_epoch, training_phase

GENERATOR_SCALE = 0.2  # the generated embedding is tanh(·) / 5, as in the authors' code


class EmbeddingGenerator(nn.Module):
    """g_w: field embeddings [B, F, D] -> a generated id embedding [B, D] read from every field but
    `field` (flattened), through MLP([hidden]) -> D, tanh, times GENERATOR_SCALE."""

    def __init__(self, num_fields: int, dim: int, field: int, hidden: int) -> None:
        super().__init__()
        self.register_buffer(
            "keep", torch.tensor([f for f in range(num_fields) if f != field], dtype=torch.long), persistent=False
        )
        self.mlp = MLP((num_fields - 1) * dim, [hidden], output_dim=dim)

    def forward(self, fields: torch.Tensor) -> torch.Tensor:
        return GENERATOR_SCALE * torch.tanh(self.mlp(fields.index_select(1, self.keep).flatten(1)))


@dataclass
class MetaTerms:
    """One meta step's quantities: the generator loss α·L_a + (1 − α)·L_b, its two terms (means
    over the step's entities), the generated φ⁰ [T, D] and the adapted φ' [T, D]."""

    loss: torch.Tensor
    cold: torch.Tensor
    warm: torch.Tensor
    phi0: torch.Tensor
    phi1: torch.Tensor


class MetaEmb:
    """A frozen base model plus a generator of cold ids' embeddings from their rows' other features."""

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
        warmup_steps: int,
    ) -> None:
        if not 0.0 <= alpha <= 1.0:
            raise UserError(f"coldstart.alpha={alpha}: use a weight in [0, 1]")
        if generator_hidden < 1 or tasks_per_batch < 1 or meta_epochs < 0 or warmup_steps < 0:
            raise UserError(
                f"coldstart: generator_hidden={generator_hidden} and tasks_per_batch={tasks_per_batch} must be "
                f">= 1, meta_epochs={meta_epochs} and warmup_steps={warmup_steps} >= 0"
            )
        self.entity = entity
        self.alpha, self.cold_lr, self.generator_lr = alpha, cold_lr, generator_lr
        self.generator_hidden, self.tasks_per_batch = generator_hidden, tasks_per_batch
        self.meta_epochs, self.warmup_steps = meta_epochs, warmup_steps
        self.generator: EmbeddingGenerator | None = None

    def build_generator(self, model: MultiScenarioModel) -> EmbeddingGenerator:
        """A fresh generator for `model`'s embedding (drawn from torch's global generator), on its device."""
        embedding = model.embedding
        self.generator = EmbeddingGenerator(
            embedding.num_fields, embedding.dim, self.entity.field, self.generator_hidden
        ).to(embedding.table.weight.device)
        return self.generator

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
        if meta_tasks.num_tasks and not meta_tasks.shots:
            raise UserError("coldstart=metaemb needs support rows in its meta tasks: set task.meta_shots >= 1")
        with training_phase("base" if self.meta_epochs else ""):
            fits = PlainModel(self.entity).train(model, train, meta_tasks, validate, settings, log)
        self.build_generator(model)
        first_step = sum(len(f.epochs) for f in fits)
        return [*fits, self.meta_train(model, meta_tasks, validate, settings, log, first_step)]

    def meta_train(
        self,
        model: MultiScenarioModel,
        tasks: Episodes,
        validate: Validator,
        settings: TrainerConfig,
        log: Logger | None = None,
        first_step: int = 0,
    ) -> FitResult:
        """`meta_epochs` passes of generator training over `tasks` with the model frozen. Meta epoch
        i is logged at step first_step + i. `settings.limit_train_batches` caps the steps per epoch."""
        generator = self._trained_generator()
        optimizer = make_optimizer(generator.parameters(), self.generator_lr, 0.0)
        order = torch.Generator().manual_seed(settings.seed)
        support_rows = _TaskRows(tasks.support_task, tasks.num_tasks)
        query_rows = _TaskRows(tasks.query_task, tasks.num_tasks)
        result = FitResult(phase="meta")
        clock = EpochClock(self.meta_epochs)
        with _frozen(model):
            for epoch in range(1, self.meta_epochs + 1):
                generator.train()
                sums = torch.zeros(3, device=tasks.query.label.device)
                steps = rows = 0
                started = time.perf_counter()
                for chosen in torch.randperm(tasks.num_tasks, generator=order).split(self.tasks_per_batch):
                    if settings.limit_train_batches and steps >= settings.limit_train_batches:
                        break
                    chosen = chosen.to(sums.device)
                    a, a_task = support_rows.take(tasks.support, chosen)
                    b, b_task = query_rows.take(tasks.query, chosen)
                    terms = self.meta_loss(model, a, a_task, b, b_task, len(chosen))
                    optimizer.zero_grad(set_to_none=True)
                    terms.loss.backward()
                    optimizer.step()
                    sums += torch.stack([terms.loss, terms.cold, terms.warm]).detach()
                    steps, rows = steps + 1, rows + len(a) + len(b)
                loss, cold, warm = (sums / steps if steps else sums.fill_(float("nan"))).tolist()  # syncs the device
                seconds = time.perf_counter() - started
                result.train_rows += rows
                result.train_seconds += seconds
                metrics = validate(model)
                metrics.update(
                    {
                        "meta/loss": loss,
                        "meta/cold_loss": cold,
                        "meta/warm_loss": warm,
                        "meta/rows_per_s": rows / seconds if seconds else float("nan"),
                    }
                )
                result.epochs.append(metrics)
                if log:
                    log(metrics, first_step + epoch)
                clock.ended(time.perf_counter() - started)
                print_epoch(result, epoch, self.meta_epochs, settings.monitor, clock.left(epoch), kind="meta")
        generator.eval()
        # no early stopping: the generator of the last meta epoch is kept
        result.best_epoch = result.kept_epoch = len(result.epochs)
        if result.epochs:
            result.best_value = result.epochs[-1].get(settings.monitor, float("nan"))
        return result

    def meta_loss(
        self,
        model: MultiScenarioModel,
        a: Batch,
        a_task: torch.Tensor,
        b: Batch,
        b_task: torch.Tensor,
        num_tasks: int,
    ) -> MetaTerms:
        """The generator loss of `num_tasks` entities at once: batch a (rows `a`, entity index
        `a_task` in 0..num_tasks-1) gives φ⁰ and L_a, one step of size cold_lr gives φ', batch b
        gives L_b. Expects the model frozen (see `_frozen`)."""
        phi0 = self.generated(model, a, a_task, num_tasks)
        if not phi0.requires_grad:  # a generator without gradients (e.g. frozen): the step still needs ∇φ
            phi0 = phi0.detach().requires_grad_()
        cold = self._entity_losses(model, a, a_task, phi0, num_tasks)
        (gradient,) = torch.autograd.grad(cold.sum(), phi0, create_graph=True)
        phi1 = phi0 - self.cold_lr * gradient
        warm = self._entity_losses(model, b, b_task, phi1, num_tasks)
        loss = self.alpha * cold.mean() + (1.0 - self.alpha) * warm.mean()
        return MetaTerms(loss, cold.mean(), warm.mean(), phi0, phi1)

    def generated(self, model: MultiScenarioModel, batch: Batch, task: torch.Tensor, num_tasks: int) -> torch.Tensor:
        """φ⁰ [num_tasks, D]: per entity, the mean of g over its rows in `batch` (inputs only, no
        labels); the model's field embeddings are read without gradients."""
        generator = self._trained_generator()
        parts = []
        for start in range(0, len(batch), EVAL_ROWS):
            with torch.no_grad():
                fields = model.embedding(batch.slice(start, start + EVAL_ROWS)).float()
            parts.append(generator(fields))
        if not parts:
            return torch.zeros(num_tasks, model.embedding.dim, device=batch.label.device)
        return _entity_mean(torch.cat(parts), task, num_tasks)

    def predict_cold(self, model: MultiScenarioModel, episodes: Episodes) -> torch.Tensor:
        """Zero-shot: each query row with the embedding generated from its entity's query rows;
        few-shot: generated from the support rows, warmed up on them, then the query rows."""
        generator = self._trained_generator()
        was_training = generator.training
        generator.eval()
        try:
            with _frozen(model):
                if episodes.shots == 0:
                    with torch.no_grad():
                        phi = self.generated(model, episodes.query, episodes.query_task, episodes.num_tasks)
                else:
                    with torch.no_grad():
                        phi = self.generated(model, episodes.support, episodes.support_task, episodes.num_tasks)
                    phi = self.warmed_up(model, episodes.support, episodes.support_task, phi)
                return self._scored(model, episodes.query, phi[episodes.query_task])
        finally:
            generator.train(was_training)

    def predict_warm(self, model: MultiScenarioModel, batch: Batch) -> torch.Tensor:
        """Warm rows as they are: their own id embeddings."""
        return own_logits(model, batch)

    def warmed_up(
        self, model: MultiScenarioModel, support: Batch, task: torch.Tensor, phi: torch.Tensor
    ) -> torch.Tensor:
        """`warmup_steps` steps φ ← φ − cold_lr · ∇_φ (per-entity mean BCE on its support rows), the
        rows scored in chunks (each row's loss weighs 1 / its entity's support rows). Expects the
        model frozen; returns a tensor without gradients."""
        weight = 1.0 / torch.bincount(task, minlength=phi.shape[0]).clamp(min=1).to(phi.dtype)
        phi = phi.detach()
        with torch.enable_grad():
            for _ in range(self.warmup_steps):
                phi = phi.requires_grad_()
                gradient = torch.zeros_like(phi)
                for start in range(0, len(support), EVAL_ROWS):
                    rows = support.slice(start, start + EVAL_ROWS)
                    chunk = task[start : start + EVAL_ROWS]
                    with model.embedding.replacing(self.entity.field, phi[chunk]):
                        losses = F.binary_cross_entropy_with_logits(model(rows).float(), rows.label, reduction="none")
                    gradient += torch.autograd.grad((losses * weight[chunk]).sum(), phi)[0]
                phi = (phi - self.cold_lr * gradient).detach()
        return phi

    def _entity_losses(
        self, model: MultiScenarioModel, batch: Batch, task: torch.Tensor, phi: torch.Tensor, num_tasks: int
    ) -> torch.Tensor:
        """[num_tasks] mean BCE of each entity's rows of `batch`, every row with its entity's φ."""
        with model.embedding.replacing(self.entity.field, phi[task]):
            logits = model(batch).float()
        return _entity_mean(F.binary_cross_entropy_with_logits(logits, batch.label, reduction="none"), task, num_tasks)

    def _scored(self, model: MultiScenarioModel, batch: Batch, vectors: torch.Tensor) -> torch.Tensor:
        """Own-tower logits [B] of `batch`, row i with id embedding vectors[i], in chunks."""
        parts = []
        for start in range(0, len(batch), EVAL_ROWS):
            with model.embedding.replacing(self.entity.field, vectors[start : start + EVAL_ROWS]):
                parts.append(own_logits(model, batch.slice(start, start + EVAL_ROWS)))
        return torch.cat(parts) if parts else torch.zeros(0, device=batch.label.device)

    def _trained_generator(self) -> EmbeddingGenerator:
        if self.generator is None:
            raise RuntimeError("MetaEmb has no generator yet: call train() (or build_generator()) first")
        return self.generator


class _TaskRows:
    """Where each task's rows lie in a batch whose rows are contiguous per task, in task order."""

    def __init__(self, task: torch.Tensor, num_tasks: int) -> None:
        self.counts = torch.bincount(task, minlength=num_tasks)
        self.starts = self.counts.cumsum(0) - self.counts

    def take(self, batch: Batch, chosen: torch.Tensor) -> tuple[Batch, torch.Tensor]:
        """The rows of tasks `chosen` (in that order) and each row's position in `chosen`."""
        counts = self.counts[chosen]
        local = torch.repeat_interleave(torch.arange(len(chosen), device=chosen.device), counts)
        first = torch.repeat_interleave(self.starts[chosen], counts)
        within = torch.arange(len(local), device=chosen.device) - torch.repeat_interleave(
            counts.cumsum(0) - counts, counts
        )
        return batch.take(first + within), local


def _entity_mean(values: torch.Tensor, task: torch.Tensor, num_tasks: int) -> torch.Tensor:
    """Per task, the mean of `values` [N, ...] over its rows: [num_tasks, ...] (0 for a task without rows)."""
    sums = torch.zeros(num_tasks, *values.shape[1:], dtype=values.dtype, device=values.device)
    sums = sums.index_add(0, task, values)
    counts = torch.bincount(task, minlength=num_tasks).clamp(min=1).to(values.dtype)
    return sums / counts.view(-1, *([1] * (values.dim() - 1)))


@contextmanager
def _frozen(model: MultiScenarioModel) -> Iterator[None]:
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
