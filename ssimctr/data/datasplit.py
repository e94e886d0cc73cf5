"""A prepared split, held in memory or streamed from its parquet shards, that hands out loaders.

Training, evaluation, per-scenario regimes and SSIM scoring all go through `DataSplit`, so every
one of them works on data larger than memory (trainer.in_memory=false).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Protocol

import torch

from ssimctr.data.batch import Batch
from ssimctr.data.loaders import InMemoryLoader, ParquetStreamLoader, Share, count_rows, read_split
from ssimctr.features.feature_map import FeatureMap


class Loader(Protocol):
    """What the training loop iterates over."""

    num_rows: int
    device: torch.device

    def __iter__(self) -> Iterator[Batch]: ...

    def __len__(self) -> int: ...


class DataSplit(Protocol):
    """The rows of one split."""

    @property
    def path(self) -> Path | None:
        """The prepared split's parquet file or folder (None for rows made in memory)."""

    @property
    def num_rows(self) -> int: ...

    @property
    def device(self) -> torch.device: ...

    def loader(self, batch_size: int, shuffle: bool, seed: int = 0) -> Loader: ...

    def of_scenario(self, scenario: int) -> DataSplit: ...


@dataclass(frozen=True)
class MemorySplit:
    """A split held as one Batch (on the training device), read from `path` when it has one."""

    batch: Batch
    path: Path | None = None

    @property
    def num_rows(self) -> int:
        return len(self.batch)

    @property
    def device(self) -> torch.device:
        return self.batch.label.device

    def loader(self, batch_size: int, shuffle: bool, seed: int = 0) -> InMemoryLoader:
        return InMemoryLoader(self.batch, batch_size, shuffle=shuffle, seed=seed)

    def of_scenario(self, scenario: int) -> MemorySplit:
        return replace(self, batch=self.batch.of_scenario(scenario))


@dataclass(frozen=True)
class StreamedSplit:
    """A split left on disk (a parquet file or folder of shards), read in row groups per epoch."""

    path: Path
    feature_map: FeatureMap
    buffer_rows: int
    device: torch.device
    scenario: int | None = None
    share: Share | None = None  # a data-parallel rank's row groups (ParquetStreamLoader)

    @cached_property
    def num_rows(self) -> int:
        if self.share is not None:
            return self.loader(1, shuffle=False).num_rows
        return count_rows(self.path, self.scenario)

    def loader(self, batch_size: int, shuffle: bool, seed: int = 0) -> ParquetStreamLoader:
        return ParquetStreamLoader(
            self.path,
            self.feature_map,
            batch_size,
            shuffle=shuffle,
            seed=seed,
            buffer_rows=self.buffer_rows,
            device=self.device,
            scenario=self.scenario,
            num_rows=None if self.share is not None else self.num_rows,
            share=self.share,
        )

    def of_scenario(self, scenario: int) -> StreamedSplit:
        return replace(self, scenario=scenario)


def open_split(
    path: Path,
    feature_map: FeatureMap,
    in_memory: bool,
    buffer_rows: int,
    device: torch.device,
    share: Share | None = None,
) -> DataSplit:
    """A prepared split read into memory on `device`, or streamed from disk; with `share` (rank, world
    size), only that data-parallel rank's part: contiguous rows in memory, round-robin row groups streamed."""
    if in_memory:
        return MemorySplit(read_split(path, feature_map, share).to(device), Path(path))
    return StreamedSplit(Path(path), feature_map, buffer_rows, torch.device(device), share=share)
