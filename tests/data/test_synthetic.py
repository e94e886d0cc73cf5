"""The built-in synthetic generator: determinism, schema, scenario sizes and the hidden click model."""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import polars as pl
import pytest
from omegaconf import OmegaConf
from sklearn.metrics import roc_auc_score

from conftest import compose
from ssimctr.config.datasets import DatasetConfig, SyntheticConfig
from ssimctr.data import synthetic
from ssimctr.errors import UserError

EXPECTED_SCHEMA = [
    ("user_id", pl.Int64),
    ("item_id", pl.Int64),
    ("user_age", pl.Utf8),
    ("user_gender", pl.Utf8),
    ("user_city", pl.Int64),
    ("item_category", pl.Int64),
    ("item_brand", pl.Int64),
    ("hour", pl.Int64),
    ("item_price", pl.Float64),
    ("user_activity", pl.Float64),
    ("title", pl.Utf8),
    ("scenario", pl.Utf8),
    ("timestamp", pl.Int64),
    ("click", pl.Int8),
    ("click_prob", pl.Float64),
]
START = 1_704_067_200  # 2024-01-01 00:00 UTC
PINNED_SUMS = (34_107_331_575_833, 207_031_399, 51_924_763)  # timestamp, user_id, item_id sums: rows=20_000


def generate(**parameters) -> pl.DataFrame:
    """The generator's frame for SyntheticConfig's defaults with `parameters` changed."""
    return synthetic.generate(SyntheticConfig(**parameters))


@pytest.fixture(scope="module")
def frame() -> pl.DataFrame:
    return generate(rows=50_000)


def _by_scenario(frame: pl.DataFrame) -> dict[str, pl.DataFrame]:
    return {name: part for (name,), part in frame.partition_by("scenario", as_dict=True).items()}


def test_same_arguments_give_identical_frames_of_the_asked_size():
    first = generate(rows=200_000)
    assert first.height == 200_000
    assert first.equals(generate(rows=200_000))


def test_a_different_seed_gives_different_labels():
    one, other = generate(rows=20_000, generator_seed=1), generate(rows=20_000, generator_seed=2)
    assert not one["click"].equals(other["click"])
    assert not one["user_id"].equals(other["user_id"])


def test_columns_dtypes_and_order(frame):
    assert list(frame.schema.items()) == EXPECTED_SCHEMA
    assert list(synthetic.COLUMNS.items()) == EXPECTED_SCHEMA
    roles = (
        synthetic.CATEGORICAL
        + synthetic.NUMERIC
        + synthetic.TEXT
        + [synthetic.SCENARIO, synthetic.TIME, synthetic.LABEL, synthetic.ORACLE]
    )
    assert sorted(roles) == sorted(frame.columns)
    assert frame.null_count().sum_horizontal().item() == 0


@pytest.mark.parametrize("num_scenarios", [2, 3, 5])
def test_default_scenario_sizes_decrease_with_the_last_smallest(num_scenarios):
    frame = generate(rows=50_000, num_scenarios=num_scenarios, generator_seed=3)
    counts = frame["scenario"].value_counts().sort("scenario")
    assert counts["scenario"].to_list() == [f"s{k}" for k in range(num_scenarios)]
    sizes = counts["count"].to_numpy().astype(np.int64)
    assert np.all(np.diff(sizes) < 0)
    assert sizes[-1] == sizes.min() and sizes[-1] < 0.6 * sizes[-2]


@pytest.mark.parametrize("weights", [[1.0, 1.0, 2.0], [1.0, 3.0], [5, 1, 1, 3]])
def test_custom_scenario_weights_are_respected(weights):
    frame = generate(rows=50_000, num_scenarios=len(weights), scenario_weights=weights)
    counts = frame["scenario"].value_counts().sort("scenario")["count"].to_numpy()
    assert np.allclose(counts / frame.height, np.asarray(weights) / sum(weights), atol=0.01)


def test_labels_follow_click_prob_in_each_scenario(frame):
    prob = frame["click_prob"].to_numpy()
    assert np.all((prob > 0) & (prob < 1))
    assert set(frame["click"].unique().to_list()) == {0, 1}
    for name, part in _by_scenario(frame).items():
        p = part["click_prob"].mean()
        tolerance = 4 * np.sqrt(p * (1 - p) / part.height)
        assert abs(part["click"].mean() - p) < tolerance, name


@pytest.mark.parametrize(("num_scenarios", "seed"), [(3, 7), (5, 11)])
def test_oracle_auc_is_between_0_7_and_0_9_per_scenario(num_scenarios, seed):
    frame = generate(rows=50_000, num_scenarios=num_scenarios, generator_seed=seed)
    for name, part in _by_scenario(frame).items():
        auc = roc_auc_score(part["click"].to_numpy(), part["click_prob"].to_numpy())
        assert 0.7 < auc < 0.9, (name, auc)


def test_base_ctr_differs_across_scenarios_within_3_to_15_percent(frame):
    ctr = np.array([part["click_prob"].mean() for part in _by_scenario(frame).values()])
    assert np.all((ctr > 0.03) & (ctr < 0.15))
    assert ctr.max() / ctr.min() > 1.5
    assert np.min(np.diff(np.sort(ctr))) > 0.01


def test_each_user_and_item_has_fixed_attributes(frame):
    per_user = frame.group_by("user_id").agg(pl.col("user_age", "user_gender", "user_city", "user_activity").n_unique())
    per_item = frame.group_by("item_id").agg(pl.col("item_category", "item_brand", "item_price", "title").n_unique())
    assert (per_user.drop("user_id").max().row(0)) == (1, 1, 1, 1)
    assert (per_item.drop("item_id").max().row(0)) == (1, 1, 1, 1)
    assert set(frame["user_age"].unique()) <= {"18-24", "25-34", "35-44", "45-54", "55+"}
    assert set(frame["user_gender"].unique()) == {"F", "M"}
    assert set(frame["user_city"].unique()) == {1, 2, 3, 4}
    assert frame.group_by("item_brand").agg(pl.col("item_category").n_unique())["item_category"].max() == 1
    assert frame["item_category"].n_unique() > 10 and frame["item_brand"].n_unique() > 50
    assert frame["item_price"].min() > 0


def test_user_activity_is_log1p_of_the_users_row_count(frame):
    counts = frame.with_columns(rows=pl.len().over("user_id"))
    assert np.allclose(counts["user_activity"].to_numpy(), np.log1p(counts["rows"].to_numpy()))


def test_timestamps_span_the_days_unsorted_and_hour_derives_from_them():
    frame = generate(rows=20_000, days=10)
    ts = frame["timestamp"].to_numpy()
    assert ts.min() >= START and ts.max() < START + 10 * 86_400
    assert not frame["timestamp"].is_sorted()
    assert np.array_equal(frame["hour"].to_numpy(), (ts - START) // 3_600 % 24)
    assert frame["hour"].n_unique() == 24


def test_titles_have_4_to_8_distinct_words(frame):
    words = frame.unique("item_id")["title"].str.split(" ")
    assert words.list.len().min() >= 4 and words.list.len().max() <= 8
    assert words.list.len().equals(words.list.unique().list.len())


def test_titles_share_more_words_within_a_category(frame):
    items = frame.unique("item_id").sort("item_id")
    words = items.select("item_id", word=pl.col("title").str.split(" ")).explode("word")
    vocabulary = {word: index for index, word in enumerate(words["word"].unique().sort())}
    row = {item: index for index, item in enumerate(items["item_id"])}
    bag = np.zeros((items.height, len(vocabulary)), dtype=np.float32)
    bag[[row[i] for i in words["item_id"]], [vocabulary[w] for w in words["word"]]] = 1.0
    shared = bag @ bag.T
    category = items["item_category"].to_numpy()
    same = category[:, None] == category[None, :]
    np.fill_diagonal(same, False)
    different = category[:, None] != category[None, :]
    assert shared[same].mean() > 1.5 * shared[different].mean()


def test_user_and_item_popularity_is_zipf_like(frame):
    for column in ["user_id", "item_id"]:
        counts = frame[column].value_counts()["count"].to_numpy()
        assert counts.max() > 100 * np.median(counts), column


def test_scenarios_prefer_different_but_overlapping_items(frame):
    parts = _by_scenario(frame)
    top = {
        name: set(part["item_id"].value_counts().sort("count", descending=True)["item_id"][:50])
        for name, part in parts.items()
    }
    overlap = len(top["s0"] & top["s1"]) / 50
    assert 0.2 < overlap < 0.95


def test_no_newcomers_is_the_default_frame():
    default = generate(rows=20_000)
    assert SyntheticConfig().newcomers == 0.0
    assert generate(rows=20_000, newcomers=0.0).equals(default)
    # pinned: the integer columns drawn first, as before newcomers existed
    assert (default["timestamp"].sum(), default["user_id"].sum(), default["item_id"].sum()) == PINNED_SUMS


NEWCOMER_SIZE = {"rows": 200_000, "users": 20_000, "items": 5_000}
WINDOW_START = START + 27 * 86_400  # the last 3 of the 30 default days


@pytest.fixture(scope="module")
def newcomers() -> tuple[pl.DataFrame, np.ndarray, np.ndarray]:
    """A frame with 10% newcomers, and per row: whether its user / its item is a newcomer."""
    config = SyntheticConfig(**NEWCOMER_SIZE, newcomers=0.1)
    frame = synthetic.generate(config)
    user, item = frame["user_id"].to_numpy(), frame["item_id"].to_numpy()
    new_user, new_item = synthetic.newcomer_flags(config, user, item)
    assert 0.085 < new_user.mean() < 0.11 and 0.085 < new_item.mean() < 0.11
    return frame, new_user[user], new_item[item]


def test_newcomers_change_only_the_timestamps_of_their_rows(newcomers):
    frame, new_user, new_item = newcomers
    default = generate(**NEWCOMER_SIZE)
    assert frame.drop("timestamp").equals(default.drop("timestamp"))
    moved = new_user | new_item
    assert 0.05 < moved.mean() < 0.12
    ts = frame["timestamp"].to_numpy()
    assert np.array_equal(ts[~moved], default["timestamp"].to_numpy()[~moved])
    assert ts[moved].min() >= WINDOW_START and ts.max() < START + 30 * 86_400
    assert np.array_equal(frame["hour"].to_numpy(), (ts - START) // 3_600 % 24)


def test_newcomers_are_cold_with_several_rows_in_each_scenario_under_a_time_split(newcomers):
    frame, new_user, new_item = newcomers
    cutoff = np.quantile(frame["timestamp"].to_numpy(), 0.8)
    assert cutoff < WINDOW_START  # so no newcomer row is in train
    frame = frame.with_columns(train=pl.col("timestamp") < cutoff)
    for name, part in _by_scenario(frame).items():
        for column in ["user_id", "item_id"]:
            train = part.filter("train")[column].unique().implode()
            cold = part.filter(~pl.col("train") & ~pl.col(column).is_in(train))[column].value_counts()
            assert (cold["count"] >= 6).sum() >= 20, (name, column)


@pytest.mark.parametrize(("days", "window"), [(30, 3), (10, 1), (1, 1)])
def test_newcomer_rows_lie_in_the_last_tenth_of_the_days_at_least_one(days, window):
    config = SyntheticConfig(rows=20_000, users=2_000, items=500, days=days, newcomers=0.2)
    frame = synthetic.generate(config)
    user, item = frame["user_id"].to_numpy(), frame["item_id"].to_numpy()
    new_user, new_item = synthetic.newcomer_flags(config, user, item)
    ts = frame["timestamp"].to_numpy()[new_user[user] | new_item[item]]
    assert ts.size > 1_000
    assert ts.min() >= START + (days - window) * 86_400 and ts.max() < START + days * 86_400
    assert len(np.unique((ts - START) // 86_400)) == window


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"rows": 0}, "rows"),
        ({"num_scenarios": 0}, "num_scenarios"),
        ({"users": 0}, "users"),
        ({"items": 0}, "items"),
        ({"latent_dim": 0}, "latent_dim"),
        ({"days": 0}, "days"),
        ({"zipf_exponent": -1.0}, "zipf_exponent"),
        ({"shared_weight": 1.5}, "shared_weight"),
        ({"newcomers": -0.1}, "newcomers"),
        ({"newcomers": 1.0}, "newcomers"),
        ({"newcomers": float("nan")}, "newcomers"),
        ({"num_scenarios": 3, "scenario_weights": [1.0, 2.0]}, "scenario_weights"),
        ({"num_scenarios": 2, "scenario_weights": [1.0, 0.0]}, "scenario_weights"),
        ({"num_scenarios": 2, "scenario_weights": [1.0, float("nan")]}, "scenario_weights"),
    ],
)
def test_bad_arguments_are_user_errors_naming_the_argument(kwargs, argument):
    with pytest.raises(UserError, match=f"^dataset.{argument}="):  # when the config is made, before any data
        generate(**kwargs)


def test_the_synthetic_preset_takes_the_generator_defaults_of_the_schema():
    """The preset sets one generator parameter (newcomers, for the cold-start study); the rest are the schema's."""
    dataset = OmegaConf.to_object(compose("dataset=synthetic").dataset)
    generator = [f.name for f in fields(SyntheticConfig) if f.name not in {g.name for g in fields(DatasetConfig)}]
    differing = {name for name in generator if getattr(dataset, name) != getattr(SyntheticConfig(), name)}
    assert differing == {"newcomers"} and dataset.newcomers == 0.05 and SyntheticConfig().newcomers == 0.0
    assert dataset.rows == 500_000
