"""MMoE (Ma et al., KDD'18) as a multi-scenario model: one gate per scenario (docs/methods.md §3.4)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ssimctr.data.batch import Batch
from ssimctr.features.feature_map import FeatureMap
from ssimctr.models.base import MultiScenarioModel
from ssimctr.models.layers import Experts, Gates, GroupedTowers, mix
from ssimctr.models.routing import Routes


class MMoE(MultiScenarioModel):
    """M shared experts, one softmax gate and one tower per scenario (`num_towers` of each).

    f_j(e) expert MLPs, G_k(e) = softmax(W_k e [+ b_k]) ∈ Δ^M, h_k = Σ_j G_{k,j}(e) f_j(e),
    z_k = Tower_k(h_k).
    """

    def __init__(
        self,
        feature_map: FeatureMap,
        num_towers: int,
        *,
        embedding_dim: int,
        num_experts: int,
        expert: Sequence[int],
        tower: Sequence[int],
        gate_bias: bool,
        dropout: float,
        batch_norm: bool,
        scenario_feature: bool = True,
    ) -> None:
        super().__init__(feature_map, num_towers, embedding_dim, scenario_feature)
        in_dim = self.embedding.output_dim
        self.experts = Experts(in_dim, expert, num_experts, dropout, batch_norm)
        self.gates = Gates(in_dim, num_experts, num_towers, gate_bias)
        self.tower = GroupedTowers(self.experts.output_dim, tower, num_towers, dropout, batch_norm)

    def towers(self, batch: Batch) -> torch.Tensor:
        e = self.embedding(batch).flatten(1)
        logits = self.tower(mix(self.gates(e), self.experts(e)))
        return logits.expand(-1, self.num_scenarios)

    def own_towers(self, batch: Batch, routes: Routes) -> torch.Tensor:
        """The experts on every row (they are shared); gate k and tower k on scenario k's rows only."""
        e = self.embedding(batch).flatten(1)
        experts = routes.group(self.experts(e), dim=1)
        mixed = [torch.einsum("bm,mbw->bw", g, f) for g, f in zip(self.gates.routed(routes.group(e)), experts)]
        return routes.ungroup(self.tower.routed(mixed))
