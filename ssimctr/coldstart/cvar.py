"""`coldstart=cvar`: CVAR, a model-agnostic conditional variational autoencoder of id embeddings (Zhao et
al., SIGIR 2022, "Improving Item Cold-start Recommendation via Model-agnostic Conditional Variational
Autoencoder"), for the user or the item side (docs/methods.md §3.8).

1. **Base model.** Plain training on the warm rows (PlainModel's training: the first FitResult).
2. **CVAR.** Three small networks of width `hidden` and a latent z of `latent_dim` dimensions, with
   e = the frozen id embedding of a warm entity and x = the frozen embeddings of its own attribute fields
   (`Entity.attributes`) read from its profile (`Episodes.profile`, flattened), as in the cold phase:
       encoder   q(z | e) = N(μ_q(e), diag σ_q(e)²)        (the posterior, from the id embedding)
       prior     p(z | x) = N(μ_p(x), diag σ_p(x)²)        (from the attributes alone)
       decoder   ê = g(z)                                  (the warmed-up id embedding)
   trained on the warm entities of the meta tasks with the base model frozen (evaluation mode), Adam
   (`cvar_lr`), `tasks_per_batch` entities per step, `cvar_epochs` seeded passes, minimizing the mean over
   the step's entities of
       L(e) = BCE(e's rows, scored with ê in place of e) + recon_weight · ‖ê − e‖² + reg_weight · W₂²(q, p),
   z = μ_q + σ_q ⊙ ε (reparameterized, one draw per entity), W₂²(q, p) = ‖μ_q − μ_p‖² + ‖σ_q − σ_p‖² (the
   squared 2-Wasserstein distance of two diagonal Gaussians), the BCE a mean over the entity's rows (its
   support and query rows). The prior learns to put z where the posterior of a warm entity with those
   attributes puts it, and the decoder to turn z into an embedding that scores well and stays close to
   the trained one.
3. **Cold phase and warm-up** (`predict_cold`, which never changes a weight). Cold phase: ê⁰ = g(μ_p(x))
   from the entity's profile (the prior's mean, so the prediction is deterministic). Round r: the entity's
   vector is updated from ê^(r−1) with Adam on the round's support rows (`IdWarmup`, the model and CVAR
   frozen), then encoded and decoded, ê^r = g(μ_q(e^r)), and ê^r is scored and starts the next round.

Readings where the paper and the authors' code differ or are silent (docs/methods.md §3.8): the authors'
code trains on rows (an entity weighs by its rows) and reads the attributes from each row, also trains
the attribute embeddings in the CVAR phase, and retrains CVAR on each warm-up round's rows; here CVAR
trains per entity from its profile, the backbone and CVAR stay as trained on warm entities, and only the
cold entity's vector adapts in a round, as for every method. It samples z from the prior at every warm-up
round; here a round encodes the updated id embedding (the posterior: "leverage ... recent emerging
interactions"). Its decoder also reads the item's interaction count, a column counted over the whole log;
a count of the rows known so far is 0 for every cold entity and large for every warm one, far outside
what a decoder trained on warm entities has seen, so the decoder here reads z alone. Its regularizer sums
over the batch while the reconstruction averages; here both average.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from ssimctr.coldstart.base import Entity, Episodes, frozen, own_logits
from ssimctr.coldstart.metaemb import TaskRows, require_attributes
from ssimctr.coldstart.plain import PlainModel
from ssimctr.coldstart.warmup import IdWarmup, entity_losses
from ssimctr.config.schema import TrainerConfig
from ssimctr.data.batch import Batch
from ssimctr.data.datasplit import DataSplit
from ssimctr.errors import UserError
from ssimctr.models.base import MultiScenarioModel
from ssimctr.models.layers.core import MLP
from ssimctr.train.loop import FitResult, Logger, Validator, make_optimizer


class Gaussian(nn.Module):
    """x -> (μ, log σ²) of a diagonal Gaussian, each through MLP([hidden]) -> latent."""

    def __init__(self, width: int, hidden: int, latent: int) -> None:
        super().__init__()
        self.mean = MLP(width, [hidden], output_dim=latent)
        self.log_var = MLP(width, [hidden], output_dim=latent)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mean(x), self.log_var(x)


class CvarNetworks(nn.Module):
    """The encoder q(z | e), the prior p(z | x) and the decoder g(z)."""

    def __init__(self, fields: list[int], dim: int, hidden: int, latent: int) -> None:
        super().__init__()
        self.register_buffer("keep", torch.tensor(fields, dtype=torch.long), persistent=False)
        self.encoder = Gaussian(dim, hidden, latent)
        self.prior = Gaussian(len(fields) * dim, hidden, latent)
        self.decoder = MLP(latent, [hidden], output_dim=dim)

    def attributes(self, fields: torch.Tensor) -> torch.Tensor:
        """The attribute fields of field embeddings [B, F, D], flattened [B, A·D]."""
        return fields.index_select(1, self.keep).flatten(1)


class Cvar:
    """A frozen base model plus CVAR's networks, which turn an entity's attributes (cold) or its updated
    id embedding (warm-up rounds) into the id embedding it is scored with (module docstring)."""

    def __init__(
        self,
        entity: Entity,
        *,
        latent_dim: int,
        hidden: int,
        cvar_lr: float,
        cvar_epochs: int,
        tasks_per_batch: int,
        recon_weight: float,
        reg_weight: float,
        warmup_lr: float,
        warmup_steps: int,
    ) -> None:
        for key, value, least in (
            ("latent_dim", latent_dim, 1),
            ("hidden", hidden, 1),
            ("cvar_epochs", cvar_epochs, 0),
            ("tasks_per_batch", tasks_per_batch, 1),
        ):
            if value < least:
                raise UserError(f"coldstart.{key}={value}: use an integer >= {least}")
        if recon_weight < 0 or reg_weight < 0:
            raise UserError(f"coldstart.recon_weight={recon_weight}, reg_weight={reg_weight}: use weights >= 0")
        self.entity = entity
        self.latent_dim, self.hidden, self.cvar_lr, self.cvar_epochs = latent_dim, hidden, cvar_lr, cvar_epochs
        self.tasks_per_batch, self.recon_weight, self.reg_weight = tasks_per_batch, recon_weight, reg_weight
        self.warmup = IdWarmup(entity.field, warmup_lr, warmup_steps)
        self.networks: CvarNetworks | None = None
        self.tags: dict[str, str] = {}

    def build(self, model: MultiScenarioModel) -> CvarNetworks:
        """Fresh networks for `model`'s embedding (drawn from torch's global generator), on its device."""
        require_attributes(self.entity, "cvar")
        embedding = model.embedding
        fields = self.entity.attributes.fields(embedding)
        self.networks = CvarNetworks(fields, embedding.dim, self.hidden, self.latent_dim).to(
            embedding.table.weight.device
        )
        return self.networks

    def train(
        self,
        model: MultiScenarioModel,
        train: DataSplit,
        meta_tasks: Episodes,
        validate: Validator,
        settings: TrainerConfig,
        log: Logger,
    ) -> list[FitResult]:
        """Plain training of the base model on the warm rows, then CVAR's training on the warm entities."""
        require_attributes(self.entity, "cvar")
        fits = PlainModel(self.entity, warmup_lr=self.warmup.lr, warmup_steps=self.warmup.steps).train(
            model, train, meta_tasks, validate, settings, log
        )
        self.build(model)
        first_step = sum(len(f.epochs) for f in fits)
        return [*fits, self.fit_networks(model, meta_tasks, validate, settings, log, first_step)]

    def fit_networks(
        self,
        model: MultiScenarioModel,
        tasks: Episodes,
        validate: Validator,
        settings: TrainerConfig,
        log: Logger | None = None,
        first_step: int = 0,
    ) -> FitResult:
        """`cvar_epochs` seeded passes over the warm entities of `tasks` (those whose id is in the
        vocabulary) training CVAR's networks, the model frozen; epoch i is logged at step first_step + i
        with `validate`'s metrics (unchanged: warm rows) and the losses."""
        networks = self._built()
        optimizer = make_optimizer(networks.parameters(), self.cvar_lr, 0.0)
        order = torch.Generator().manual_seed(settings.seed)
        support_rows = TaskRows(tasks.support_task, tasks.num_tasks)
        query_rows = TaskRows(tasks.query_task, tasks.num_tasks)
        ids = self._ids(tasks, support_rows)
        known = torch.nonzero(ids > 0).squeeze(1).cpu()
        result = FitResult()
        with frozen(model):
            for epoch in range(1, self.cvar_epochs + 1):
                networks.train()
                sums = torch.zeros(4, device=ids.device)
                steps = rows = 0
                started = time.perf_counter()
                for chosen in known[torch.randperm(len(known), generator=order)].split(self.tasks_per_batch):
                    if settings.limit_train_batches and steps >= settings.limit_train_batches:
                        break
                    chosen = chosen.to(ids.device)
                    a, a_task = support_rows.take(tasks.support, chosen)
                    b, b_task = query_rows.take(tasks.query, chosen)
                    terms = self.loss(
                        model,
                        ids[chosen],
                        tasks.profile.take(chosen),
                        Batch.concat([a, b]),
                        torch.cat([a_task, b_task]),
                    )
                    optimizer.zero_grad(set_to_none=True)
                    terms[0].backward()
                    optimizer.step()
                    sums += torch.stack(terms).detach()
                    steps, rows = steps + 1, rows + len(a) + len(b)
                loss, bce, recon, reg = (sums / steps if steps else sums.fill_(float("nan"))).tolist()
                seconds = time.perf_counter() - started
                result.train_rows += rows
                result.train_seconds += seconds
                metrics = validate(model)
                metrics.update(
                    {
                        "cvar/loss": loss,
                        "cvar/bce": bce,
                        "cvar/recon": recon,
                        "cvar/reg": reg,
                        "cvar/rows_per_s": rows / seconds if seconds else float("nan"),
                    }
                )
                result.epochs.append(metrics)
                if log:
                    log(metrics, first_step + epoch)
        networks.eval()
        result.best_epoch = result.kept_epoch = len(result.epochs)  # no early stopping: the last epoch's networks
        if result.epochs:
            result.best_value = result.epochs[-1].get(settings.monitor, float("nan"))
        return result

    def loss(
        self, model: MultiScenarioModel, ids: torch.Tensor, profile: Batch, rows: Batch, owner: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(L, BCE, reconstruction, W₂²), each a mean over the T warm entities of id `ids` [T] (in the
        vocabulary) with profiles `profile` [T] and rows `rows` (row i belongs to entity owner[i]); the
        model frozen. z is drawn with torch's global generator."""
        networks = self._built()
        embedding = model.embedding
        e = embedding.table.weight[embedding.offsets[self.entity.field] + ids].detach().float()
        with torch.no_grad():
            x = networks.attributes(embedding(profile).float())
        mean_q, log_var_q = networks.encoder(e)
        mean_p, log_var_p = networks.prior(x)
        z = mean_q + torch.exp(0.5 * log_var_q) * torch.randn_like(mean_q)
        warmed = networks.decoder(z)
        bce = entity_losses(model, self.entity.field, rows, owner, warmed).mean()
        recon = (warmed - e).pow(2).sum(1).mean()
        sigma_q, sigma_p = torch.exp(0.5 * log_var_q), torch.exp(0.5 * log_var_p)
        reg = ((mean_q - mean_p).pow(2) + (sigma_q - sigma_p).pow(2)).sum(1).mean()
        return bce + self.recon_weight * recon + self.reg_weight * reg, bce, recon, reg

    def initial(self, model: MultiScenarioModel, episodes: Episodes) -> torch.Tensor:
        """ê⁰ [T, D] = g(μ_p(x)) from each entity's profile (its attribute values only)."""
        networks = self._built()
        with torch.no_grad():
            mean, _ = networks.prior(networks.attributes(model.embedding(episodes.profile).float()))
            return networks.decoder(mean)

    def refined(self, phi: torch.Tensor) -> torch.Tensor:
        """ê = g(μ_q(φ)): an updated id embedding encoded and decoded."""
        networks = self._built()
        mean, _ = networks.encoder(phi)
        return networks.decoder(mean)

    def predict_cold(self, model: MultiScenarioModel, episodes: Episodes) -> list[torch.Tensor]:
        """The query rows with ê⁰ from each entity's profile, then after each warm-up round."""
        networks = self._built()
        was_training = networks.training
        networks.eval()
        try:
            with frozen(model):
                start = self.initial(model, episodes)
            return self.warmup.phases(model, episodes, start, refine=lambda phi, r: self.refined(phi))
        finally:
            networks.train(was_training)

    def predict_warm(self, model: MultiScenarioModel, batch: Batch) -> torch.Tensor:
        """Warm rows as they are: their own id embeddings."""
        return own_logits(model, batch)

    def _ids(self, tasks: Episodes, support_rows: TaskRows) -> torch.Tensor:
        """[T] each task's id: the entity field of its first support row (0 for a task without one)."""
        first = support_rows.starts.clamp(max=max(len(tasks.support) - 1, 0))
        ids = tasks.support.cat[first, self.entity.field] if len(tasks.support) else torch.zeros_like(first)
        return torch.where(support_rows.counts > 0, ids, 0)

    def _built(self) -> CvarNetworks:
        if self.networks is None:
            raise RuntimeError("Cvar has no networks yet: call train() (or build()) first")
        return self.networks
