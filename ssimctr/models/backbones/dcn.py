"""DCN (v1) backbone: shared field embeddings -> cross network ∥ MLP per tower -> linear head."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ssimctr.data.batch import Batch
from ssimctr.features.feature_map import FeatureMap
from ssimctr.models.base import MultiScenarioModel
from ssimctr.models.layers import CrossNetV1, Experts, TowerHead
from ssimctr.models.routing import Routes


class DCN(MultiScenarioModel):
    """Shared embedding and `num_towers` towers (1 = one tower broadcast to every scenario).

    e = flatten(E(x)); tower k: z_k = w_kᵀ [Cross_k(e) ; MLP_k(e)], Cross_k = `cross_layers`
    v1 cross layers x_{l+1} = x0 · (x_lᵀ w_l) + b_l + x_l, MLP_k without output layer, the head
    w_k without bias (docs/methods.md §1.2, §3.3; SSIM's MaskDeepCross). Only the embedding is
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
        scenario_feature: bool = True,
    ) -> None:
        super().__init__(feature_map, num_towers, embedding_dim, scenario_feature)
        in_dim = self.embedding.output_dim
        self.cross = CrossNetV1(in_dim, cross_layers, num_towers)
        self.mlp = Experts(in_dim, hidden, num_towers, dropout, batch_norm)
        self.head = TowerHead(in_dim + self.mlp.output_dim, num_towers)

    def towers(self, batch: Batch) -> torch.Tensor:
        e = self.embedding(batch).flatten(1)
        logits = self.head(self.cross(e), self.mlp(e))
        return logits.expand(-1, self.num_scenarios)

    def own_towers(self, batch: Batch, routes: Routes) -> torch.Tensor:
        parts = routes.group(self.embedding(batch).flatten(1))
        return routes.ungroup(self.head.routed(self.cross.routed(parts), self.mlp.routed(parts)))
