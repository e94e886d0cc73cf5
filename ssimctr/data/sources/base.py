"""What every source returns."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import polars as pl

SPLIT_COLUMN = "_split"
SPLITS = ("train", "val", "test")


@dataclass
class Source:
    """A dataset's rows, not yet read.

    load:        returns the rows with the dataset's own column names (and `_split` 0/1/2
                 when the dataset ships its own train/val/test files); called only on a cache miss
    fingerprint: what identifies the input (file paths, sizes, mtimes, or generator params)
    origin:      how to name the input in error messages (a path or "the synthetic generator")
    """

    load: Callable[[], pl.LazyFrame]
    fingerprint: dict
    origin: str
