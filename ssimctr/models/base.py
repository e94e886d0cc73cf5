"""The model contract: what every model computes, and what methods that wrap any model may rely on."""

from __future__ import annotations

from abc import ABCMeta, abstractmethod

import torch
from torch import nn

from ssimctr.data.batch import Batch
from ssimctr.features.feature_map import FeatureMap
from ssimctr.models.layers.core import FeatureEmbedding
from ssimctr.models.routing import Routes, routable


class ScenarioScorer(nn.Module, metaclass=ABCMeta):
    """What training, evaluation, prediction and serving call: `forward(batch)` -> [B] each row's logit
    from its own scenario's tower, `towers(batch)` -> [B, K] every scenario's tower for every row."""

    num_scenarios: int

    @abstractmethod
    def towers(self, batch: Batch) -> torch.Tensor:
        """Logits of every scenario's tower for every row: [B, K]."""

    @abstractmethod
    def forward(self, batch: Batch) -> torch.Tensor:
        """Each row's logit from its own scenario's tower: [B]."""


class MultiScenarioModel(ScenarioScorer):
    """Base class of every model (conf/backbone), and what methods that wrap any model rely on
    (cold start, SSIM's selector):

    embedding   the `FeatureEmbedding` every input field goes through, built here once
                (`embedding(batch)` -> [B, F, D]; its id table's parameter is `embedding.table.weight`,
                every parameter of it is named `embedding.*`; `embedding.replacing` swaps a field's
                vectors for the next batches, through `forward` and `towers` alike);
    num_towers  K (one tower per scenario) or 1 (one tower, broadcast to every scenario);
    towers      `towers(batch)` -> [B, K] logits, every tower on every row (a single-tower model
                broadcasts its one logit): what a loss reads when a row trains other scenarios' towers
                (MT-S, SSIM's search and retrain);
    forward     `model(batch)` -> [B] logits of each row's own scenario's tower, equal to the own column
                of `towers` (up to summation order): the routed path, which computes tower k on scenario
                k's rows only (`own_towers`), wherever the model has a tower per scenario; what `mt`,
                `single`, evaluation, prediction and serving use.

    Tower k's private parameters get exactly zero gradient from a loss on other scenarios' rows, on
    either path (docs/methods.md §3.12).
    """

    embedding: FeatureEmbedding
    num_towers: int

    def __init__(self, feature_map: FeatureMap, num_towers: int, embedding_dim: int, scenario_feature: bool) -> None:
        super().__init__()
        self.num_scenarios = feature_map.num_scenarios
        self.num_towers = num_towers
        self.embedding = FeatureEmbedding(feature_map, embedding_dim, scenario_feature)

    def forward(self, batch: Batch) -> torch.Tensor:
        """[B] each row's own scenario's logit: the routed path with a tower per scenario, else the one tower.
        Inside a torch.func transform that hides the scenario's values (MAML's vmap) every tower is computed
        and each row's own column read (`routable`)."""
        if self.num_towers == 1 or not routable(batch.scenario):
            return own_scenario(self.towers(batch), batch.scenario)
        return self.own_towers(batch, Routes(batch.scenario, self.num_towers))

    def own_towers(self, batch: Batch, routes: Routes) -> torch.Tensor:
        """[B] each row through its own scenario's tower only, the rows grouped by `routes`. This default
        computes every tower (a model whose towers share everything has nothing to route); each model with
        per-scenario parts overrides it."""
        return own_scenario(self.towers(batch), batch.scenario)


def own_scenario(tower_logits: torch.Tensor, scenario: torch.Tensor) -> torch.Tensor:
    """Each row's logit from its own scenario's tower: [B, K], [B] -> [B]."""
    return tower_logits.gather(1, scenario.unsqueeze(1)).squeeze(1)


class PerScenarioModels(ScenarioScorer):
    """The models of a regime that trains one per scenario (separate, finetune) as one scorer: each row
    is scored by its own scenario's model, as that regime evaluates it (each model sees its own rows only)."""

    def __init__(self, models: list[MultiScenarioModel]) -> None:
        super().__init__()
        self.num_scenarios = len(models)
        self.models = nn.ModuleList(models)

    def forward(self, batch: Batch) -> torch.Tensor:
        routes = Routes(batch.scenario, self.num_scenarios)
        parts = [
            model(batch.take(rows)).float() if len(rows) else rows.new_zeros(0, dtype=torch.float32)
            for model, rows in zip(self.models, routes.split(routes.order))
        ]
        return routes.ungroup(parts)

    def towers(self, batch: Batch) -> torch.Tensor:
        """Each row's own scenario's logit in every column (a model per scenario has no other towers)."""
        return self.forward(batch).unsqueeze(1).expand(-1, self.num_scenarios)
