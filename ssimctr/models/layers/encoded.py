"""The encoded fields of a batch as field embeddings [B, T, D], appended by FeatureEmbedding
after the id and numeric fields, so every model reads text (and image vectors) with no code of its own.

A `VectorField` looks its rows up in a frozen table (a buffer, not saved in checkpoints: it is data, made
again from the cache) and projects them by a learned linear layer d -> D; an image-vector field's index 0
takes a learned "missing" vector instead. A `HashedTextField` averages the trainable embeddings of its
text's hashed tokens (a bag of D columns, padding excluded; an empty text gives zeros).
"""

from __future__ import annotations

import torch
from torch import nn

from ssimctr.features.encoded import EncodedField, VectorField


class ProjectedVectors(nn.Module):
    """Frozen vectors of a table, projected to `dim`; a learned vector for index 0 when asked."""

    def __init__(self, field: VectorField, dim: int) -> None:
        super().__init__()
        self.register_buffer("vectors", field.vectors.float(), persistent=False)
        self.projection = nn.Linear(field.vectors.shape[1], dim)
        self.missing = nn.Parameter(torch.zeros(field.vectors.shape[1])) if field.learned_missing else None

    def forward(self, index: torch.Tensor) -> torch.Tensor:
        vectors = self.vectors[index]
        if self.missing is not None:
            vectors = torch.where((index == 0).unsqueeze(-1), self.missing.to(vectors.dtype), vectors)
        return self.projection(vectors)


class HashedBag(nn.Module):
    """The mean of a text's hashed token embeddings (trainable; an empty text gives zeros).

    An nn.Embedding with a masked mean rather than nn.EmbeddingBag: the same numbers, and twice
    differentiable, which MAML's inner steps need (coldstart=maml)."""

    def __init__(self, tokens: torch.Tensor, buckets: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("tokens", tokens, persistent=False)
        self.bag = nn.Embedding(buckets + 1, dim, padding_idx=buckets, sparse=True)  # row-wise updates
        self.padding = buckets
        nn.init.xavier_uniform_(self.bag.weight.data[:buckets])

    def forward(self, index: torch.Tensor) -> torch.Tensor:
        tokens = self.tokens[index]  # [..., L]
        present = (tokens != self.padding).unsqueeze(-1)
        total = (self.bag(tokens) * present).sum(-2)
        return total / present.sum(-2).clamp(min=1)


class EncodedFieldEmbedding(nn.Module):
    """[B, T] table indexes (Batch.text) -> [B, T, D] field embeddings, one module per field."""

    def __init__(self, fields: tuple[EncodedField, ...], dim: int) -> None:
        super().__init__()
        self.fields = nn.ModuleList(
            ProjectedVectors(field, dim)
            if isinstance(field, VectorField)
            else HashedBag(field.tokens, field.buckets, dim)
            for field in fields
        )

    def forward(self, index: torch.Tensor) -> torch.Tensor:
        return torch.stack([module(index[..., t]) for t, module in enumerate(self.fields)], dim=-2)
