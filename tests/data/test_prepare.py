"""prepare(): files and columns, disjoint splits, manifest counts, oracle AUC, train-only vocabularies and
statistics, the cache, seeded random splits, given splits and min_freq.

Expected numbers are recomputed here from the raw generated frame (or the CSV the test writes),
not read back from the code under test.
"""

from __future__ import annotations

import json
import os

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import roc_auc_score

from conftest import synthetic_config
from ssimctr.config.datasets import DatasetConfig
from ssimctr.config.schema import ScenarioConfig, SplitConfig
from ssimctr.data import synthetic
from ssimctr.data.prepare import prepare
from ssimctr.errors import UserError

SPLITS = ("train", "val", "test")
CATEGORICAL = list(synthetic.CATEGORICAL)
NUMERIC = list(synthetic.NUMERIC)


@pytest.fixture(scope="module")
def raw() -> pl.DataFrame:
    """The frame the `prepared_synthetic` fixture was prepared from, generated directly, with its row number."""
    frame = synthetic.generate(synthetic_config())
    return frame.with_row_index("row_id").with_columns(pl.col("row_id").cast(pl.Int64))


@pytest.fixture(scope="module")
def parts(prepared_synthetic) -> dict[str, pl.DataFrame]:
    return {s: pl.read_parquet(prepared_synthetic.split_path(s)) for s in SPLITS}


@pytest.fixture(scope="module")
def joined(parts, raw) -> dict[str, pl.DataFrame]:
    """Each split's prepared rows next to their raw values (raw columns suffixed `_raw`)."""
    renamed = raw.rename({c: f"{c}_raw" for c in raw.columns if c != "row_id"})
    return {s: part.join(renamed, on="row_id", how="left") for s, part in parts.items()}


def _rows(path, header: str, rows: list[str]) -> str:
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return str(path)


# ---------------------------------------------------------------- files, columns, splits


def test_the_folder_holds_a_shard_folder_per_split_the_feature_map_manifest_and_vocabularies(prepared_synthetic):
    path = prepared_synthetic.path
    for name in SPLITS:
        assert sorted(p.name for p in (path / name).iterdir()) == ["00000000.parquet"], name
    for name in ("feature_map.json", "manifest.json"):
        assert (path / name).is_file(), name
    assert sorted(p.stem for p in (path / "vocab").glob("*.parquet")) == sorted(CATEGORICAL)
    assert not list(path.parent.glob("*.tmp-*"))  # no staging folder left behind
    assert json.loads((path / "manifest.json").read_text()) == prepared_synthetic.manifest


def test_columns_and_dtypes(parts):
    expected = {
        "row_id": pl.Int64,
        "scenario": pl.Int32,
        "label": pl.Int8,
        **{c: pl.Int32 for c in CATEGORICAL},
        **{c: pl.Float32 for c in NUMERIC},
        "title": pl.String,
        "ts": pl.Int64,
        "user_key": pl.Int64,  # the raw value's identity, for cold start
        "item_key": pl.Int64,
    }
    for name, part in parts.items():
        assert dict(part.schema) == expected, name
        assert part.null_count().row(0) == (0,) * part.width, name


def test_row_ids_are_disjoint_across_splits_and_cover_every_row(parts, raw):
    ids = [set(part["row_id"].to_list()) for part in parts.values()]
    assert sum(len(i) for i in ids) == sum(part.height for part in parts.values())  # no duplicate within a split
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert set().union(*ids) == set(range(raw.height))


def test_time_split_keeps_time_order_and_default_fractions(parts, raw):
    assert parts["train"]["ts"].max() <= parts["val"]["ts"].min()
    assert parts["val"]["ts"].max() <= parts["test"]["ts"].min()
    for name, share in zip(SPLITS, (0.8, 0.1, 0.1)):
        assert parts[name].height / raw.height == pytest.approx(share, abs=0.01), name


def test_prepared_rows_carry_the_raw_label_scenario_time_and_text(joined, prepared_synthetic):
    names = list(prepared_synthetic.feature_map.scenario_names)
    assert names == ["s0", "s1", "s2"]
    for name, part in joined.items():
        assert part["label"].cast(pl.Int64).equals(part["click_raw"].cast(pl.Int64), check_names=False), name
        assert [names[k] for k in part["scenario"].to_list()] == part["scenario_raw"].to_list(), name
        assert part["ts"].equals(part["timestamp_raw"], check_names=False), name
        assert part["title"].equals(part["title_raw"], check_names=False), name


def test_manifest_counts_per_split_and_scenario_equal_the_parquet(prepared_synthetic, parts):
    manifest = prepared_synthetic.manifest
    names = prepared_synthetic.feature_map.scenario_names
    assert manifest["scenarios"] == list(names)
    assert manifest["dropped"] == {}
    for split, part in parts.items():
        entry = manifest["splits"][split]
        assert entry["rows"] == part.height
        assert entry["positives"] == int(part["label"].cast(pl.Int64).sum())
        for k, name in enumerate(names):
            rows = part.filter(pl.col("scenario") == k)
            assert entry["scenarios"][name] == {
                "rows": rows.height,
                "positives": int(rows["label"].cast(pl.Int64).sum()),
            }, (split, name)


def test_oracle_auc_equals_sklearn_on_the_raw_click_probabilities(prepared_synthetic, parts, raw):
    oracle = prepared_synthetic.manifest["oracle_auc"]
    assert set(oracle) == set(SPLITS)
    for split, part in parts.items():
        rows = raw.filter(pl.col("row_id").is_in(part["row_id"].implode()))
        assert rows.height == part.height
        expected = {"overall": roc_auc_score(rows["click"].to_numpy(), rows["click_prob"].to_numpy())}
        for name in ("s0", "s1", "s2"):
            group = rows.filter(pl.col("scenario") == name)
            expected[name] = roc_auc_score(group["click"].to_numpy(), group["click_prob"].to_numpy())
        assert set(oracle[split]) == set(expected), split
        for key, value in expected.items():
            assert oracle[split][key] == pytest.approx(value, abs=1e-12), (split, key)
            assert 0.6 < value < 0.95


# ---------------------------------------------------------------- vocabularies and numeric statistics


def test_vocab_sizes_are_distinct_train_values_plus_one(prepared_synthetic, raw, parts):
    train_raw = raw.filter(pl.col("row_id").is_in(parts["train"]["row_id"].implode()))
    sizes = {f.name: f.vocab_size for f in prepared_synthetic.feature_map.categorical}
    assert list(sizes) == CATEGORICAL
    for column in CATEGORICAL:
        assert sizes[column] == train_raw[column].n_unique() + 1, column
        encoded = parts["train"][column]
        assert encoded.min() >= 1 and encoded.max() == sizes[column] - 1, column  # min_freq=1: no OOV in train


def test_encoding_follows_the_stored_vocabulary_in_every_split(prepared_synthetic, joined):
    for column in ("user_id", "user_age", "hour"):
        vocab = pl.read_parquet(prepared_synthetic.path / "vocab" / f"{column}.parquet")
        index_of = dict(zip(vocab["value"].to_list(), vocab["index"].to_list()))
        assert sorted(index_of.values()) == list(range(1, len(index_of) + 1))
        for split, part in joined.items():
            expected = [index_of.get(v, 0) for v in part[f"{column}_raw"].to_list()]
            assert part[column].to_list() == expected, (column, split)


def test_a_value_seen_only_in_val_or_test_encodes_to_zero(joined):
    train_users = set(joined["train"]["user_id_raw"].to_list())
    for split in ("val", "test"):
        part = joined[split]
        unseen = part.filter(~pl.col("user_id_raw").is_in(list(train_users)))
        seen = part.filter(pl.col("user_id_raw").is_in(list(train_users)))
        assert unseen.height > 0, f"the fixture should have users first seen in {split}"
        assert unseen["user_id"].to_list() == [0] * unseen.height
        assert (seen["user_id"] > 0).all()


def test_numeric_fields_are_standardized_with_train_statistics(prepared_synthetic, joined):
    fields = {f.name: f for f in prepared_synthetic.feature_map.numeric}
    assert list(fields) == NUMERIC
    for column in NUMERIC:
        train_raw = joined["train"][f"{column}_raw"].to_numpy()
        field = fields[column]
        assert field.mean == pytest.approx(train_raw.mean(), rel=1e-12)
        assert field.std == pytest.approx(train_raw.std(ddof=1), rel=1e-12)
        assert (field.min, field.max) == (train_raw.min(), train_raw.max())
        for part in joined.values():
            expected = (part[f"{column}_raw"].to_numpy() - train_raw.mean()) / train_raw.std(ddof=1)
            np.testing.assert_allclose(part[column].to_numpy(), expected, rtol=1e-5, atol=1e-5)
        train = joined["train"][column].to_numpy().astype(np.float64)
        assert abs(train.mean()) < 1e-5 and train.std(ddof=1) == pytest.approx(1.0, abs=1e-5)
        assert abs(joined["val"][column].to_numpy().mean()) > 1e-4  # not fitted on val


# ---------------------------------------------------------------- cache


def test_a_second_prepare_is_a_cache_hit_that_rewrites_nothing(tmp_path):
    config, scenario, split = (
        synthetic_config(rows=3_000, users=300, items=100),
        ScenarioConfig(kind="column", column="scenario"),
        SplitConfig(kind="time"),
    )
    first = prepare(config, scenario, split, tmp_path)
    files = sorted(p for p in first.path.rglob("*") if p.is_file())
    mtimes = {p: p.stat().st_mtime_ns for p in files}
    second = prepare(config, scenario, split, tmp_path)
    assert (first.cache_hit, second.cache_hit) == (False, True)
    assert second.path == first.path
    assert sorted(p for p in second.path.rglob("*") if p.is_file()) == files
    assert {p: p.stat().st_mtime_ns for p in files} == mtimes
    assert second.manifest == first.manifest and second.feature_map == first.feature_map
    assert len(list(tmp_path.iterdir())) == 1


@pytest.mark.parametrize("change", ["min_freq", "fractions", "scenario", "generator"])
def test_changing_a_config_key_is_a_cache_miss(tmp_path, change):
    config, scenario, split = (
        synthetic_config(rows=3_000, users=300, items=100),
        ScenarioConfig(kind="column", column="scenario"),
        SplitConfig(kind="time"),
    )
    first = prepare(config, scenario, split, tmp_path)
    if change == "min_freq":
        config = synthetic_config(rows=3_000, users=300, items=100, min_freq=2)
    elif change == "fractions":
        split = SplitConfig(kind="time", fractions=[0.7, 0.2, 0.1])
    elif change == "scenario":
        scenario = ScenarioConfig(kind="top_k", column="scenario", top_k=2)
    else:
        config = synthetic_config(rows=3_000, users=300, items=100, generator_seed=8)
    second = prepare(config, scenario, split, tmp_path)
    assert not second.cache_hit and second.path != first.path
    assert first.path.is_dir()  # the other preparation stays cached
    assert prepare(config, scenario, split, tmp_path).cache_hit


def test_touching_the_source_file_is_a_cache_miss(tmp_path):
    path = tmp_path / "data.csv"
    _rows(path, "y,s,c", [f"{i % 2},{'ab'[i % 3 == 0]},{i % 7}" for i in range(60)])
    args = (
        DatasetConfig(name="t", path=str(path), label="y", scenario="s", categorical=["c"]),
        ScenarioConfig(kind="column", column="s"),
        SplitConfig(kind="random"),
        tmp_path / "cache",
    )
    first = prepare(*args)
    assert prepare(*args).cache_hit
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    second = prepare(*args)
    assert not second.cache_hit and second.path != first.path
    assert second.manifest["source"] != first.manifest["source"]
    assert prepare(*args).cache_hit


# ---------------------------------------------------------------- random split


def _random_split(tmp_path, seed: int, fractions=(0.6, 0.25, 0.15), name="cache"):
    config = synthetic_config(rows=6_000, users=500, items=200)
    data = prepare(
        config,
        ScenarioConfig(kind="column", column="scenario"),
        SplitConfig(kind="random", fractions=list(fractions), seed=seed),
        tmp_path / name,
    )
    return data, {s: set(pl.read_parquet(data.split_path(s), columns=["row_id"])["row_id"].to_list()) for s in SPLITS}


def test_random_split_is_seeded_and_respects_the_fractions(tmp_path):
    data, one = _random_split(tmp_path, seed=11)
    again, same = _random_split(tmp_path, seed=11, name="other-cache")  # rebuilt, not a cache hit
    assert not again.cache_hit and same == one
    _, other = _random_split(tmp_path, seed=12)
    assert other != one and other["train"] != one["train"]
    assert set().union(*one.values()) == set(range(6_000))
    assert not (one["train"] & one["val"]) and not (one["val"] & one["test"]) and not (one["train"] & one["test"])
    for name, share in zip(SPLITS, (0.6, 0.25, 0.15)):
        assert len(one[name]) / 6_000 == pytest.approx(share, abs=0.03), name
        assert data.manifest["splits"][name]["rows"] == len(one[name])
    # the draw is not in time order: every split spans most of the 30 days
    ts = pl.read_parquet(data.split_path("test"))["ts"]
    assert ts.max() - ts.min() > 25 * 86_400


# ---------------------------------------------------------------- given split and min_freq


@pytest.fixture
def given_files(tmp_path):
    train = ["1,a,u1,1.0", "0,a,u1,2.0", "1,b,u2,3.0", "0,b,u2,4.0", "0,a,u2,5.0", "1,b,u3,6.0", "0,a,u4,7.0"]
    val = ["1,a,u1,1.5", "0,b,u9,2.5", "0,b,u3,3.5"]
    test = ["0,a,u2,0.5", "1,b,u8,9.5", "1,a,u4,8.5", "0,b,u1,4.5"]
    header = "click,area,user,price"
    return {
        "path": _rows(tmp_path / "train.csv", header, train),
        "val_path": _rows(tmp_path / "val.csv", header, val),
        "test_path": _rows(tmp_path / "test.csv", header, test),
    }


def _given(given_files, tmp_path, **overrides):
    values = dict(name="given", label="click", scenario="area", categorical=["user"], numeric=["price"], **given_files)
    values.update(overrides)
    return prepare(
        DatasetConfig(**values),
        ScenarioConfig(kind="column", column="area"),
        SplitConfig(kind="given"),
        tmp_path / "cache",
    )


def test_given_split_takes_each_file_as_its_split(given_files, tmp_path):
    data = _given(given_files, tmp_path)
    parts = {s: pl.read_parquet(data.split_path(s)) for s in SPLITS}
    assert {s: p.height for s, p in parts.items()} == {"train": 7, "val": 3, "test": 4}
    assert parts["train"]["label"].to_list() == [1, 0, 1, 0, 0, 1, 0]
    assert parts["val"]["label"].to_list() == [1, 0, 0]
    assert parts["test"]["label"].to_list() == [0, 1, 1, 0]
    ids = [p["row_id"].to_list() for p in parts.values()]
    assert sorted(sum(ids, [])) == list(range(14))
    assert data.manifest["splits"]["test"]["scenarios"] == {
        "a": {"rows": 2, "positives": 1},
        "b": {"rows": 2, "positives": 1},
    }
    # vocab from train only: u2 (3) > u1 (2) > u3 (1) = u4 (1); u8 and u9 appear only in val/test
    assert data.feature_map.categorical[0].vocab_size == 5
    assert parts["train"]["user"].to_list() == [2, 2, 1, 1, 1, 3, 4]
    assert parts["val"]["user"].to_list() == [2, 0, 3]
    assert parts["test"]["user"].to_list() == [1, 0, 4, 2]
    # price standardized with the train mean 4 and sample std of 1..7
    std = float(np.std(np.arange(1.0, 8.0), ddof=1))
    np.testing.assert_allclose(parts["val"]["price"].to_numpy(), (np.array([1.5, 2.5, 3.5]) - 4.0) / std, rtol=1e-6)


def test_given_files_may_order_their_columns_differently(given_files, tmp_path):
    lines = open(given_files["val_path"]).read().splitlines()
    reordered = [",".join(reversed(line.split(","))) for line in lines]  # price,user,area,click
    _rows(tmp_path / "val.csv", reordered[0], reordered[1:])
    data = _given(given_files, tmp_path)
    val = pl.read_parquet(data.split_path("val"))
    assert val["label"].to_list() == [1, 0, 0] and val["user"].to_list() == [2, 0, 3]
    assert [data.feature_map.scenario_names[k] for k in val["scenario"].to_list()] == ["a", "b", "b"]


def test_min_freq_2_maps_train_singletons_to_zero(given_files, tmp_path):
    data = _given(given_files, tmp_path, min_freq=2)
    parts = {s: pl.read_parquet(data.split_path(s)) for s in SPLITS}
    assert data.feature_map.categorical[0].vocab_size == 3  # u2, u1 and OOV
    vocab = pl.read_parquet(data.path / "vocab" / "user.parquet")
    assert dict(zip(vocab["value"].to_list(), vocab["index"].to_list())) == {"u2": 1, "u1": 2}
    assert parts["train"]["user"].to_list() == [2, 2, 1, 1, 1, 0, 0]  # u3 and u4 were seen once
    assert parts["val"]["user"].to_list() == [2, 0, 0]
    assert parts["test"]["user"].to_list() == [1, 0, 0, 2]


def test_splits_are_written_as_shards_of_at_most_shard_rows_rows(prepared_synthetic, tmp_path):
    sharded = prepare(
        synthetic_config(shard_rows=4000),
        ScenarioConfig(kind="column", column="scenario"),
        SplitConfig(kind="time"),
        tmp_path,
    )
    for name in SPLITS:
        shards = sorted((sharded.path / name).glob("*.parquet"))
        sizes = [pl.scan_parquet(shard).select(pl.len()).collect().item() for shard in shards]
        assert len(shards) == -(-sharded.manifest["splits"][name]["rows"] // 4000)
        assert max(sizes) <= 4000
        whole = pl.read_parquet(prepared_synthetic.split_path(name))
        assert pl.read_parquet(shards).equals(whole)  # same rows, same order as one shard


def test_a_shard_size_below_one_row_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="dataset.shard_rows=0"):
        prepare(
            synthetic_config(shard_rows=0),
            ScenarioConfig(kind="column", column="scenario"),
            SplitConfig(kind="time"),
            tmp_path,
        )


def test_entity_keys_identify_raw_values_across_splits(parts, raw):
    """user_key / item_key are one stable hash per raw user / item value, the same in every split."""
    prepared = pl.concat(list(parts.values())).sort("row_id")
    joined = prepared.join(raw.select("row_id", pl.col("user_id").alias("raw_user")), on="row_id")
    assert joined.group_by("raw_user").agg(pl.col("user_key").n_unique())["user_key"].max() == 1
    assert joined.group_by("user_key").agg(pl.col("raw_user").n_unique())["raw_user"].max() == 1
