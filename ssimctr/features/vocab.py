"""Vocabularies and numeric statistics, fitted on the train split only."""

from __future__ import annotations

import polars as pl

from ssimctr.errors import UserError
from ssimctr.features.feature_map import NumericField

SMALL_VOCABULARY = 10_000  # vocabularies up to this size are applied by a replacement map, larger ones by a join


def fit_vocabularies(train: pl.LazyFrame, columns: list[str], min_freq: int) -> dict[str, pl.DataFrame]:
    """Per column, a frame (value, index): values seen >= min_freq times in train, most frequent
    first (ties by value), indexed 1..n. Index 0 is left for out-of-vocabulary and missing values."""
    if min_freq < 1:
        raise UserError(f"dataset.min_freq must be >= 1, got {min_freq}")
    queries = [
        train.group_by(pl.col(c).alias("value")).agg(pl.len().alias("count")).drop_nulls("value") for c in columns
    ]
    vocabularies = {}
    for column, counts in zip(columns, pl.collect_all(queries)):
        kept = counts.filter(pl.col("count") >= min_freq).sort(["count", "value"], descending=[True, False])
        if counts.height == 0:
            raise UserError(
                f"categorical column '{column}' has no values in the train split (all missing): "
                "fill it in the file or remove it from dataset.categorical"
            )
        if kept.height == 0:
            raise UserError(
                f"dataset.min_freq={min_freq} removes every value of column '{column}' "
                f"(its most frequent value occurs {counts['count'].max() or 0} times in train): "
                "lower dataset.min_freq"
            )
        vocabularies[column] = kept.with_row_index("index", offset=1).select(
            "value", pl.col("index").cast(pl.Int32), "count"
        )
    return vocabularies


def encode(frame: pl.LazyFrame, vocabularies: dict[str, pl.DataFrame]) -> pl.LazyFrame:
    """Replace each vocabulary column's values by their index (Int32, 0 = OOV or missing).

    A vocabulary of up to SMALL_VOCABULARY values is a value-replacement map (`replace_strict`); the streaming
    engine builds it again for every batch of rows, cheap for a small map, so a larger vocabulary is applied by
    a left join (row order kept), whose table is built once.
    """
    schema = frame.collect_schema()
    small = {column: vocab for column, vocab in vocabularies.items() if vocab.height <= SMALL_VOCABULARY}
    frame = frame.with_columns(
        pl.col(column).replace_strict(
            pl.lit(vocab["value"]).cast(schema[column]), pl.lit(vocab["index"]), default=0, return_dtype=pl.Int32
        )
        for column, vocab in small.items()
    )
    for column, vocab in vocabularies.items():
        if column in small:
            continue
        index = f"__index_{column}"
        table = vocab.lazy().select(pl.col("value").cast(schema[column]).alias(column), pl.col("index").alias(index))
        frame = (
            frame.join(table, on=column, how="left", maintain_order="left", nulls_equal=False)
            .with_columns(pl.col(index).fill_null(0).alias(column))
            .drop(index)
        )
    return frame


def fit_numeric(train: pl.LazyFrame, columns: list[str]) -> list[NumericField]:
    """Mean, std, min and max of each numeric column on train (std 0 or undefined -> 1)."""
    if not columns:
        return []
    stats = (
        train.select(
            [pl.col(c).mean().alias(f"{c}|mean") for c in columns]
            + [pl.col(c).std().alias(f"{c}|std") for c in columns]
            + [pl.col(c).min().alias(f"{c}|min") for c in columns]
            + [pl.col(c).max().alias(f"{c}|max") for c in columns]
        )
        .collect()
        .row(0, named=True)
    )
    fields = []
    for c in columns:
        std = stats[f"{c}|std"]
        fields.append(
            NumericField(
                name=c,
                mean=float(stats[f"{c}|mean"] or 0.0),
                std=float(std) if std and std > 0 else 1.0,
                min=float(stats[f"{c}|min"] or 0.0),
                max=float(stats[f"{c}|max"] or 0.0),
            )
        )
    return fields


def standardize(frame: pl.LazyFrame, fields: list[NumericField]) -> pl.LazyFrame:
    """(value - mean) / std as Float32, missing values -> 0 (the train mean)."""
    return frame.with_columns(
        ((pl.col(f.name) - f.mean) / f.std).fill_null(0.0).fill_nan(0.0).cast(pl.Float32) for f in fields
    )
