"""A dataset's own test set plus a random validation share of its train pool (split=given).

Ali-CCP ships its train and test files; AliMama's SSIM protocol cuts train pool / test at a time.
Both then validate on a seeded random fraction of the train pool (SSIM, docs/methods.md §1.8). A reader
marks the pool `_split` 0 and the test `_split` 2; `carve_validation` turns a fraction of the pool
into `_split` 1.
"""

from __future__ import annotations

import warnings

import polars as pl

from ssimctr.data.sources.base import SPLIT_COLUMN
from ssimctr.errors import UserError

HASH_MODULUS = 1_000_000_007
_ROW = "__pool_row"


def warn_unless_given(dataset_name: str, split_kind: str, protocol: str) -> None:
    """The reader's own split is used only with split=given: say so when another split is chosen."""
    if split_kind != "given":
        warnings.warn(
            f"dataset={dataset_name} with split={split_kind}: the dataset's own split ({protocol}) is "
            "ignored; pass split=given to use it",
            stacklevel=3,
        )


def check_fraction(value: float, option: str) -> float:
    """A validation share strictly between 0 and 1."""
    if not 0 < float(value) < 1:
        raise UserError(f"{option} must be a fraction between 0 and 1 (exclusive), got {value}")
    return float(value)


def carve_validation(frame: pl.LazyFrame, fraction: float, seed: int) -> pl.LazyFrame:
    """`_split` 0 rows become 1 with probability `fraction`, decided by a seeded hash of the row's
    position in `frame` (same input, fraction and seed -> same rows; independent of the training seed)."""
    u = (pl.col(_ROW).hash(seed=seed) % HASH_MODULUS).cast(pl.Float64) / HASH_MODULUS
    val = (pl.col(SPLIT_COLUMN) == 0) & (u < fraction)
    return (
        frame.with_row_index(_ROW)
        .with_columns(pl.when(val).then(1).otherwise(pl.col(SPLIT_COLUMN)).cast(pl.Int8).alias(SPLIT_COLUMN))
        .drop(_ROW)
    )


def pool_or_test(time: pl.Expr, test_start: int) -> pl.Expr:
    """`_split` by one cutoff: 0 (train pool) before `test_start`, 2 (test) from it on (null time: null)."""
    return pl.when(time < test_start).then(0).when(time >= test_start).then(2).cast(pl.Int8).alias(SPLIT_COLUMN)
