"""Which split (train / val / test) each row goes to, by the configured rule: by time, at random
(seeded), or as the dataset's own files say."""

from __future__ import annotations

import polars as pl

from ssimctr.config.schema import SplitConfig
from ssimctr.data.columns import parse_cutoff
from ssimctr.data.sources.base import SPLIT_COLUMN
from ssimctr.errors import UserError

RULES = ("time", "random", "given")
HASH_MODULUS = 1_000_000_007


def split_assignment(frame: pl.LazyFrame, rule: SplitConfig, has_time: bool) -> pl.Expr:
    """Each row's split as an Int8 expression: 0 = train, 1 = val, 2 = test."""
    if rule.kind not in RULES:
        raise UserError(f"split={rule.kind} is not known: use one of {', '.join(RULES)}")
    if rule.kind == "given":
        return pl.col(SPLIT_COLUMN)
    if rule.kind == "random":
        train, val = _fractions(rule.fractions)
        u = (pl.col("row_id").hash(seed=rule.seed) % HASH_MODULUS).cast(pl.Float64) / HASH_MODULUS
        return _by_thresholds(u, train, train + val)
    if not has_time:
        raise UserError("split=time needs a time column: set dataset.time=COLUMN, or use split=random")
    if rule.cutoffs is not None:
        if len(rule.cutoffs) != 2:
            raise UserError(f"split.cutoffs needs two values [val_start, test_start], got {list(rule.cutoffs)}")
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
    """(train, val) fractions from [train, val, test]; a clear error unless they are >= 0 and sum to 1."""
    values = list(fractions)
    if len(values) != 3 or any(f < 0 for f in values) or abs(sum(values) - 1) > 1e-6 or values[0] == 0:
        raise UserError(
            f"split.fractions must be three numbers [train, val, test] >= 0 summing to 1 with train > 0, got {values}"
        )
    return values[0], values[1]
