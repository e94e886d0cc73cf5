"""DeepFM backbone: shared field embeddings -> FM second-order term + MLP tower(s)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ssimctr.data.batch import Batch
from ssimctr.features.feature_map import FeatureMap
from ssimctr.models.base import MultiScenarioModel
from ssimctr.models.layers import FactorizationMachine, FeatureEmbedding, GroupedTowers
from ssimctr.models.routing import Routes


class DeepFM(MultiScenarioModel):
    """Shared embedding E, FM term and `num_towers` MLP towers (1 = one tower broadcast to every scenario).

    z_k = MLP_k(flatten(E)) + ½ Σ_d [(Σ_i E_id)² − Σ_i E_id²]  (docs/methods.md §1.2, §3.2).
    As in SSIM's code there is no first-order term by default; `first_order=True` adds
    Σ_i w_{x_i} (one learned scalar per feature value, value × scalar for numeric fields).
    The global bias w_0 is the towers' output bias. The embedding, the FM term and the
    first-order weights are shared by the towers; only the MLPs are per tower.
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
        first_order: bool,
        scenario_feature: bool = True,
    ) -> None:
        super().__init__(feature_map, num_towers, embedding_dim, scenario_feature)
        self.fm = FactorizationMachine()
        self.mlp = GroupedTowers(self.embedding.output_dim, hidden, num_towers, dropout, batch_norm)
        self.linear = FeatureEmbedding(feature_map, 1, scenario_feature) if first_order else None

    def towers(self, batch: Batch) -> torch.Tensor:
        fields = self.embedding(batch)
        return self._shared_terms(batch, fields, self.mlp(fields.flatten(1))).expand(-1, self.num_scenarios)

    def own_towers(self, batch: Batch, routes: Routes) -> torch.Tensor:
        fields = self.embedding(batch)
        mlp = routes.ungroup(self.mlp.routed(routes.group(fields.flatten(1)))).unsqueeze(1)
        return self._shared_terms(batch, fields, mlp).squeeze(1)

    def _shared_terms(self, batch: Batch, fields: torch.Tensor, mlp: torch.Tensor) -> torch.Tensor:
        """The towers' MLP logits [B, T] plus the FM term and, with `first_order`, the first-order term."""
        logits = mlp + self.fm(fields)
        if self.linear is not None:
            logits = logits + self.linear(batch).sum(dim=1)
        return logits
