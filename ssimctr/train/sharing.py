"""The sharing-policy loss, written once for every model.

A row i with gate g_i in [0, 1] trains its own scenario's tower with weight w_i = 1 - g_i (SSIM's
search passes the gradient-free 1(g_i = 0) as `own_weight`) and every tower k with weight g_i, always
with its own label; ℓ_ik = BCE(y_i, sigmoid(z_k(x_i))). `reduction` (regime.loss_reduction,
docs/methods.md §1.4) normalises the batch:

row       the mean over rows (the official PyTorch trainers):
              L = (1/B) Σ_i [ w_i ℓ_i,d_i + g_i (1/K) Σ_k ℓ_ik ]
scenario  the sum over scenarios of each tower's mean loss (the official STAR/HMoE trainers):
              L = Σ_k (Σ_i a_ik ℓ_ik) / n_k,   a_ik = w_i 1[d_i = k] + g_i,   n_k = Σ_i a_ik
          n_k counts tower k's rows: its scenario's unshared rows plus every shared row (for
          fractional gates the weights' sum); it is a constant (no gradient), and a tower without
          rows in the batch adds 0. A shared row is not averaged over the K towers here.
regime=mt: g = 0 (each row trains its own scenario's tower); regime=mt_s: g = 1 (every tower);
SSIM: g from the selector. With one tower (broadcast) both terms coincide.

A loss with g = 0 reads each row's own tower only, so `FixedSharing(0)` (regimes mt, single, st,
finetune) scores the rows with `model(batch)`, the routed path that computes no other tower
(docs/methods.md §3.12); g > 0 reads every tower, `model.towers(batch)`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ssimctr.config.schema import REGIME_CHOICES
from ssimctr.data.batch import Batch
from ssimctr.models.base import MultiScenarioModel, own_scenario

REDUCTIONS = REGIME_CHOICES["loss_reduction"]  # regime.loss_reduction


def sharing_loss(
    tower_logits: torch.Tensor,
    label: torch.Tensor,
    scenario: torch.Tensor,
    gate: torch.Tensor | float,
    own_weight: torch.Tensor | None = None,
    reduction: str = "row",
) -> torch.Tensor:
    """The gated own-tower / all-tower BCE, reduced per row or per scenario (module docstring).
    tower_logits [B, K], label [B], scenario [B], gate a float or [B]; own_weight [B] replaces the
    own-tower weight 1 − gate (SSIM's search uses the gradient-free mask 1(g = 0) there)."""
    if reduction == "scenario":
        return _scenario_sum(tower_logits, label, scenario, gate, own_weight)
    if reduction != "row":
        raise ValueError(f"reduction must be one of {', '.join(REDUCTIONS)}, got {reduction}")
    if isinstance(gate, float) and gate == 0.0:
        return own_tower_loss(own_scenario(tower_logits, scenario), label, scenario, tower_logits.shape[1])
    every = _tower_losses(tower_logits, label).mean(1)
    if isinstance(gate, float) and gate == 1.0:
        return every.mean()
    own = F.binary_cross_entropy_with_logits(own_scenario(tower_logits, scenario), label, reduction="none")
    return ((1 - gate if own_weight is None else own_weight) * own + gate * every).mean()


def own_tower_loss(
    logits: torch.Tensor, label: torch.Tensor, scenario: torch.Tensor, num_scenarios: int, reduction: str = "row"
) -> torch.Tensor:
    """The loss with g = 0 from each row's own-tower logit [B] (module docstring): the mean BCE over rows, or
    the sum over scenarios of each scenario's mean BCE (a scenario without rows adds 0)."""
    if reduction == "row":
        return F.binary_cross_entropy_with_logits(logits, label)
    if reduction != "scenario":
        raise ValueError(f"reduction must be one of {', '.join(REDUCTIONS)}, got {reduction}")
    losses = F.binary_cross_entropy_with_logits(logits, label, reduction="none")
    weights = F.one_hot(scenario, num_scenarios).to(losses.dtype)
    rows = weights.sum(0)
    return ((weights * losses.unsqueeze(1)).sum(0) / torch.where(rows > 0, rows, torch.ones_like(rows))).sum()


def _tower_losses(tower_logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """ℓ_ik [B, K]: every row's BCE on every tower, with its own label."""
    return F.binary_cross_entropy_with_logits(
        tower_logits, label.unsqueeze(1).expand_as(tower_logits), reduction="none"
    )


def _scenario_sum(
    tower_logits: torch.Tensor,
    label: torch.Tensor,
    scenario: torch.Tensor,
    gate: torch.Tensor | float,
    own_weight: torch.Tensor | None,
) -> torch.Tensor:
    """Σ_k (Σ_i a_ik ℓ_ik) / n_k with a_ik = w_i 1[d_i = k] + g_i and the constant n_k = Σ_i a_ik."""
    losses = _tower_losses(tower_logits, label)
    g = torch.as_tensor(gate, dtype=losses.dtype, device=losses.device).expand(len(label))
    own = 1 - g if own_weight is None else own_weight
    weights = g.unsqueeze(1) + own.unsqueeze(1) * F.one_hot(scenario, losses.shape[1]).to(losses.dtype)
    rows = weights.detach().sum(0)
    return ((weights * losses).sum(0) / torch.where(rows > 0, rows, torch.ones_like(rows))).sum()


class FixedSharing:
    """Loss callable for a fixed gate: 0.0 (own tower only, scored by the routed `model(batch)`) or 1.0
    (every tower, `model.towers(batch)`), reduced per row or scenario."""

    def __init__(self, gate: float, reduction: str = "row") -> None:
        self.gate = float(gate)
        self.reduction = reduction

    def __call__(self, model: MultiScenarioModel, batch: Batch) -> torch.Tensor:
        if self.gate == 0.0:
            return own_tower_loss(model(batch), batch.label, batch.scenario, model.num_scenarios, self.reduction)
        return sharing_loss(model.towers(batch), batch.label, batch.scenario, self.gate, reduction=self.reduction)
