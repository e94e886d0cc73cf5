"""DCN-V2 backbone: shared field embeddings -> v2 cross network and MLP per tower -> linear head."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ssimctr.data.batch import Batch
from ssimctr.errors import UserError
from ssimctr.features.feature_map import FeatureMap
from ssimctr.models.base import MultiScenarioModel
from ssimctr.models.layers import CrossNetV2, Experts, TowerHead
from ssimctr.models.routing import Routes

STRUCTURES = ("parallel", "stacked")


class DCNv2(MultiScenarioModel):
    """Shared embedding and `num_towers` towers (1 = one tower broadcast to every scenario).

    e = flatten(E(x)); Cross_k = `cross_layers` v2 layers x_{l+1} = x0 ⊙ (W_l x_l + b_l) + x_l,
    W_l full rank (`rank=None`) or U_l V_lᵀ of rank `rank` (docs/methods.md §3.3).
    parallel: z_k = w_kᵀ [Cross_k(e) ; MLP_k(e)];  stacked: z_k = w_kᵀ MLP_k(Cross_k(e)).
    MLP_k has no output layer and the head w_k no bias, as in our DCN. Only the embedding is
    shared: cross network, MLP and head are per tower.
    """

    def __init__(
        self,
        feature_map: FeatureMap,
        num_towers: int,
        *,
        embedding_dim: int,
        hidden: Sequence[int],
        dropout: float,
        batch_norm: bool,
        cross_layers: int,
        structure: str,
        rank: int | None,
        scenario_feature: bool = True,
    ) -> None:
        super().__init__(feature_map, num_towers, embedding_dim, scenario_feature)
        if structure not in STRUCTURES:
            raise UserError(f"backbone.structure={structure} is not known: use one of {', '.join(STRUCTURES)}")
        if rank is not None and rank < 1:
            raise UserError(f"backbone.rank={rank} must be a positive integer, or null for full rank")
        in_dim = self.embedding.output_dim
        self.parallel = structure == "parallel"
        self.cross = CrossNetV2(in_dim, cross_layers, num_towers, rank)
        self.mlp = Experts(in_dim, hidden, num_towers, dropout, batch_norm)
        self.head = TowerHead(self.mlp.output_dim + (in_dim if self.parallel else 0), num_towers)

    def towers(self, batch: Batch) -> torch.Tensor:
        e = self.embedding(batch).flatten(1)
        if self.parallel:
            parts = (self.cross(e), self.mlp(e))
        else:
            parts = (self.mlp(self.cross(e)),)
        return self.head(*parts).expand(-1, self.num_scenarios)

    def own_towers(self, batch: Batch, routes: Routes) -> torch.Tensor:
        e = routes.group(self.embedding(batch).flatten(1))
        if self.parallel:
            parts = (self.cross.routed(e), self.mlp.routed(e))
        else:
            parts = (self.mlp.routed(self.cross.routed(e)),)
        return routes.ungroup(self.head.routed(*parts))
