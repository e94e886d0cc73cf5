"""Field embeddings and the plain MLP."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from ssimctr.data.batch import Batch
from ssimctr.features.feature_map import FeatureMap
from ssimctr.models.layers.encoded import EncodedFieldEmbedding


class FeatureEmbedding(nn.Module):
    """Turns a Batch into field embeddings [B, F, D].

    Fields, in order: every categorical field (one table with per-field offsets, id 0 of each
    field is its OOV row), when `scenario_feature` the scenario id as one more categorical field,
    every numeric field (value times a learned vector), and every encoded text or image-vector field
    of `feature_map.encoded` (ssimctr.text.fusion; none in an ID-only job).
    """

    def __init__(self, feature_map: FeatureMap, dim: int, scenario_feature: bool = True) -> None:
        super().__init__()
        sizes = [f.vocab_size for f in feature_map.categorical]
        if scenario_feature:
            sizes.append(feature_map.num_scenarios)
        self.scenario_feature = scenario_feature
        names = feature_map.categorical_names
        # the user and item id fields (dataset.user / dataset.item), by index: what id regularizers act on
        self.id_fields = tuple(names.index(c) for c in (feature_map.user, feature_map.item) if c in names)
        self.register_buffer("offsets", torch.tensor([0, *sizes[:-1]]).cumsum(0), persistent=False)
        self.table = nn.Embedding(sum(sizes), dim, sparse=True)  # row-wise updates (ssimctr.train.optim)
        self.numeric = nn.Parameter(torch.empty(len(feature_map.numeric), dim))
        self.dim = dim
        self.num_fields = len(sizes) + len(feature_map.numeric) + len(feature_map.encoded)
        self._replaced: tuple[int, torch.Tensor] | None = None
        nn.init.xavier_uniform_(self.table.weight)
        if feature_map.numeric:
            nn.init.xavier_uniform_(self.numeric)
        self.encoded = EncodedFieldEmbedding(feature_map.encoded, dim) if feature_map.encoded else None

    @property
    def output_dim(self) -> int:
        """Size of the flattened embedding, F * D."""
        return self.num_fields * self.dim

    def forward(self, batch: Batch) -> torch.Tensor:
        ids = batch.cat
        if self.scenario_feature:
            ids = torch.cat([ids, batch.scenario.unsqueeze(1)], dim=1)
        fields = self.table(ids + self.offsets)
        if self.numeric.shape[0]:
            fields = torch.cat([fields, batch.num.unsqueeze(2) * self.numeric], dim=1)
        if self.encoded is not None:
            fields = torch.cat([fields, self.encoded(batch.text).to(fields.dtype)], dim=1)
        if self._replaced is not None:
            field, vectors = self._replaced
            chosen = torch.zeros(1, fields.shape[1], 1, dtype=torch.bool, device=fields.device)
            chosen[0, field] = True
            fields = torch.where(chosen, vectors.unsqueeze(1).to(fields.dtype), fields)
        return fields

    @contextmanager
    def replacing(self, field: int, vectors: torch.Tensor) -> Iterator[None]:
        """Within the block, field `field`'s embedding is `vectors` [B, D] (one per row of the next
        batches, gradients flow into them): how cold-start methods give a cold id a generated or
        adapted embedding through any model's `towers()`."""
        self._replaced = (field, vectors)
        try:
            yield
        finally:
            self._replaced = None


@contextmanager
def dense_gradients(module: nn.Module) -> Iterator[None]:
    """Within the block, every sparse-gradient nn.Embedding under `module` (the id table, hashed-text bags)
    gives dense gradients: torch.func (vmap of grad, MAML's inner loops) cannot differentiate a sparse one."""
    tables = [m for m in module.modules() if isinstance(m, nn.Embedding) and m.sparse]
    for table in tables:
        table.sparse = False
    try:
        yield
    finally:
        for table in tables:
            table.sparse = True


class MLP(nn.Sequential):
    """Linear -> [BatchNorm] -> ReLU -> [Dropout] per hidden size, then an optional output layer."""

    def __init__(
        self,
        in_dim: int,
        hidden: Sequence[int],
        dropout: float = 0.0,
        batch_norm: bool = False,
        output_dim: int | None = None,
    ) -> None:
        layers: list[nn.Module] = []
        for width in hidden:
            layers.append(nn.Linear(in_dim, width))
            if batch_norm:
                layers.append(nn.BatchNorm1d(width))
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            in_dim = width
        if output_dim is not None:
            layers.append(nn.Linear(in_dim, output_dim))
        super().__init__(*layers)
        self.output_dim = output_dim if output_dim is not None else in_dim
