"""The job's encoded fields: each text column of the prepared data (and each joined image-vector table)
made into a model input, set on the job's feature map (`FeatureMap.encoded`).

The `text_encoder` group names the encoder class (`_target_`). `NoText` (text_encoder=none) encodes no
column (ID-only). A `ColumnEncoder` encodes every column of `dataset.text`: its distinct non-empty texts
over the three splits (sorted, indexes 1..n; empty, blank and missing texts are index 0, the empty text,
and counted), then one field of them (`hashing.Hashing`: hashed tokens; `encoders.MiniLM`,
`encoders.HuggingFace`: each text's vector from a frozen model, cached by `cache`). Image vectors
(`dataset.vectors`, joined during preparation) are used whenever the prepared data has them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import replace
from pathlib import Path
from typing import Protocol

import numpy as np
import polars as pl
import torch
from rich.console import Console

from ssimctr.config.text import TextEncoderConfig
from ssimctr.data.prepare import PreparedDataset
from ssimctr.data.sources.base import SPLITS
from ssimctr.data.vectors import VECTOR_FOLDER
from ssimctr.errors import UserError
from ssimctr.features.encoded import EncodedField, VectorField


class TextEncoder(Protocol):
    """A `text_encoder` option, built from its config by `_target_`."""

    def fields(self, data: PreparedDataset, console: Console) -> list[EncodedField]:
        """One encoded field per text column of `data` that this encoder reads."""


def with_encoded_fields(data: PreparedDataset, encoder: TextEncoder, console: Console) -> PreparedDataset:
    """`data` whose feature map carries the encoded fields (unchanged when there are none)."""
    fields = (*encoder.fields(data, console), *vector_fields(data.path, data.feature_map.vectors))
    if not fields:
        return data
    return replace(data, feature_map=replace(data.feature_map, encoded=fields))


class NoText(TextEncoderConfig):
    """text_encoder=none: ID-only, no text column becomes a field."""

    def fields(self, data: PreparedDataset, console: Console) -> list[EncodedField]:
        """No field: the job stays ID-only."""
        return []


class ColumnEncoder(ABC):
    """An encoder that makes each text column one field; a subclass says how one column's texts are encoded.
    Its schema (a `TextEncoderConfig`) gives it `kind`, the option's name."""

    kind: str

    def fields(self, data: PreparedDataset, console: Console) -> list[EncodedField]:
        """One field per column of `dataset.text`; UserError when the dataset names none."""
        columns = data.feature_map.text
        if not columns:
            raise UserError(
                f"text_encoder={self.kind}: dataset {data.manifest.get('dataset', '')} has no text fields: "
                "name its text columns with dataset.text=[...], or use text_encoder=none"
            )
        fields: list[EncodedField] = []
        for column in columns:
            texts, empty = distinct_texts(data.path, column)
            console.print(f"  text {column}: {texts.len():,} distinct texts, {empty:,} empty rows")
            fields.append(self.field(data.path, column, texts, console))
        return fields

    @abstractmethod
    def field(self, prepared: Path, column: str, texts: pl.Series, console: Console) -> EncodedField:
        """The field of `column` of the prepared dataset at `prepared`, whose distinct non-blank texts
        `texts` take the indexes 1..n (index 0: the empty text)."""


def distinct_texts(prepared: Path, column: str) -> tuple[pl.Series, int]:
    """The column's distinct non-blank texts over every split (sorted) and its count of blank rows."""
    frame = pl.scan_parquet([Path(prepared) / split for split in SPLITS]).select(pl.col(column).fill_null(""))
    blank = pl.col(column).str.strip_chars() == ""
    texts, empty = pl.collect_all([frame.filter(~blank).unique().sort(column), frame.select(blank.sum())])
    return texts[column], int(empty.item())


def vector_fields(prepared: Path, names: tuple[str, ...]) -> list[VectorField]:
    """The joined image-vector tables of the prepared data (row 0: the learned missing vector's place)."""
    fields = []
    for name in names:
        table = pl.read_parquet(Path(prepared) / VECTOR_FOLDER / f"{name}.parquet")["vector"].to_numpy()
        vectors = np.concatenate([np.zeros((1, table.shape[1]), dtype=np.float32), table.astype(np.float32)])
        fields.append(VectorField(name, torch.from_numpy(vectors)))
    return fields
