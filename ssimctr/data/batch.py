"""A batch of prepared rows as tensors, and reading prepared splits (parquet files or folders of shards)."""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np
import polars as pl
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


def scenario_rows(batch: Batch, scenario: int) -> Batch:
    """The rows of `batch` that belong to `scenario`."""
    return batch.take(torch.nonzero(batch.scenario == scenario).squeeze(1))


def parquet_files(path: Path) -> list[Path]:
    """The parquet files of a prepared split: the file itself, or a folder's shards in name order."""
    path = Path(path)
    files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
    if not files or not files[0].is_file():
        raise FileNotFoundError(f"no prepared parquet data at {path}")
    return files


def read_split(path: Path, feature_map: FeatureMap) -> Batch:
    """Load one prepared split (a parquet file or a folder of parquet shards) as one Batch."""
    return batch_from_frame(pl.read_parquet(parquet_files(path)), feature_map)


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
