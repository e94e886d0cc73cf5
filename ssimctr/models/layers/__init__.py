"""Building blocks shared by every model (one package, one module per family of layers)."""
from ssimctr.models.layers.core import MLP, FeatureEmbedding, ParallelTowers

__all__ = ["MLP", "FeatureEmbedding", "ParallelTowers"]
