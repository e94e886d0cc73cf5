"""Building blocks shared by every model (one package, one module per family of layers)."""
from ssimctr.models.layers.core import MLP, FeatureEmbedding, ParallelTowers
from ssimctr.models.layers.experts import CGCLevel, Experts, Gates, GroupedLinear, GroupedTowers, mix
from ssimctr.models.layers.interaction import CrossNetV1, CrossNetV2, FactorizationMachine, TowerHead, TowerMLP
from ssimctr.models.layers.scenario import GeneratedLinear, PartitionedNorm, StarLinear

__all__ = ["MLP", "FeatureEmbedding", "ParallelTowers", "CGCLevel", "Experts", "Gates", "GroupedLinear",
           "GroupedTowers", "mix", "CrossNetV1", "CrossNetV2", "FactorizationMachine", "TowerHead", "TowerMLP",
           "GeneratedLinear", "PartitionedNorm", "StarLinear"]
