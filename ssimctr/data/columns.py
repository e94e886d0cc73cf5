"""Checks and conversions of the source columns: roles, label, time, numeric values.

Every failure is a UserError naming the option, the column, the input and the fix.
"""

from __future__ import annotations

import difflib
from datetime import UTC, datetime

import polars as pl

from ssimctr.config.datasets import DatasetConfig
from ssimctr.errors import UserError

RESERVED = ("row_id", "scenario", "label", "ts")


def feature_roles(dataset: DatasetConfig) -> dict[str, list[str]]:
    """Categorical, numeric and text fields; user and item are categorical fields too."""
    categorical = list(dict.fromkeys([*dataset.categorical, *(c for c in (dataset.user, dataset.item) if c)]))
    roles = {"categorical": categorical, "numeric": list(dataset.numeric), "text": list(dataset.text)}
    features = [c for cols in roles.values() for c in cols]
    duplicated = sorted({c for c in features if features.count(c) > 1})
    if duplicated:
        raise UserError(
            f"column(s) {duplicated} are listed under more than one of dataset.categorical / "
            "numeric / text: list each column once"
        )
    answers = (
        ("dataset.label", dataset.label),
        ("dataset.scenario", dataset.scenario),
        ("dataset.truth", dataset.truth),
    )
    for option, column in answers:
        if column in features:
            raise UserError(
                f"{option} column '{column}' is also listed as a feature: it would leak the answer "
                "into the model. Remove it from dataset.categorical / numeric / text"
            )
    reserved = [c for c in features if c in RESERVED]
    if reserved:
        raise UserError(
            f"feature column(s) {reserved} use a name the prepared data reserves ({', '.join(RESERVED)}): "
            "rename the column in the file"
        )
    return roles


def check_columns(schema: pl.Schema, dataset: DatasetConfig, origin: str) -> None:
    """Every column named in the dataset config exists in the source; suggest close names if not."""
    wanted = {
        "dataset.label": [dataset.label],
        "dataset.scenario": [dataset.scenario],
        "dataset.time": [dataset.time],
        "dataset.user": [dataset.user],
        "dataset.item": [dataset.item],
        "dataset.oracle": [dataset.oracle],
        "dataset.truth": [dataset.truth],
        "dataset.categorical": dataset.categorical,
        "dataset.numeric": dataset.numeric,
        "dataset.text": dataset.text,
    }
    available = list(schema.names())
    for option, columns in wanted.items():
        for column in columns:
            if column and column not in available:
                close = difflib.get_close_matches(column, available, n=3)
                hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
                raise UserError(
                    f"{option}: column '{column}' is not in {origin}. {hint}Columns there: {', '.join(available)}"
                )


def label_expression(frame: pl.LazyFrame, dataset: DatasetConfig, origin: str) -> pl.Expr:
    """The 0/1 label as Int8 (null where the source label is null)."""
    column = pl.col(dataset.label)
    dtype = frame.collect_schema()[dataset.label]
    if dataset.label_threshold is not None:
        if not dtype.is_numeric():
            raise UserError(
                f"dataset.label_threshold needs a numeric label, but column '{dataset.label}' in {origin} holds {dtype}"
            )
        return (column >= dataset.label_threshold).cast(pl.Int8)
    if dtype == pl.Boolean:
        return column.cast(pl.Int8)
    present = column.drop_nulls().drop_nans() if dtype.is_float() else column.drop_nulls()
    values = frame.select(present.unique().head(20)).collect().to_series().to_list()
    if not values:
        raise UserError(
            f"dataset.label column '{dataset.label}' in {origin} holds no value (every row is empty, null or NaN): "
            "choose the column that holds the 0/1 labels"
        )
    shown = ", ".join(map(repr, sorted(values, key=str)[:6])) + (", ..." if len(values) > 6 else "")
    if not dtype.is_numeric():
        raise UserError(
            f"dataset.label column '{dataset.label}' in {origin} holds {dtype} values ({shown}), not 0/1: "
            "write the labels as 0/1 (or true/false) in the file, or choose a 0/1 column"
        )
    if any(v not in (0, 1) for v in values):
        raise UserError(
            f"dataset.label column '{dataset.label}' in {origin} is not 0/1 (values: {shown}): "
            "set dataset.label_threshold=T so that label = 1 where value >= T, or choose a 0/1 column"
        )
    return column.cast(pl.Int8)


def time_expression(frame: pl.LazyFrame, dataset: DatasetConfig, origin: str) -> pl.Expr:
    """Event time as Int64 unix seconds."""
    column = pl.col(dataset.time)
    dtype = frame.collect_schema()[dataset.time]
    if dtype.is_integer():
        return column.cast(pl.Int64)
    if dtype.is_float():
        return column.cast(pl.Int64, strict=False)
    if dtype in (pl.Date,) or isinstance(dtype, pl.Datetime):
        return column.cast(pl.Datetime("us")).dt.epoch("s")
    if dtype == pl.String:
        try:
            frame.select(column.head(1000).str.to_datetime(format=dataset.time_format, strict=True)).collect()
        except pl.exceptions.PolarsError:
            head = frame.select(column.head(1000).drop_nulls()).collect().to_series()
            try:  # show a value that does not parse, not merely the first one
                parsed = head.str.to_datetime(format=dataset.time_format, strict=False)
                sample = head.filter(parsed.is_null()).head(1).to_list() or head.head(1).to_list()
            except pl.exceptions.PolarsError:
                sample = head.head(1).to_list()
            raise UserError(
                f"dataset.time column '{dataset.time}' in {origin} holds text that is not a date/time "
                f"(e.g. {sample}): set dataset.time_format (strptime, e.g. '%Y-%m-%d %H:%M:%S') "
                "or fix the file"
            ) from None
        return column.str.to_datetime(format=dataset.time_format, strict=False, time_zone=None).dt.epoch("s")
    raise UserError(
        f"dataset.time column '{dataset.time}' in {origin} has type {dtype}: expected unix seconds or a date/time"
    )


def text_expressions(frame: pl.LazyFrame, columns: list[str], origin: str) -> list[pl.Expr]:
    """Text fields as strings ("" where missing); a column of numbers, dates or booleans is refused: a text
    encoder would hash its digits as words."""
    schema = frame.collect_schema()
    for name in columns:
        dtype = schema[name]
        if dtype not in (pl.String, pl.Categorical, pl.Null) and not isinstance(dtype, pl.Enum):
            role = "dataset.numeric" if dtype.is_numeric() else "dataset.categorical"
            raise UserError(
                f"dataset.text column '{name}' in {origin} holds {dtype} values, not text: list it under {role}, "
                "or name a column of text in dataset.text"
            )
    return [pl.col(name).cast(pl.String).fill_null("") for name in columns]


def numeric_expressions(frame: pl.LazyFrame, columns: list[str], origin: str) -> list[pl.Expr]:
    """Numeric fields as Float64; text that is not a number is an error naming the column and a value."""
    schema = frame.collect_schema()
    expressions = []
    for name in columns:
        dtype = schema[name]
        if dtype.is_numeric() or dtype == pl.Boolean:
            expressions.append(pl.col(name).cast(pl.Float64))
            continue
        bad = (
            frame.select(pl.col(name))
            .filter(pl.col(name).is_not_null() & pl.col(name).cast(pl.Float64, strict=False).is_null())
            .head(3)
            .collect()
            .to_series()
            .to_list()
        )
        if bad:
            raise UserError(
                f"dataset.numeric column '{name}' in {origin} holds non-numeric values "
                f"(e.g. {bad}): fix the file or list the column under dataset.categorical"
            )
        expressions.append(pl.col(name).cast(pl.Float64, strict=False))
    return expressions


def parse_cutoff(value: str) -> int:
    """A split cutoff as unix seconds: an integer, or an ISO date/time (UTC)."""
    text = str(value).strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UserError(
            f"split.cutoffs: '{value}' is neither unix seconds nor an ISO date like 2017-05-12 or 2017-05-12T08:00:00"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())
