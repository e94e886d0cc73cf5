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

import torch
from torch import nn

from ssimctr.coldstart.base import Entity, Episodes, at_least
from ssimctr.coldstart.generating import GeneratingMethod
from ssimctr.coldstart.passes import TaskRows
from ssimctr.coldstart.warmup import entity_losses
from ssimctr.data.batch import Batch
from ssimctr.errors import UserError
from ssimctr.models.base import MultiScenarioModel
from ssimctr.models.layers.core import MLP


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


class Cvar(GeneratingMethod):
    """A frozen base model plus CVAR's networks, which turn an entity's attributes (cold) or its updated
    id embedding (warm-up rounds) into the id embedding it is scored with (module docstring)."""

    method = "cvar"
    loss_names = ("cvar/loss", "cvar/bce", "cvar/recon", "cvar/reg")

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
        at_least("latent_dim", latent_dim, 1)
        at_least("hidden", hidden, 1)
        at_least("cvar_epochs", cvar_epochs, 0)
        at_least("tasks_per_batch", tasks_per_batch, 1)
        if recon_weight < 0 or reg_weight < 0:
            raise UserError(f"coldstart.recon_weight={recon_weight}, reg_weight={reg_weight}: use weights >= 0")
        super().__init__(entity, warmup_lr, warmup_steps)
        self.latent_dim, self.hidden = latent_dim, hidden
        self.lr, self.passes, self.tasks_per_batch = cvar_lr, cvar_epochs, tasks_per_batch
        self.recon_weight, self.reg_weight = recon_weight, reg_weight

    def make_networks(self, fields: list[int], dim: int) -> CvarNetworks:
        return CvarNetworks(fields, dim, self.hidden, self.latent_dim)

    def pool(self, tasks: Episodes) -> torch.Tensor:
        """The warm entities whose id is in the vocabulary (an OOV id has no embedding of its own to encode)."""
        return torch.nonzero(self._ids(tasks) > 0).squeeze(1).cpu()

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
        """[L, BCE, reconstruction, W₂²] of the entities `chosen`, their support and query rows together."""
        ids = self._ids(tasks)[chosen]
        rows, owner = Batch.concat([a, b]), torch.cat([a_task, b_task])
        return torch.stack(self.loss(model, ids, tasks.profile.take(chosen), rows, owner))

    def loss(
        self, model: MultiScenarioModel, ids: torch.Tensor, profile: Batch, rows: Batch, owner: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(L, BCE, reconstruction, W₂²), each a mean over the T warm entities of id `ids` [T] (in the
        vocabulary) with profiles `profile` [T] and rows `rows` (row i belongs to entity owner[i]); the
        model frozen. z is drawn with torch's global generator."""
        networks = self.built()
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

    def initial(self, model: MultiScenarioModel, profile: Batch) -> torch.Tensor:
        """ê⁰ [T, D] = g(μ_p(x)) from each entity's profile (its attribute values only)."""
        networks = self.built()
        with torch.no_grad():
            mean, _ = networks.prior(networks.attributes(model.embedding(profile).float()))
            return networks.decoder(mean)

    def refine(self, phi: torch.Tensor, round_: int) -> torch.Tensor:
        """ê = g(μ_q(φ)): a round's updated id embedding encoded and decoded (the same in every round)."""
        networks = self.built()
        mean, _ = networks.encoder(phi)
        return networks.decoder(mean)

    def _ids(self, tasks: Episodes) -> torch.Tensor:
        """[T] each task's id: the entity field of its first support row (0 for a task without one)."""
        rows = TaskRows(tasks.support_task, tasks.num_tasks)
        first = rows.starts.clamp(max=max(len(tasks.support) - 1, 0))
        ids = tasks.support.cat[first, self.entity.field] if len(tasks.support) else torch.zeros_like(first)
        return torch.where(rows.counts > 0, ids, 0)
