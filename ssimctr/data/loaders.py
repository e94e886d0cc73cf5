"""Loaders: read a prepared split (parquet files or a folder of shards) and iterate over it in batches.

In memory, one epoch is a single seeded permutation of contiguous tensors followed by
contiguous slices: no per-row Python, no collate function. Streaming reads parquet row groups
(of one file or a folder of shards) in a seeded order through a shuffle buffer.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import torch

from ssimctr.data.batch import Batch
from ssimctr.features.encoded import field_indexes
from ssimctr.features.feature_map import FeatureMap
from ssimctr.utils.seed import GeneratorState


def parquet_files(path: Path) -> list[Path]:
    """The parquet files of a prepared split: the file itself, or a folder's shards in name order."""
    path = Path(path)
    files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
    if not files or not files[0].is_file():
        raise FileNotFoundError(f"no prepared parquet data at {path}")
    return files


Share = tuple[int, int]  # (rank, world size): a data-parallel process's share of a split


def read_split(path: Path, feature_map: FeatureMap, share: Share | None = None) -> Batch:
    """Load one prepared split (a parquet file or a folder of parquet shards) as one Batch. With `share`
    (rank r of w), only rows [r·n/w, (r+1)·n/w) of the split's n rows in file order: shares differ by at
    most a row, and polars' slice pushdown reads only the row groups that hold the rank's rows."""
    files = parquet_files(path)
    if share is None:
        return batch_from_frame(pl.read_parquet(files), feature_map)
    start, stop = share_bounds(count_rows(path), share)
    return batch_from_frame(pl.scan_parquet(files).slice(start, stop - start).collect(), feature_map)


def share_bounds(rows: int, share: Share) -> tuple[int, int]:
    """Rank r's contiguous rows [start, stop) of `rows` rows split among w ranks."""
    rank, world = share
    return rank * rows // world, (rank + 1) * rows // world


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
        text=field_indexes(frame, feature_map.encoded) if feature_map.encoded else None,
    )


class InMemoryLoader(GeneratorState):
    """Iterates over `data` in batches; shuffled loaders draw a new seeded permutation per epoch.

    The batches live where `data` lives, or on `device` when one is given.

    The permutation is applied once per epoch (one gather per tensor) and batches are
    contiguous views of the permuted tensors.
    """

    def __init__(
        self, data: Batch, batch_size: int, shuffle: bool, seed: int = 0, device: torch.device | str | None = None
    ) -> None:
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


def count_rows(path: Path, scenario: int | None = None) -> int:
    """Rows of a prepared split on disk (of one scenario when given): parquet metadata, or one pass
    over the scenario column."""
    files = parquet_files(path)
    if scenario is None:
        return sum(pq.ParquetFile(file).metadata.num_rows for file in files)
    return pl.scan_parquet(files).filter(pl.col("scenario") == scenario).select(pl.len()).collect().item()


class ParquetStreamLoader(GeneratorState):
    """Streams a prepared split from its parquet row groups, for data larger than memory.

    `path` is a parquet file or a folder of parquet shards. Each epoch reads the row groups of all
    shards in a seeded random order; about `buffer_rows` rows (whole row groups) are shuffled
    together and cut into batches, and a partial batch carries over to the next buffer, so an epoch
    yields ceil(rows / batch_size) batches covering every row once. Unshuffled, rows come in file
    order. With `scenario`, only that scenario's rows are read (`num_rows`, when the caller has
    counted them, saves a pass over the scenario column). Memory holds one buffer, not the split.
    With `share` (rank r of w), only row groups r, r + w, r + 2w, ... (over all shards) are read: whole
    row groups, so the ranks' row counts differ by up to a row group (training agrees on the fewest
    batches: ssimctr.train.distributed.agreed_batches).
    """

    def __init__(
        self,
        path: Path,
        feature_map: FeatureMap,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        buffer_rows: int = 1_000_000,
        device: torch.device | str = "cpu",
        scenario: int | None = None,
        num_rows: int | None = None,
        share: Share | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.files = [pq.ParquetFile(file) for file in parquet_files(path)]
        self.units = [(f, g) for f, file in enumerate(self.files) for g in range(file.num_row_groups)]
        if share is not None:
            if scenario is not None:
                raise ValueError("a share of one scenario's rows is not supported")
            self.units = self.units[share[0] :: share[1]]
            num_rows = sum(self.files[f].metadata.row_group(g).num_rows for f, g in self.units)
        self.feature_map, self.scenario = feature_map, scenario
        self.columns = [
            "row_id",
            "scenario",
            "label",
            *feature_map.categorical_names,
            *feature_map.numeric_names,
            *(field.column for field in feature_map.encoded),
        ]
        self.batch_size, self.shuffle, self.buffer_rows = batch_size, shuffle, buffer_rows
        self.generator = torch.Generator().manual_seed(seed)
        self.device = torch.device(device)
        self.num_rows = num_rows if num_rows is not None else count_rows(path, scenario)

    def __len__(self) -> int:
        return -(-self.num_rows // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        order = (
            torch.randperm(len(self.units), generator=self.generator).tolist()
            if self.shuffle
            else range(len(self.units))
        )
        carry: list[Batch] = []
        buffered = 0
        for unit in order:
            carry.append(self._read(*self.units[unit]))
            buffered += len(carry[-1])
            if buffered >= self.buffer_rows:
                carry = yield from self._emit(carry)
                buffered = sum(len(b) for b in carry)
        if buffered:
            yield from self._emit(carry, final=True)

    def _read(self, file: int, group: int) -> Batch:
        """One row group (only the scenario's rows when the loader has one) as a CPU batch."""
        frame = pl.from_arrow(self.files[file].read_row_group(group, columns=self.columns))
        if self.scenario is not None:
            frame = frame.filter(pl.col("scenario") == self.scenario)
        return batch_from_frame(frame, self.feature_map)

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
