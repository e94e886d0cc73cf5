"""The model contract: every model scores every row with every scenario's tower."""

from __future__ import annotations

from abc import ABCMeta, abstractmethod

import torch
from torch import nn

from ssimctr.data.batch import Batch


class MultiScenarioModel(nn.Module, metaclass=ABCMeta):
    """Base class of every model.

    Subclasses implement `towers(batch) -> [B, K]` logits, one per scenario tower (single-tower
    models broadcast their one logit). `forward` picks each row's own scenario: [B] logits.
    Returning every tower's logit is what lets one training loop run MT, MT-S and SSIM.
    """

    def __init__(self, num_scenarios: int) -> None:
        super().__init__()
        self.num_scenarios = num_scenarios

    @abstractmethod
    def towers(self, batch: Batch) -> torch.Tensor:
        """Logits of every scenario's tower for every row: [B, K]."""

    def forward(self, batch: Batch) -> torch.Tensor:
        return own_scenario(self.towers(batch), batch.scenario)


def own_scenario(tower_logits: torch.Tensor, scenario: torch.Tensor) -> torch.Tensor:
    """Each row's logit from its own scenario's tower: [B, K], [B] -> [B]."""
    return tower_logits.gather(1, scenario.unsqueeze(1)).squeeze(1)


class PerScenarioModels(MultiScenarioModel):
    """The models of a regime that trains one per scenario (separate, finetune) as one model: each row
    is scored by its own scenario's model, as that regime evaluates it."""

    def __init__(self, models: list[MultiScenarioModel]) -> None:
        super().__init__(len(models))
        self.models = nn.ModuleList(models)

    def forward(self, batch: Batch) -> torch.Tensor:
        logits = torch.zeros(len(batch), device=batch.scenario.device)
        for k, model in enumerate(self.models):
            rows = torch.nonzero(batch.scenario == k).squeeze(1)
            if len(rows):
                logits[rows] = model(batch.take(rows)).to(logits.dtype)
        return logits

    def towers(self, batch: Batch) -> torch.Tensor:
        """Each row's own scenario's logit in every column (a model per scenario has no other towers)."""
        return self.forward(batch).unsqueeze(1).expand(-1, self.num_scenarios)
