"""PLE (Tang et al., RecSys'20) as a multi-scenario model: stacked CGC levels (docs/methods.md §3.4)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ssimctr.data.batch import Batch
from ssimctr.features.feature_map import FeatureMap
from ssimctr.models.base import MultiScenarioModel
from ssimctr.models.layers import CGCLevel, GroupedTowers
from ssimctr.models.routing import Routes


class PLE(MultiScenarioModel):
    """`num_levels` CGC levels with per-scenario specific experts and shared experts, then towers.

    Level l: h_k^l = Σ_{j ∈ E_k ∪ E_s} softmax(W_k^l h_k^{l-1})_j f_j, and at non-final levels
    h_s^l = Σ_{j ∈ all} softmax(W_s^l h_s^{l-1})_j f_j; h_k^0 = h_s^0 = e. z_k = Tower_k(h_k^L).
    With one tower there is one "scenario" group of specific experts, broadcast to every scenario.
    """

    def __init__(
        self,
        feature_map: FeatureMap,
        num_towers: int,
        *,
        embedding_dim: int,
        num_levels: int,
        specific_experts: int,
        shared_experts: int,
        expert: Sequence[int],
        tower: Sequence[int],
        gate_bias: bool,
        dropout: float,
        batch_norm: bool,
        scenario_feature: bool = True,
    ) -> None:
        super().__init__(feature_map, num_towers, embedding_dim, scenario_feature)
        in_dim = self.embedding.output_dim
        self.levels = nn.ModuleList()
        for level in range(num_levels):
            cgc = CGCLevel(
                in_dim,
                expert,
                num_towers,
                specific_experts,
                shared_experts,
                dropout,
                batch_norm,
                gate_bias,
                shared_gate=level < num_levels - 1,
            )
            self.levels.append(cgc)
            in_dim = cgc.output_dim
        self.tower = GroupedTowers(in_dim, tower, num_towers, dropout, batch_norm)

    def towers(self, batch: Batch) -> torch.Tensor:
        h = shared = self.embedding(batch).flatten(1)
        for level in self.levels:
            h, shared = level(h, shared)
        return self.tower(h).expand(-1, self.num_scenarios)

    def own_towers(self, batch: Batch, routes: Routes) -> torch.Tensor:
        """Every level but the last on every row (its shared gate mixes every scenario's specific experts);
        the last level's specific experts and gates, and the towers, on each scenario's own rows only."""
        h = shared = self.embedding(batch).flatten(1)
        for level in self.levels[:-1]:
            h, shared = level(h, shared)
        own = routes.group(h) if h.dim() == 2 else routes.own(h)
        return routes.ungroup(self.tower.routed(self.levels[-1].routed(own, shared, routes)))
