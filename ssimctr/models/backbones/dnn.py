"""DNN backbone: field embeddings -> flattened -> MLP tower(s)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ssimctr.data.batch import Batch
from ssimctr.features.feature_map import FeatureMap
from ssimctr.models.base import MultiScenarioModel
from ssimctr.models.layers import GroupedTowers
from ssimctr.models.routing import Routes


class DNN(MultiScenarioModel):
    """Shared embedding and `num_towers` MLP towers (1 = single tower broadcast to every scenario).

    z_k = MLP_k(flatten(E(x))), hidden sizes `hidden`, ReLU, optional dropout / batch norm.
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
        scenario_feature: bool = True,
    ) -> None:
        super().__init__(feature_map, num_towers, embedding_dim, scenario_feature)
        self.mlp = GroupedTowers(self.embedding.output_dim, hidden, num_towers, dropout, batch_norm)

    def towers(self, batch: Batch) -> torch.Tensor:
        logits = self.mlp(self.embedding(batch).flatten(1))
        return logits.expand(-1, self.num_scenarios)

    def own_towers(self, batch: Batch, routes: Routes) -> torch.Tensor:
        return routes.ungroup(self.mlp.routed(routes.group(self.embedding(batch).flatten(1))))
