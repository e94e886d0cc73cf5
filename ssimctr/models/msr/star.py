"""STAR (Sheng et al., CIKM 2021, "One model to serve all"): partitioned normalization, a
star-topology FCN and an auxiliary network (docs/methods.md §3.5)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ssimctr.data.batch import Batch
from ssimctr.errors import UserError
from ssimctr.features.feature_map import FeatureMap
from ssimctr.models.base import MultiScenarioModel
from ssimctr.models.layers import MLP, PartitionedNorm, StarLinear
from ssimctr.models.layers.scenario import PARTITION_INITS
from ssimctr.models.routing import Routes


class STAR(MultiScenarioModel):
    """One partition per tower (scenario k's partition is tower k; one shared partition when num_towers = 1).

    e = flatten(E(x)); tower k's logit z_k = s_main_k + s_aux_k with
        s_main_k = Star_k(PN_k(e)): h_{l+1} = Dropout(ReLU(h_l (W_l ⊙ W_{l,k}) + b_l + b_{l,k})) for each
                   width of `hidden`, then a star output layer of width 1;
        s_aux_k  = MLP_aux(a_k), a_k = tower k's scenario embedding (hidden `aux_hidden`, then 1).
    PN statistics of tower k: in training, the masked batch statistics of the batch's scenario-k rows,
    so a row's own tower normalizes with its own scenario's statistics and the cross-scenario path k
    with scenario k's (its running statistics when scenario k has fewer than two rows in the batch);
    in eval, scenario k's running statistics. a_k comes from a table of the model (one row per
    tower) rather than from the input's scenario field as in the reference code: the row's scenario
    still enters e through that field, and with one tower the aux net reduces to a learned bias.
    Reference defaults (KDD25_SSIM STAR-SSIM): hidden [128, 64, 32], aux [16]; dropout 0 here.

    Initialisation of W_k (`partition_init`): "ones" (the default) starts every partition as the shared
    layer, W ⊙ 1 = W, so at step 0 every tower is the same well-scaled network and the partitions
    only drift apart as scenario k's rows train W_k. "like_shared" draws W_k like W, as the reference
    code does (glorot for both); the product of two such draws has a variance of order 1/fan_in²
    instead of 1/fan_in, so at initialisation each layer shrinks the signal's scale by a factor of
    order sqrt(fan_in) and the towers start almost constant (docs/methods.md §3.5).
    """

    def __init__(
        self,
        feature_map: FeatureMap,
        num_towers: int,
        *,
        embedding_dim: int,
        hidden: Sequence[int],
        aux_hidden: Sequence[int],
        dropout: float,
        partition_init: str,
        scenario_feature: bool = True,
    ) -> None:
        super().__init__(feature_map, num_towers, embedding_dim, scenario_feature)
        if partition_init not in PARTITION_INITS:
            raise UserError(
                f"backbone.partition_init={partition_init} is not known: use one of {', '.join(PARTITION_INITS)}"
            )
        in_dim = self.embedding.output_dim
        self.norm = PartitionedNorm(in_dim, num_towers)
        widths = [in_dim, *hidden, 1]
        self.layers = nn.ModuleList(
            StarLinear(a, b, num_towers, partition_init) for a, b in zip(widths[:-1], widths[1:])
        )
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.scenario = nn.Embedding(num_towers, embedding_dim)
        nn.init.xavier_uniform_(self.scenario.weight)
        self.aux = MLP(embedding_dim, aux_hidden, output_dim=1)

    def towers(self, batch: Batch) -> torch.Tensor:
        e = self.embedding(batch).flatten(1)
        partition = batch.scenario if self.num_towers > 1 else torch.zeros_like(batch.scenario)
        h = self.norm.forward_all(e, partition)
        for layer in self.layers[:-1]:
            h = self.dropout(torch.relu(layer.forward_all(h)))
        main = self.layers[-1].forward_all(h).squeeze(2)
        logits = main + self.aux(self.scenario.weight)
        return logits.transpose(0, 1).expand(-1, self.num_scenarios)

    def own_towers(self, batch: Batch, routes: Routes) -> torch.Tensor:
        """Partition k (norm, star layers, aux) on scenario k's rows only."""
        h = self.norm.routed(self.embedding(batch).flatten(1), batch.scenario, routes)
        for layer in self.layers[:-1]:
            h = [self.dropout(torch.relu(x)) for x in layer.routed(h)]
        aux = self.aux(self.scenario.weight)  # [K, 1]
        return routes.ungroup([main.squeeze(1) + a for main, a in zip(self.layers[-1].routed(h), aux)])
