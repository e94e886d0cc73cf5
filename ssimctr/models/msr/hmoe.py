"""HMoE (Li et al., CIKM 2020): feature-space MMoE plus a label-space mixture (docs/methods.md §3.6)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ssimctr.data.batch import Batch
from ssimctr.features.feature_map import FeatureMap
from ssimctr.models.base import MultiScenarioModel
from ssimctr.models.layers import MLP, Experts, FeatureEmbedding, Gates, GroupedTowers, mix

EPS = 1e-7


class HMoE(MultiScenarioModel):
    """Two-stage HMoE with `num_towers` scenario towers.

    Stage 1: h = MLP_shared(e); MMoE on h with bias-free gates gives h_k; s_k = σ(Tower_k(h_k))
    for every scenario k. Stage 2: ŷ_t = Σ_k w_{t,k} s̃_k with w_t = softmax(V_t h) (no bias) and
    stop-gradient on the other scenarios' scores (s̃_k = s_k if k = t, else sg(s_k)), so scenario
    t's loss trains tower t and V_t but no other tower. ŷ_t is a probability; to keep the logit
    contract `towers` returns logit(clamp(ŷ_t, 1e-7, 1 - 1e-7)), whose BCE-with-logits equals the
    BCE of ŷ_t. With one tower the mixture is the single score itself.
    """

    def __init__(
        self,
        feature_map: FeatureMap,
        num_towers: int,
        *,
        embedding_dim: int,
        bottom: Sequence[int],
        num_experts: int,
        expert: Sequence[int],
        tower: Sequence[int],
        dropout: float,
        batch_norm: bool,
        scenario_feature: bool = True,
    ) -> None:
        super().__init__(feature_map.num_scenarios)
        self.embedding = FeatureEmbedding(feature_map, embedding_dim, scenario_feature)
        self.bottom = MLP(self.embedding.output_dim, bottom, dropout, batch_norm)
        h_dim = self.bottom.output_dim
        self.experts = Experts(h_dim, expert, num_experts, dropout, batch_norm)
        self.gates = Gates(h_dim, num_experts, num_towers, bias=False)
        self.tower = GroupedTowers(self.experts.output_dim, tower, num_towers, dropout, batch_norm)
        self.mixture = Gates(h_dim, num_towers, num_towers, bias=False)

    def scores(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Stage-1 scores s [B, T] (probabilities) and stage-2 weights w [B, T, T] (row t = w_t)."""
        h = self.bottom(self.embedding(batch).flatten(1))
        s = torch.sigmoid(self.tower(mix(self.gates(h), self.experts(h))))
        return s, self.mixture(h).transpose(0, 1)

    def towers(self, batch: Batch) -> torch.Tensor:
        s, w = self.scores(batch)
        fixed = s.detach()
        y = torch.einsum("btk,bk->bt", w, fixed) + w.diagonal(dim1=1, dim2=2) * (s - fixed)
        return torch.logit(y.clamp(EPS, 1 - EPS)).expand(-1, self.num_scenarios)
