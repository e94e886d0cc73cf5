"""The job's encoded fields: each text column of the prepared data (and each joined image-vector table)
made into a model input, set on the job's feature map (`FeatureMap.encoded`).

With `text_encoder=none` no text column is encoded (ID-only). Otherwise every column of `dataset.text`
is: its distinct non-empty texts over the three splits (sorted, indexes 1..n; empty, blank and missing
texts are index 0, the empty text, and counted), then the hashed tokens of each (`hashing`) or each
one's vector from a frozen encoder, read from the cache or encoded once with a progress bar
(ssimctr.text.cache). Image vectors (`dataset.vectors`, joined during preparation) are used whenever the
prepared data has them.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ssimctr.config.text import FrozenEncoderConfig, HashingConfig, TextEncoderConfig
from ssimctr.data.prepare import PreparedDataset
from ssimctr.data.sources.base import SPLITS
from ssimctr.data.vectors import VECTOR_FOLDER
from ssimctr.errors import UserError
from ssimctr.text.cache import cache_path, cached_vectors
from ssimctr.text.encoders import FrozenEncoder, model_folder, model_identity
from ssimctr.text.fields import EncodedField, HashedTextField, VectorField
from ssimctr.text.hashing import hashed_tokens


def with_encoded_fields(data: PreparedDataset, config: TextEncoderConfig, console: Console) -> PreparedDataset:
    """`data` whose feature map carries the encoded fields (unchanged when there are none)."""
    fields = (*text_fields(data, config, console), *vector_fields(data.path, data.feature_map.vectors))
    if not fields:
        return data
    return replace(data, feature_map=replace(data.feature_map, encoded=fields))


def text_fields(data: PreparedDataset, config: TextEncoderConfig, console: Console) -> list[EncodedField]:
    """One field per text column, encoded as `config` says (none for text_encoder=none)."""
    if config.kind == "none":
        return []
    columns = data.feature_map.text
    if not columns:
        raise UserError(
            f"text_encoder={config.kind}: dataset {data.manifest.get('dataset', '')} has no text fields: "
            "name its text columns with dataset.text=[...], or use text_encoder=none"
        )
    frozen = FrozenTexts(data.path, config, console) if isinstance(config, FrozenEncoderConfig) else None
    fields: list[EncodedField] = []
    for column in columns:
        texts, empty = distinct_texts(data.path, column)
        console.print(f"  text {column}: {texts.len():,} distinct texts, {empty:,} empty rows")
        if isinstance(config, HashingConfig):
            tokens = hashed_tokens(["", *texts.to_list()], config.buckets, config.char_ngrams, config.max_tokens)
            fields.append(HashedTextField(column, tokens, config.buckets, texts))
        elif frozen is not None:
            fields.append(VectorField(column, frozen.vectors(column, texts), texts))
        else:
            raise UserError(f"text_encoder.kind={config.kind} is not known: use none, hashing, minilm or hf")
    return fields


def distinct_texts(prepared: Path, column: str) -> tuple[pl.Series, int]:
    """The column's distinct non-blank texts over every split (sorted) and its count of blank rows."""
    frame = pl.scan_parquet([Path(prepared) / split for split in SPLITS]).select(pl.col(column).fill_null(""))
    blank = pl.col(column).str.strip_chars() == ""
    texts, empty = pl.collect_all([frame.filter(~blank).unique().sort(column), frame.select(blank.sum())])
    return texts[column], int(empty.item())


class FrozenTexts:
    """Vectors of a frozen encoder per column, from the cache; the model loads only when a text is new."""

    def __init__(self, prepared: Path, config: FrozenEncoderConfig, console: Console) -> None:
        self.prepared, self.config, self.console = prepared, config, console
        self.folder = model_folder(config)
        self.identity = model_identity(config, self.folder)
        self._encoder: FrozenEncoder | None = None

    def vectors(self, column: str, texts: pl.Series) -> torch.Tensor:
        """[n + 1, d]: the empty text's vector, then each text's."""
        path = cache_path(self.prepared, self.config, self.identity, column)
        every = pl.concat([pl.Series(column, [""]), texts])
        started = time.perf_counter()
        vectors, encoded = cached_vectors(path, every, lambda new: self._encode(column, new))
        where = path.relative_to(self.prepared.parent)
        if encoded:
            seconds = time.perf_counter() - started
            self.console.print(
                f"  text {column}: encoded {encoded:,} texts with {self.config.kind} in {seconds:.1f}s "
                f"({encoded / max(seconds, 1e-9):,.0f} texts/s), cached in {where}"
            )
        else:
            self.console.print(f"  text {column}: reused the cached {self.config.kind} vectors ({where})")
        return torch.from_numpy(vectors)

    def _encode(self, column: str, texts: list[str]) -> np.ndarray:
        if self._encoder is None:
            self._encoder = FrozenEncoder(self.config, self.folder)
        columns = (
            TextColumn("  encoding {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=self.console, transient=True) as progress:
            task = progress.add_task(f"{column} ({self.config.kind}, {self._encoder.device})", total=len(texts))
            return self._encoder.encode(texts, lambda n: progress.advance(task, n))


def vector_fields(prepared: Path, names: tuple[str, ...]) -> list[VectorField]:
    """The joined image-vector tables of the prepared data (row 0: the learned missing vector's place)."""
    fields = []
    for name in names:
        table = pl.read_parquet(Path(prepared) / VECTOR_FOLDER / f"{name}.parquet")["vector"].to_numpy()
        vectors = np.concatenate([np.zeros((1, table.shape[1]), dtype=np.float32), table.astype(np.float32)])
        fields.append(VectorField(name, torch.from_numpy(vectors)))
    return fields
