"""Vocabularies (train only, count desc then value asc, indices 1..n, 0 = OOV/missing) and numeric statistics."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from ssimctr.errors import UserError
from ssimctr.features.feature_map import NumericField
from ssimctr.features.vocab import encode, fit_numeric, fit_vocabularies, standardize

# a: b x3, a x3, c x2, d x1, null x2   n: 10 x2, 9 x2, 7 x1, null x6
TRAIN = pl.DataFrame(
    {
        "a": ["b", "a", "c", "b", "d", "a", None, "c", "b", "a", None],
        "n": [10, 9, 7, 10, 9, None, None, None, None, None, None],
    }
)


def _as_dict(vocab: pl.DataFrame) -> dict:
    return dict(zip(vocab["value"].to_list(), vocab["index"].to_list()))


def test_order_is_count_descending_then_value_ascending_with_indices_from_1():
    vocab = fit_vocabularies(TRAIN.lazy(), ["a", "n"], min_freq=1)
    assert vocab["a"]["value"].to_list() == ["a", "b", "c", "d"]  # a and b tie at 3: by value
    assert vocab["a"]["index"].to_list() == [1, 2, 3, 4]
    assert vocab["a"]["count"].to_list() == [3, 3, 2, 1]
    assert vocab["a"]["index"].dtype == pl.Int32
    # ties of integers are ordered numerically (9 before 10), not as text
    assert vocab["n"]["value"].to_list() == [9, 10, 7]
    assert vocab["n"]["index"].to_list() == [1, 2, 3]


def test_nulls_are_not_vocabulary_entries():
    vocab = fit_vocabularies(TRAIN.lazy(), ["a"], min_freq=1)["a"]
    assert vocab["value"].null_count() == 0
    assert vocab["count"].sum() == TRAIN["a"].drop_nulls().len()


def test_min_freq_keeps_values_seen_at_least_min_freq_times():
    vocab = fit_vocabularies(TRAIN.lazy(), ["a", "n"], min_freq=2)
    assert _as_dict(vocab["a"]) == {"a": 1, "b": 2, "c": 3}
    assert _as_dict(vocab["n"]) == {9: 1, 10: 2}
    assert _as_dict(fit_vocabularies(TRAIN.lazy(), ["a"], min_freq=3)["a"]) == {"a": 1, "b": 2}


def test_encode_maps_unseen_and_missing_values_to_zero():
    vocab = fit_vocabularies(TRAIN.lazy(), ["a", "n"], min_freq=2)
    frame = pl.DataFrame(
        {"a": ["a", "b", "c", "d", "zzz", None], "n": [10, 9, 7, None, 123, 9], "other": list(range(6))}
    )
    out = encode(frame.lazy(), vocab).collect()
    assert out["a"].to_list() == [1, 2, 3, 0, 0, 0]  # d is below min_freq, zzz unseen, None missing
    assert out["n"].to_list() == [2, 1, 0, 0, 0, 1]
    assert out["a"].dtype == pl.Int32 and out["n"].dtype == pl.Int32
    assert out["a"].null_count() == 0 and out["n"].null_count() == 0
    assert out["other"].to_list() == list(range(6))  # columns without a vocabulary are untouched


def test_min_freq_below_one_and_min_freq_removing_everything_are_user_errors():
    with pytest.raises(UserError, match="min_freq must be >= 1"):
        fit_vocabularies(TRAIN.lazy(), ["a"], min_freq=0)
    with pytest.raises(UserError) as err:
        fit_vocabularies(TRAIN.lazy(), ["a"], min_freq=4)
    message = str(err.value)
    assert "min_freq=4" in message and "'a'" in message and "3 times" in message and "lower dataset.min_freq" in message


def test_a_column_without_values_in_train_is_a_user_error_naming_it():
    frame = pl.DataFrame({"empty": pl.Series([None, None], dtype=pl.String)})
    with pytest.raises(UserError, match="'empty' has no values in the train split"):
        fit_vocabularies(frame.lazy(), ["empty"], min_freq=1)


def test_fit_numeric_uses_mean_sample_std_min_max():
    x = np.array([1.0, 2.0, 4.0, 8.0, 16.0])
    frame = pl.DataFrame({"x": [*x, None], "c": [3.0] * 6, "gone": pl.Series([None] * 6, dtype=pl.Float64)})
    fields = {f.name: f for f in fit_numeric(frame.lazy(), ["x", "c", "gone"])}
    assert fields["x"].mean == pytest.approx(x.mean())
    assert fields["x"].std == pytest.approx(x.std(ddof=1))
    assert (fields["x"].min, fields["x"].max) == (1.0, 16.0)
    assert fields["c"].std == 1.0 and fields["c"].mean == 3.0  # std 0 -> 1
    assert fields["gone"].std == 1.0 and fields["gone"].mean == 0.0  # no values at all
    assert fit_numeric(frame.lazy(), []) == []


def test_standardize_is_float32_and_fills_nulls_and_nans_with_zero():
    field = NumericField("x", mean=2.0, std=4.0, min=0.0, max=10.0)
    frame = pl.DataFrame({"x": [2.0, 10.0, None, float("nan"), -2.0]})
    out = standardize(frame.lazy(), [field]).collect()
    assert out["x"].dtype == pl.Float32
    assert out["x"].to_list() == [0.0, 2.0, 0.0, 0.0, -1.0]
    assert not any(math.isnan(v) for v in out["x"].to_list())
