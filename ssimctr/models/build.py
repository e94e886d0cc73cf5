"""The only place where models meet config."""
from __future__ import annotations

from omegaconf import DictConfig

from ssimctr.errors import UserError
from ssimctr.features.feature_map import FeatureMap
from ssimctr.models.base import MultiScenarioModel
from ssimctr.utils.instantiate import instantiate

TOWERS = ("per_scenario", "single")


def build_model(backbone: DictConfig, regime: DictConfig, feature_map: FeatureMap) -> MultiScenarioModel:
    """The backbone of `backbone._target_` with one tower per scenario or a single tower."""
    if regime.towers not in TOWERS:
        raise UserError(f"regime.towers={regime.towers} is not known: use one of {', '.join(TOWERS)}")
    num_towers = feature_map.num_scenarios if regime.towers == "per_scenario" else 1
    return instantiate(backbone, feature_map=feature_map, num_towers=num_towers,
                       scenario_feature=bool(regime.scenario_feature))
