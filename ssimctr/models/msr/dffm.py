"""DFFM (Guan et al., CIKM 2023, "Domain Facilitated Feature Modeling for CTR Prediction"):
domain-facilitated feature interaction with generated parameters (docs/methods.md §3.7, a reading)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ssimctr.data.batch import Batch
from ssimctr.features.feature_map import FeatureMap
from ssimctr.models.base import MultiScenarioModel
from ssimctr.models.layers import MLP, GeneratedLinear
from ssimctr.models.routing import Routes


class DFFM(MultiScenarioModel):
    """DFFI only: a small MLP per field pair whose parameters are generated from the domain embedding.

    E_1..E_F field embeddings, e = flatten(E), d_k the domain embedding of tower k. For every
    pair i < j:  v^k_ij = w_ij(d_k)ᵀ ReLU(W_ij(d_k) [E_i ; E_j] + b_ij(d_k)) + c_ij(d_k), where each
    generated tensor is θ(d) = θ_0 + H d (one linear hyper-layer per pair, `interaction_hidden` units);
    z_k = MLP([e ; v^k]) with one MLP shared by the towers (hidden `hidden`, then one logit).
    Tower k = the model for domain k, so every row can be scored as every domain; with one tower
    there is one domain embedding and the row's scenario acts only through its input field.
    DFUB (domain-facilitated user behaviour) is left out: the datasets have no behaviour sequences.
    No batch norm option: the towers share the MLP, and batch statistics over all towers' rows would
    let one tower's inputs move another's outputs.
    Defaults: ssimctr.config.models.DFFMConfig (the project's; docs/methods.md §3.7 suggests an MLP [1024, 512, 256]).
    """

    def __init__(
        self,
        feature_map: FeatureMap,
        num_towers: int,
        *,
        embedding_dim: int,
        hidden: Sequence[int],
        interaction_hidden: int,
        dropout: float,
        scenario_feature: bool = True,
    ) -> None:
        super().__init__(feature_map, num_towers, embedding_dim, scenario_feature)
        fields = self.embedding.num_fields
        left, right = torch.triu_indices(fields, fields, offset=1)
        self.register_buffer("left", left, persistent=False)
        self.register_buffer("right", right, persistent=False)
        pairs = left.numel()
        self.domain = nn.Embedding(num_towers, embedding_dim)
        nn.init.xavier_uniform_(self.domain.weight)
        self.pair_hidden = GeneratedLinear(embedding_dim, 2 * embedding_dim, interaction_hidden, groups=pairs)
        self.pair_output = GeneratedLinear(embedding_dim, interaction_hidden, 1, groups=pairs)
        self.mlp = MLP(self.embedding.output_dim + pairs, hidden, dropout, output_dim=1)

    def towers(self, batch: Batch) -> torch.Tensor:
        fields = self.embedding(batch)
        pairs = torch.cat([fields[:, self.left], fields[:, self.right]], dim=2).transpose(0, 1)
        domain = self.domain.weight
        interactions = self.pair_output(torch.relu(self.pair_hidden(pairs, domain)), domain)
        interactions = interactions.squeeze(3).transpose(1, 2)
        towers = domain.shape[0]
        e = fields.flatten(1).expand(towers, -1, -1)
        logits = self.mlp(torch.cat([e, interactions], dim=2).flatten(0, 1)).view(towers, -1)
        return logits.transpose(0, 1).expand(-1, self.num_scenarios)

    def own_towers(self, batch: Batch, routes: Routes) -> torch.Tensor:
        """Each row's field-pair interactions with its own domain's generated parameters only; the shared
        MLP once on every row."""
        fields = routes.sort(self.embedding(batch))
        pairs = routes.split(torch.cat([fields[:, self.left], fields[:, self.right]], dim=2).transpose(0, 1), dim=1)
        domain = self.domain.weight
        hidden = [torch.relu(h) for h in self.pair_hidden.routed(pairs, domain)]  # [P, n_k, ·] each
        interactions = torch.cat([v.squeeze(2).transpose(0, 1) for v in self.pair_output.routed(hidden, domain)])
        return routes.unsort(self.mlp(torch.cat([fields.flatten(1), interactions], dim=1)).squeeze(1))
