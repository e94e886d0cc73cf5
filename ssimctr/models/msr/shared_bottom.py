"""Shared-Bottom as a multi-scenario model (docs/methods.md §3.4)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ssimctr.data.batch import Batch
from ssimctr.features.feature_map import FeatureMap
from ssimctr.models.base import MultiScenarioModel
from ssimctr.models.layers import MLP, GroupedTowers
from ssimctr.models.routing import Routes


class SharedBottom(MultiScenarioModel):
    """One shared bottom MLP and `num_towers` scenario towers on its output.

    h = MLP_shared(e), z_k = Tower_k(h), with e the flattened field embeddings.
    """

    def __init__(
        self,
        feature_map: FeatureMap,
        num_towers: int,
        *,
        embedding_dim: int,
        bottom: Sequence[int],
        tower: Sequence[int],
        dropout: float,
        batch_norm: bool,
        scenario_feature: bool = True,
    ) -> None:
        super().__init__(feature_map, num_towers, embedding_dim, scenario_feature)
        self.bottom = MLP(self.embedding.output_dim, bottom, dropout, batch_norm)
        self.tower = GroupedTowers(self.bottom.output_dim, tower, num_towers, dropout, batch_norm)

    def towers(self, batch: Batch) -> torch.Tensor:
        logits = self.tower(self.bottom(self.embedding(batch).flatten(1)))
        return logits.expand(-1, self.num_scenarios)

    def own_towers(self, batch: Batch, routes: Routes) -> torch.Tensor:
        h = self.bottom(self.embedding(batch).flatten(1))
        return routes.ungroup(self.tower.routed(routes.group(h)))
