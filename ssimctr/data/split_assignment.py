"""Which split (train / val / test) each row goes to, by the configured rule: by time, at random
(seeded), or as the dataset's own files say."""

from __future__ import annotations

import polars as pl

from ssimctr.config.schema import SplitConfig
from ssimctr.data.columns import parse_cutoff
from ssimctr.data.sources.base import SPLIT_COLUMN
from ssimctr.errors import UserError

HASH_MODULUS = 1_000_000_007


def split_assignment(frame: pl.LazyFrame, rule: SplitConfig, has_time: bool) -> pl.Expr:
    """Each row's split as an Int8 expression: 0 = train, 1 = val, 2 = test."""
    if rule.kind == "given":
        return pl.col(SPLIT_COLUMN)
    if rule.kind == "random":
        train, val = _fractions(rule.fractions)
        u = (pl.col("row_id").hash(seed=rule.seed) % HASH_MODULUS).cast(pl.Float64) / HASH_MODULUS
        return _by_thresholds(u, train, train + val)
    if not has_time:
        raise UserError("split=time needs a time column: set dataset.time=COLUMN, or use split=random")
    if rule.cutoffs is not None:
        val_start, test_start = (parse_cutoff(c) for c in rule.cutoffs)
        if val_start > test_start:
            raise UserError(f"split.cutoffs must be in order, got {list(rule.cutoffs)}")
        return _by_thresholds(pl.col("ts"), val_start, test_start)
    train, val = _fractions(rule.fractions)
    edges = frame.select(
        pl.col("ts").quantile(train, "lower").alias("val"), pl.col("ts").quantile(train + val, "lower").alias("test")
    ).collect()
    return _by_thresholds(pl.col("ts"), edges["val"][0], edges["test"][0])


def _by_thresholds(value: pl.Expr, val_start, test_start) -> pl.Expr:
    """Rows below val_start are train, below test_start val, the rest test."""
    return pl.when(value < val_start).then(0).when(value < test_start).then(1).otherwise(2).cast(pl.Int8)


def _fractions(fractions: list[float]) -> tuple[float, float]:
    """(train, val) fractions from [train, val, test] (SplitConfig checked them when it was made)."""
    return fractions[0], fractions[1]
