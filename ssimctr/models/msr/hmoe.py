"""HMoE (Li et al., CIKM 2020): feature-space MMoE plus a label-space mixture (docs/methods.md §3.6)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ssimctr.data.batch import Batch
from ssimctr.features.feature_map import FeatureMap
from ssimctr.models.base import MultiScenarioModel
from ssimctr.models.layers import MLP, Experts, Gates, GroupedTowers, mix
from ssimctr.models.routing import Routes

EPS = 1e-7


class HMoE(MultiScenarioModel):
    """Two-stage HMoE with `num_towers` scenario towers.

    Stage 1: h = MLP_shared(e); MMoE on h with bias-free gates gives h_k; s_k = σ(Tower_k(h_k))
    for every scenario k. Stage 2: ŷ_t = Σ_k w_{t,k} s̃_k with w_t = softmax(V_t h) (no bias) and
    stop-gradient on the other scenarios' scores (s̃_k = s_k if k = t, else sg(s_k)), so scenario
    t's loss trains tower t and V_t but no other tower. ŷ_t is a probability; to keep the logit
    contract `towers` returns logit(clamp(ŷ_t, 1e-7, 1 - 1e-7)), whose BCE-with-logits equals the
    BCE of ŷ_t. With one tower the mixture is the single score itself.
    The routed path (`own_towers`, §3.12) still computes every stage-1 tower for every row: a row's ŷ_t
    reads every scenario's score s_k by definition. Only the mixture weights are routed (V_t on scenario
    t's rows only).
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
        super().__init__(feature_map, num_towers, embedding_dim, scenario_feature)
        self.bottom = MLP(self.embedding.output_dim, bottom, dropout, batch_norm)
        h_dim = self.bottom.output_dim
        self.experts = Experts(h_dim, expert, num_experts, dropout, batch_norm)
        self.gates = Gates(h_dim, num_experts, num_towers, bias=False)
        self.tower = GroupedTowers(self.experts.output_dim, tower, num_towers, dropout, batch_norm)
        self.mixture = Gates(h_dim, num_towers, num_towers, bias=False)

    def stage_one(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """The bottom's output h [B, H] and the stage-1 scores s [B, T] (probabilities) of every tower."""
        h = self.bottom(self.embedding(batch).flatten(1))
        return h, torch.sigmoid(self.tower(mix(self.gates(h), self.experts(h))))

    def towers(self, batch: Batch) -> torch.Tensor:
        h, s = self.stage_one(batch)
        w = self.mixture(h).transpose(0, 1)  # [B, T, T], row t = w_t
        fixed = s.detach()
        y = torch.einsum("btk,bk->bt", w, fixed) + w.diagonal(dim1=1, dim2=2) * (s - fixed)
        return _logit(y).expand(-1, self.num_scenarios)

    def own_towers(self, batch: Batch, routes: Routes) -> torch.Tensor:
        """ŷ_t of each row's own t: every stage-1 score, and w_t on scenario t's rows only."""
        h, s = self.stage_one(batch)
        weights = self.mixture.routed(routes.group(h))  # [n_t, T] each
        y = [
            (w * sg).sum(1) + w[:, t] * (own[:, t] - sg[:, t])
            for t, (w, own, sg) in enumerate(zip(weights, routes.group(s), routes.group(s.detach())))
        ]
        return _logit(routes.ungroup(y))


def _logit(y: torch.Tensor) -> torch.Tensor:
    """logit(clamp(ŷ, 1e-7, 1 − 1e-7)): the logit whose BCE-with-logits is the BCE of the probability ŷ."""
    return torch.logit(y.clamp(EPS, 1 - EPS))
