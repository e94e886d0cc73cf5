"""The sharing-policy loss, written once for every model.

Per row i with gate g_i in [0, 1]:
    loss_i = (1 - g_i) * BCE(own tower) + g_i * mean_k BCE(tower k), always with the row's own label.
regime=mt: g = 0 (each row trains its own scenario's tower); regime=mt_s: g = 1 (every tower);
SSIM: g from the selector. With one tower (broadcast) both terms coincide.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ssimctr.data.batch import Batch
from ssimctr.models.base import MultiScenarioModel, own_scenario


def sharing_loss(
    tower_logits: torch.Tensor,
    label: torch.Tensor,
    scenario: torch.Tensor,
    gate: torch.Tensor | float,
    own_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean over rows of the gated own-tower / all-tower BCE. tower_logits [B, K], label [B],
    scenario [B], gate a float or [B]; own_weight [B] replaces the own-tower weight 1 − gate
    (SSIM's search uses the gradient-free mask 1(g = 0) there)."""
    if isinstance(gate, float) and gate == 0.0:
        return F.binary_cross_entropy_with_logits(own_scenario(tower_logits, scenario), label)
    every = F.binary_cross_entropy_with_logits(
        tower_logits, label.unsqueeze(1).expand_as(tower_logits), reduction="none"
    ).mean(1)
    if isinstance(gate, float) and gate == 1.0:
        return every.mean()
    own = F.binary_cross_entropy_with_logits(own_scenario(tower_logits, scenario), label, reduction="none")
    return ((1 - gate if own_weight is None else own_weight) * own + gate * every).mean()


class FixedSharing:
    """Loss callable for a fixed gate: 0.0 (own tower only) or 1.0 (every tower)."""

    def __init__(self, gate: float) -> None:
        self.gate = float(gate)

    def __call__(self, model: MultiScenarioModel, batch: Batch) -> torch.Tensor:
        return sharing_loss(model.towers(batch), batch.label, batch.scenario, self.gate)
