"""The only place where models meet config."""

from __future__ import annotations

from omegaconf import DictConfig

from ssimctr.features.feature_map import FeatureMap
from ssimctr.models.base import MultiScenarioModel
from ssimctr.utils.instantiate import instantiate


def build_model(
    backbone: DictConfig, feature_map: FeatureMap, num_towers: int, scenario_feature: bool
) -> MultiScenarioModel:
    """The model of `backbone._target_` with `num_towers` towers (1: one tower for every scenario)."""
    return instantiate(backbone, feature_map=feature_map, num_towers=num_towers, scenario_feature=scenario_feature)
