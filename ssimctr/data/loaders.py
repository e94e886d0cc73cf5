"""Batches of prepared rows as tensors: the only data module that imports torch.

In memory, one epoch is a single seeded permutation of contiguous tensors followed by
contiguous slices: no per-row Python, no collate function.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Iterator

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import torch

from ssimctr.features.feature_map import FeatureMap


@dataclass(frozen=True)
class Batch:
    """A batch of B rows.

    cat:      [B, F] long, categorical ids (0 = OOV/missing), F = len(feature_map.categorical)
    num:      [B, D] float, standardized numeric fields (D may be 0)
    scenario: [B] long, scenario index in 0..K-1
    label:    [B] float, 0.0 or 1.0
    row_id:   [B] long, the prepared dataset's stable row id
    text:     [B, T] float precomputed text features, or None
    """

    cat: torch.Tensor
    num: torch.Tensor
    scenario: torch.Tensor
    label: torch.Tensor
    row_id: torch.Tensor
    text: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.label.shape[0]

    def to(self, device: torch.device | str) -> "Batch":
        """The same batch on `device` (a no-op where it already lives there)."""
        return Batch(**{f.name: _move(getattr(self, f.name), device) for f in fields(self)})

    def slice(self, start: int, stop: int) -> "Batch":
        """Rows start..stop as views (no copy)."""
        return Batch(**{f.name: _apply(getattr(self, f.name), lambda t: t[start:stop]) for f in fields(self)})

    def take(self, index: torch.Tensor) -> "Batch":
        """Rows at `index` (a copy, in that order)."""
        return Batch(**{f.name: _apply(getattr(self, f.name), lambda t: t.index_select(0, index)) for f in fields(self)})

    def with_scenario(self, scenario: torch.Tensor) -> "Batch":
        return replace(self, scenario=scenario)

    @staticmethod
    def concat(batches: list["Batch"]) -> "Batch":
        """The rows of `batches`, one after the other."""
        return Batch(**{f.name: _apply(getattr(batches[0], f.name),
                                       lambda _, n=f.name: torch.cat([getattr(b, n) for b in batches]))
                        for f in fields(Batch)})


def _apply(t: torch.Tensor | None, fn) -> torch.Tensor | None:
    return None if t is None else fn(t)


def _move(t: torch.Tensor | None, device) -> torch.Tensor | None:
    return None if t is None else t.to(device, non_blocking=True)


def read_split(path: Path, feature_map: FeatureMap) -> Batch:
    """Load one prepared split (a parquet file or a folder of parquet shards) as one Batch."""
    return batch_from_frame(pl.read_parquet(path), feature_map)


def batch_from_frame(frame: pl.DataFrame, feature_map: FeatureMap) -> Batch:
    """The rows of a prepared frame as one Batch."""
    if feature_map.categorical:
        cat = frame.select(feature_map.categorical_names).to_numpy().astype(np.int64, copy=False)
    else:  # a frame of no columns has no rows: keep one row per label
        cat = np.zeros((frame.height, 0), dtype=np.int64)
    if feature_map.numeric:
        num = frame.select(feature_map.numeric_names).to_numpy().astype(np.float32, copy=False)
    else:
        num = np.zeros((frame.height, 0), dtype=np.float32)
    return Batch(
        # writable and contiguous: a single-column frame may hand out its own read-only buffer
        cat=torch.from_numpy(np.require(cat, requirements=["C", "W"])),
        num=torch.from_numpy(np.require(num, requirements=["C", "W"])),
        scenario=torch.from_numpy(frame["scenario"].to_numpy().astype(np.int64)),
        label=torch.from_numpy(frame["label"].to_numpy().astype(np.float32)),
        row_id=torch.from_numpy(frame["row_id"].to_numpy().astype(np.int64)),
    )


class InMemoryLoader:
    """Iterates over `data` in batches; shuffled loaders draw a new seeded permutation per epoch.

    The batches live where `data` lives, or on `device` when one is given.

    The permutation is applied once per epoch (one gather per tensor) and batches are
    contiguous views of the permuted tensors.
    """

    def __init__(self, data: Batch, batch_size: int, shuffle: bool, seed: int = 0,
                 device: torch.device | str | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.data = data if device is None else data.to(device)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return -(-len(self.data) // self.batch_size)

    @property
    def num_rows(self) -> int:
        return len(self.data)

    @property
    def device(self) -> torch.device:
        return self.data.label.device

    def __iter__(self) -> Iterator[Batch]:
        data = self.data
        if self.shuffle:
            order = torch.randperm(len(data), generator=self.generator).to(data.label.device)
            data = data.take(order)
        for start in range(0, len(data), self.batch_size):
            yield data.slice(start, start + self.batch_size)


class ParquetStreamLoader:
    """Streams a prepared split from its parquet row groups, for training data larger than memory.

    Each epoch reads the row groups in a seeded random order; about `buffer_rows` rows (whole row
    groups) are shuffled together and cut into batches, and a partial batch carries over to the
    next buffer, so an epoch yields ceil(rows / batch_size) batches covering every row once.
    Memory holds one buffer, not the split.
    """

    def __init__(self, path: Path, feature_map: FeatureMap, batch_size: int, shuffle: bool, seed: int = 0,
                 buffer_rows: int = 1_000_000, device: torch.device | str = "cpu") -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.file = pq.ParquetFile(path)
        self.feature_map = feature_map
        self.batch_size, self.shuffle, self.buffer_rows = batch_size, shuffle, buffer_rows
        self.generator = torch.Generator().manual_seed(seed)
        self.device = torch.device(device)

    @property
    def num_rows(self) -> int:
        return self.file.metadata.num_rows

    def __len__(self) -> int:
        return -(-self.num_rows // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        groups = range(self.file.num_row_groups)
        if self.shuffle:
            groups = torch.randperm(self.file.num_row_groups, generator=self.generator).tolist()
        carry: list[Batch] = []
        buffered = 0
        for group in groups:
            carry.append(batch_from_frame(pl.from_arrow(self.file.read_row_group(group)), self.feature_map))
            buffered += len(carry[-1])
            if buffered >= self.buffer_rows:
                carry = yield from self._emit(carry)
                buffered = sum(len(b) for b in carry)
        if carry:
            yield from self._emit(carry, final=True)

    def _emit(self, parts: list[Batch], final: bool = False):
        """Yield full batches of the (shuffled) buffer; return the leftover rows (all rows if final)."""
        data = Batch.concat(parts)
        if self.shuffle:
            data = data.take(torch.randperm(len(data), generator=self.generator))
        data = data.to(self.device)
        full = len(data) if final else len(data) - len(data) % self.batch_size
        for start in range(0, full, self.batch_size):
            yield data.slice(start, start + self.batch_size)
        return [data.slice(full, len(data))] if full < len(data) else []
