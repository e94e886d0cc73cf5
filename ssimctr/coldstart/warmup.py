"""The warm-up of the methods whose cold-entity parameter is the entity's id embedding (`none`,
`dropoutnet`, `metaemb`, `cvar`; docs/methods.md §3.8): each cold entity e has its own vector φ_e,
scored in place of its id's embedding (`FeatureEmbedding.replacing`) with the model frozen.

Round r (1..R) takes `steps` steps of Adam (learning rate `lr`, a fresh Adam per round as the MetaEmb
and CVAR reference code create one per warm-up phase) on

    Σ_e mean BCE of e's round-r support rows with φ_e,

so each entity's vector moves on its own rows only (Adam is element-wise and an entity's loss depends on
its own φ_e alone). A method may then map the updated vector before scoring (CVAR's decoder: `refine`);
the next round starts from what was scored. The query rows are scored in the cold phase (the method's
initial φ⁰) and after each round; no query row is ever trained on.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ssimctr.coldstart.base import EVAL_ROWS, Episodes, frozen, own_logits
from ssimctr.data.batch import Batch
from ssimctr.errors import UserError
from ssimctr.models.base import MultiScenarioModel

Refine = Callable[[torch.Tensor, int], torch.Tensor]  # (updated φ [T, D], round r >= 1) -> the scored φ


class IdWarmup:
    """Warm-up rounds on per-entity id vectors (module docstring)."""

    def __init__(self, field: int, lr: float, steps: int) -> None:
        if lr <= 0 or steps < 0:
            raise UserError(f"coldstart.warmup_lr={lr}, coldstart.warmup_steps={steps}: use lr > 0 and steps >= 0")
        self.field, self.lr, self.steps = field, lr, steps

    def phases(
        self, model: MultiScenarioModel, episodes: Episodes, start: torch.Tensor, refine: Refine | None = None
    ) -> list[torch.Tensor]:
        """Logits of the query rows with φ⁰ = `start` [T, D], then after each warm-up round."""
        with frozen(model):
            phi = start.detach()
            out = [scored(model, self.field, episodes.query, phi[episodes.query_task])]
            for r in range(episodes.rounds):
                rows, task = episodes.round_rows(r)
                phi = self.round(model, rows, task, phi)
                if refine is not None:
                    with torch.no_grad():
                        phi = refine(phi, r + 1).detach()
                out.append(scored(model, self.field, episodes.query, phi[episodes.query_task]))
        return out

    def round(self, model: MultiScenarioModel, rows: Batch, task: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
        """φ after `steps` Adam steps on the per-entity mean BCE of `rows` (row i belongs to entity
        task[i]); expects the model frozen."""
        phi = phi.detach().clone().requires_grad_()
        optimizer = torch.optim.Adam([phi], lr=self.lr)  # the reference warm-up: Adam on the new ids' vectors
        weight = 1.0 / torch.bincount(task, minlength=len(phi)).clamp(min=1).to(phi.dtype)
        with torch.enable_grad():
            for _ in range(self.steps):
                gradient = torch.zeros_like(phi)
                for start in range(0, len(rows), EVAL_ROWS):  # Σ_e mean BCE, its gradient summed over chunks
                    chunk, owner = rows.slice(start, start + EVAL_ROWS), task[start : start + EVAL_ROWS]
                    with model.embedding.replacing(self.field, phi[owner]):
                        losses = F.binary_cross_entropy_with_logits(model(chunk).float(), chunk.label, reduction="none")
                    gradient += torch.autograd.grad((losses * weight[owner]).sum(), phi)[0]
                phi.grad = gradient
                optimizer.step()
        return phi.detach()


def entity_losses(
    model: MultiScenarioModel, field: int, batch: Batch, task: torch.Tensor, phi: torch.Tensor
) -> torch.Tensor:
    """[T] mean BCE of each entity's rows of `batch`, every row with its entity's vector φ[task]."""
    with model.embedding.replacing(field, phi[task]):
        logits = model(batch).float()
    return entity_mean(F.binary_cross_entropy_with_logits(logits, batch.label, reduction="none"), task, len(phi))


def scored(model: MultiScenarioModel, field: int, batch: Batch, vectors: torch.Tensor) -> torch.Tensor:
    """Own-tower logits [B] of `batch`, row i with id embedding vectors[i], in chunks."""
    parts = []
    for start in range(0, len(batch), EVAL_ROWS):
        with model.embedding.replacing(field, vectors[start : start + EVAL_ROWS]):
            parts.append(own_logits(model, batch.slice(start, start + EVAL_ROWS)))
    return torch.cat(parts) if parts else torch.zeros(0, device=batch.label.device)


def entity_mean(values: torch.Tensor, task: torch.Tensor, num_tasks: int) -> torch.Tensor:
    """Per task, the mean of `values` [N, ...] over its rows: [num_tasks, ...] (0 for a task without rows)."""
    sums = torch.zeros(num_tasks, *values.shape[1:], dtype=values.dtype, device=values.device)
    sums = sums.index_add(0, task, values)
    counts = torch.bincount(task, minlength=num_tasks).clamp(min=1).to(values.dtype)
    return sums / counts.view(-1, *([1] * (values.dim() - 1)))
