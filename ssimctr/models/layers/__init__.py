"""Building blocks shared by every model (one package, one module per family of layers)."""

from ssimctr.models.layers.core import MLP, FeatureEmbedding
from ssimctr.models.layers.experts import CGCLevel, Experts, Gates, GroupedLinear, GroupedTowers, mix
from ssimctr.models.layers.interaction import CrossNetV1, CrossNetV2, FactorizationMachine, TowerHead
from ssimctr.models.layers.scenario import GeneratedLinear, PartitionedNorm, StarLinear

__all__ = [
    "MLP",
    "FeatureEmbedding",
    "CGCLevel",
    "Experts",
    "Gates",
    "GroupedLinear",
    "GroupedTowers",
    "mix",
    "CrossNetV1",
    "CrossNetV2",
    "FactorizationMachine",
    "TowerHead",
    "GeneratedLinear",
    "PartitionedNorm",
    "StarLinear",
]
