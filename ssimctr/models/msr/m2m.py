"""M2M (Zhang et al., WSDM 2022, "Leaving No One Behind: A Multi-Scenario Multi-Task Meta Learning
Approach for Advertiser Modeling"), single-task (CTR) version. Equations: docs/methods.md §3.10
(our reading of the paper)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ssimctr.data.batch import Batch
from ssimctr.features.feature_map import FeatureMap
from ssimctr.models.base import MultiScenarioModel
from ssimctr.models.layers import MLP, Experts, GeneratedLinear
from ssimctr.models.routing import Routes


class M2M(MultiScenarioModel):
    """Shared experts, then a meta attention and a meta tower whose parameters the scenario generates.

    e = flatten(E(x)); experts f_j(e), j = 1..M (shared MLPs `expert_hidden`, output width H);
    scenario knowledge S_k = ReLU(W_s p_k + b_s) from tower k's scenario embedding p_k;
    meta unit: a linear map whose weight and bias are generated from S, θ(S) = θ_0 + H S;
        meta attention: α_{k,j} = softmax_j(vᵀ ReLU(W_a(S_k) f_j + b_a(S_k))), r_k = Σ_j α_{k,j} f_j;
        meta tower: h_0 = r_k, h_{l+1} = h_l + Dropout(ReLU(W_l(S_k) h_l + b_l(S_k))) for
                    l < `meta_layers` (residual), z_k = w_o(S_k)ᵀ h_L + c_o(S_k).
    Simplified from the paper: one task (CTR), so the task embedding leaves the attention's input and
    there is one meta tower (per scenario through S_k); the experts read e (no Transformer over
    behaviour sequences); S_k comes from the scenario id alone (no scenario statistics features), and
    user / item features enter only through e. Tower k plays scenario k; with one tower there is one
    scenario embedding and the row's scenario acts through its input field.
    Defaults: ssimctr.config.models.M2MConfig (the project's: no reference config).
    """

    def __init__(
        self,
        feature_map: FeatureMap,
        num_towers: int,
        *,
        embedding_dim: int,
        num_experts: int,
        expert_hidden: Sequence[int],
        scenario_dim: int,
        attention_dim: int,
        meta_layers: int,
        dropout: float,
        scenario_feature: bool = True,
    ) -> None:
        super().__init__(feature_map, num_towers, embedding_dim, scenario_feature)
        self.experts = Experts(self.embedding.output_dim, expert_hidden, num_experts, dropout)
        width = self.experts.output_dim
        self.scenario = nn.Embedding(num_towers, embedding_dim)
        nn.init.xavier_uniform_(self.scenario.weight)
        self.knowledge = MLP(embedding_dim, [scenario_dim])
        self.attention = GeneratedLinear(scenario_dim, width, attention_dim)
        self.attention_vector = nn.Linear(attention_dim, 1, bias=False)
        self.meta = nn.ModuleList(GeneratedLinear(scenario_dim, width, width) for _ in range(meta_layers))
        self.meta_output = GeneratedLinear(scenario_dim, width, 1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def towers(self, batch: Batch) -> torch.Tensor:
        experts = self.experts(self.embedding(batch).flatten(1))
        num_experts, rows, _ = experts.shape
        knowledge = self.knowledge(self.scenario.weight)
        towers = knowledge.shape[0]
        scores = self.attention_vector(torch.relu(self.attention(experts.flatten(0, 1), knowledge)))
        weights = torch.softmax(scores.view(towers, num_experts, rows), dim=1)
        h = torch.einsum("kmb,mbh->kbh", weights, experts)
        for layer in self.meta:
            h = h + self.dropout(torch.relu(layer(h, knowledge)))
        return self.meta_output(h, knowledge).squeeze(2).transpose(0, 1).expand(-1, self.num_scenarios)

    def own_towers(self, batch: Batch, routes: Routes) -> torch.Tensor:
        """The experts on every row (shared); scenario k's meta attention and meta tower on its rows only."""
        experts = routes.group(self.experts(self.embedding(batch).flatten(1)), dim=1)  # [M, n_k, H] each
        knowledge = self.knowledge(self.scenario.weight)
        hidden = self.attention.routed([f.flatten(0, 1) for f in experts], knowledge)  # [M·n_k, A] each
        h = []
        for f, a in zip(experts, hidden):
            weights = torch.softmax(self.attention_vector(torch.relu(a)).view(f.shape[0], f.shape[1]), dim=0)
            h.append(torch.einsum("mb,mbh->bh", weights, f))
        for layer in self.meta:
            h = [x + self.dropout(torch.relu(y)) for x, y in zip(h, layer.routed(h, knowledge))]
        return routes.ungroup([logits.squeeze(1) for logits in self.meta_output.routed(h, knowledge)])
