"""Encoded fields: a text column (or an image-vector column) as a model reads it.

Each row's value is an index into a table of the field: index i >= 1 is the i-th distinct text (or the
i-th key of a vector file), index 0 the empty text (or a missing vector). The loaders put the indexes of
every encoded field into `Batch.text` [B, T]; `ssimctr.models.layers.encoded` turns them into T field
embeddings. The fields are made at job time (`ssimctr.text`, the encode-and-cache step) and travel on the
job's `FeatureMap.encoded`; this module is below both, so data, features and models never import `text`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import torch


@dataclass(frozen=True, eq=False)
class VectorField:
    """Fixed vectors [n + 1, d], projected to the embedding size by a learned linear layer.

    `texts` (a text field): the distinct non-empty texts of indexes 1..n, row 0 holds the empty text's
    vector. None (an image-vector field): the column already holds the index, and row 0 is replaced by a
    learned "missing" vector."""

    column: str
    vectors: torch.Tensor
    texts: pl.Series | None = None

    @property
    def learned_missing(self) -> bool:
        return self.texts is None


@dataclass(frozen=True, eq=False)
class HashedTextField:
    """Hashed token ids [n + 1, L] of the distinct texts (row 0: the empty text), `buckets` marks padding;
    averaged by a trainable EmbeddingBag of `buckets` rows."""

    column: str
    tokens: torch.Tensor
    buckets: int
    texts: pl.Series


EncodedField = VectorField | HashedTextField


def field_indexes(frame: pl.DataFrame, fields: tuple[EncodedField, ...]) -> torch.Tensor:
    """Each row's index into each field's table: [rows, T] int64 (a text not in the table: 0)."""
    columns = []
    for field in fields:
        if field.texts is None:
            columns.append(frame[field.column].fill_null(0).cast(pl.Int64).to_numpy())
        else:
            index = pl.Series(np.arange(1, field.texts.len() + 1, dtype=np.int64))
            columns.append(frame[field.column].replace_strict(field.texts, index, default=0).to_numpy())
    return torch.from_numpy(np.stack(columns, axis=1).astype(np.int64, copy=False))
