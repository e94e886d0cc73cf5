"""PEPNet (Chang et al., KDD 2023, "PEPNet: Parameter and Embedding Personalized Network for
Infusing with Personalized Prior Information"): EPNet and PPNet gates on a multi-scenario CTR model.
Equations: docs/methods.md §3.9 (our reading of the paper)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ssimctr.data.batch import Batch
from ssimctr.features.feature_map import FeatureMap
from ssimctr.models.base import MultiScenarioModel
from ssimctr.models.layers import GroupedLinear
from ssimctr.models.routing import Routes


class GateNU(nn.Module):
    """PEPNet's Gate Neural Unit, G independent ones: δ = γ · sigmoid(W_2 ReLU(W_1 x + b_1) + b_2) ∈ (0, γ)^O.

    x [B, H] (shared) or [G, B, H] -> [G, B, O].
    """

    def __init__(self, in_dim: int, hidden: int, out_dim: int, groups: int, scale: float) -> None:
        super().__init__()
        self.hidden = GroupedLinear(in_dim, hidden, groups)
        self.output = GroupedLinear(hidden, out_dim, groups)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * torch.sigmoid(self.output(torch.relu(self.hidden(x))))

    def routed(self, parts: list[torch.Tensor]) -> list[torch.Tensor]:
        """Gate g on part g [n_g, H] only -> [n_g, O] each."""
        hidden = [torch.relu(h) for h in self.hidden.routed(parts)]
        return [self.scale * torch.sigmoid(o) for o in self.output.routed(hidden)]


class PEPNet(MultiScenarioModel):
    """Embedding personalization by the scenario (EPNet), tower personalization by user/item/scenario (PPNet).

    E [F, D] field embeddings, e = flatten(E), p_k tower k's scenario embedding, u and i the user and
    item id embeddings (the fields named by feature_map.user / .item; absent ones are left out),
    sg = stop-gradient, γ = `gate_scale` (2 in the paper):
        EPNet: δ^k = GateNU_ep([p_k ; sg(e)]) ∈ (0, γ)^F (one gate per field, GateNU_ep shared by the
               towers), O^k = flatten(δ^k ⊗ E) (field f's embedding scaled by δ^k_f);
        PPNet: q^k = [u ; i ; p_k ; sg(O^k)], h^k_0 = O^k, and for each width of `hidden`
               h^k_{l+1} = GateNU_{k,l}(q^k) ⊙ Dropout(ReLU(W_{k,l} h^k_l + b_{k,l}))
               (a gate on the hidden units of every layer; one tower and one set of gates per scenario);
        z_k = w_kᵀ h^k_L + c_k.
    Tower k plays scenario k (its prior p_k), so every row can be scored as every scenario; with one
    tower there is one prior p and the row's scenario acts through its input field.
    Defaults: ssimctr.config.models.PEPNetConfig (the project's: no reference config).
    """

    def __init__(
        self,
        feature_map: FeatureMap,
        num_towers: int,
        *,
        embedding_dim: int,
        hidden: Sequence[int],
        gate_hidden: int,
        gate_scale: float,
        dropout: float,
        scenario_feature: bool = True,
    ) -> None:
        super().__init__(feature_map, num_towers, embedding_dim, scenario_feature)
        names = feature_map.categorical_names
        ids = [names.index(name) for name in (feature_map.user, feature_map.item) if name is not None]
        self.register_buffer("id_fields", torch.tensor(ids, dtype=torch.long), persistent=False)
        fields, flat = self.embedding.num_fields, self.embedding.output_dim
        self.prior = nn.Embedding(num_towers, embedding_dim)
        nn.init.xavier_uniform_(self.prior.weight)
        self.epnet = GateNU(embedding_dim + flat, gate_hidden, fields, 1, gate_scale)
        personal = (len(ids) + 1) * embedding_dim + flat
        widths = [flat, *hidden]
        self.layers = nn.ModuleList(GroupedLinear(a, b, num_towers) for a, b in zip(widths[:-1], widths[1:]))
        self.gates = nn.ModuleList(GateNU(personal, gate_hidden, w, num_towers, gate_scale) for w in hidden)
        self.output = GroupedLinear(widths[-1], 1, num_towers)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def towers(self, batch: Batch) -> torch.Tensor:
        fields = self.embedding(batch)
        rows = fields.shape[0]
        towers = self.prior.num_embeddings
        prior = self.prior.weight.unsqueeze(1).expand(-1, rows, -1)
        general = fields.flatten(1).detach().expand(towers, -1, -1)
        field_gates = self.epnet(torch.cat([prior, general], dim=2).flatten(0, 1)).view(towers, rows, -1)
        h = (fields * field_gates.unsqueeze(3)).flatten(2)
        ids = fields[:, self.id_fields].flatten(1).expand(towers, -1, -1)
        personal = torch.cat([ids, prior, h.detach()], dim=2)
        for layer, gate in zip(self.layers, self.gates):
            h = gate(personal) * self.dropout(torch.relu(layer(h)))
        return self.output(h).squeeze(2).transpose(0, 1).expand(-1, self.num_scenarios)

    def own_towers(self, batch: Batch, routes: Routes) -> torch.Tensor:
        """Each row with its own scenario's prior p_k, EPNet gate and PPNet tower only."""
        fields = routes.sort(self.embedding(batch))
        prior = self.prior.weight.index_select(0, routes.tower)  # [B, D] in sorted order
        field_gates = self.epnet(torch.cat([prior, fields.flatten(1).detach()], dim=1)).squeeze(0)
        h = (fields * field_gates.unsqueeze(2)).flatten(1)
        personal = routes.split(torch.cat([fields[:, self.id_fields].flatten(1), prior, h.detach()], dim=1))
        h = routes.split(h)
        for layer, gate in zip(self.layers, self.gates):
            h = [g * self.dropout(torch.relu(x)) for g, x in zip(gate.routed(personal), layer.routed(h))]
        return routes.ungroup([logits.reshape(-1) for logits in self.output.routed(h)])
