"""prepare() produces the prepared data of the reference preparation (that of commit 6f9fa80, before preparation
was cut to fewer passes over the data): every split's rows in their order, the shards, the vocabularies, the
feature map and the manifest's counts, pinned as digests for awkward inputs (missing labels, scenarios, times and
values, min_freq, several shards, text, oracle, truth, image vectors, each split rule and scenario kind,
CSV and parquet, given files).

A digest changes when any value, dtype, column, row order or shard boundary changes. When a change of the
prepared data is intended, say so in the commit and pin the new digests (`digests(data)` prints them).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from ssimctr.config.datasets import DatasetConfig, VectorFileConfig
from ssimctr.config.schema import ScenarioConfig, SplitConfig
from ssimctr.data.prepare import PreparedDataset, prepare
from ssimctr.features import vocab

SPLITS = ("train", "val", "test")
MANIFEST_KEYS = ("splits", "dropped", "scenarios", "cold", "oracle_auc", "vectors_missing")


def awkward_frame(rows: int, seed: int) -> pl.DataFrame:
    """Seeded rows with every kind of gap a preparation counts or fills: missing labels, scenarios, times,
    categorical and numeric values (null and NaN), rare values that min_freq drops, empty texts."""
    rng = np.random.default_rng(seed)

    def holes(values: list, share: float) -> list:
        return [None if rng.random() < share else v for v in values]

    users = rng.zipf(1.6, rows) % 400
    items = rng.integers(0, 150, rows)
    price = np.round(np.exp(rng.normal(3, 1, rows)), 2)
    price[rng.random(rows) < 0.02] = np.nan
    prob = rng.random(rows)
    words = ["bako", "zeti", "mofu", "lira", "dosa", "kine"]
    return pl.DataFrame(
        {
            "click": holes((rng.random(rows) < prob).astype(int).tolist(), 0.01),
            "area": holes(
                rng.choice(["north", "south", "east", "west"], rows, p=[0.5, 0.3, 0.15, 0.05]).tolist(), 0.01
            ),
            "user": holes([f"u{u}" for u in users], 0.02),
            "item": items.tolist(),
            "city": holes(rng.integers(1, 6, rows).tolist(), 0.05),
            "price": holes(price.tolist(), 0.03),
            "age": rng.integers(18, 70, rows).tolist(),
            "rating": rng.integers(1, 6, rows).tolist(),
            "title": holes([" ".join(rng.choice(words, 3)) for _ in range(rows)], 0.1),
            "ts": holes((1_700_000_000 + rng.integers(0, 30 * 86_400, rows)).tolist(), 0.01),
            "prob": prob.tolist(),
            "truth": rng.integers(0, 2, rows).tolist(),
        }
    )


def digests(data: PreparedDataset) -> dict[str, str]:
    """One short digest per part of a prepared dataset: each split (shard names, schema, rows in order),
    the vocabularies, the feature map, the manifest's counts."""

    def digest(value) -> str:
        return hashlib.sha256(repr(value).encode()).hexdigest()[:16]

    result = {}
    for split in SPLITS:
        shards = sorted(data.split_path(split).iterdir())
        frames = [pl.read_parquet(shard) for shard in shards]
        result[split] = digest(
            [(shard.name, list(frame.schema.items()), frame.rows()) for shard, frame in zip(shards, frames)]
        )
    vocab = sorted((data.path / "vocab").iterdir())
    result["vocab"] = digest([(file.name, pl.read_parquet(file).rows()) for file in vocab])
    result["feature_map"] = digest((data.path / "feature_map.json").read_text())
    result["manifest"] = digest(json.dumps({k: data.manifest[k] for k in MANIFEST_KEYS if k in data.manifest}))
    return result


def _csv(frame: pl.DataFrame, path: Path) -> str:
    frame.write_csv(path)
    return str(path)


def csv_time_fractions(tmp_path: Path) -> PreparedDataset:
    """CSV, time split by fractions, min_freq 2, shards of 700 rows, text, oracle, truth, user and item."""
    dataset = DatasetConfig(
        name="awkward",
        path=_csv(awkward_frame(3000, 1), tmp_path / "rows.csv"),
        label="click",
        scenario="area",
        categorical=["city", "age"],
        numeric=["price"],
        text=["title"],
        time="ts",
        user="user",
        item="item",
        min_freq=2,
        shard_rows=700,
        oracle="prob",
        truth="truth",
    )
    return prepare(dataset, ScenarioConfig(kind="column", column="area"), SplitConfig(kind="time"), tmp_path / "c")


def csv_random_mapping(tmp_path: Path) -> PreparedDataset:
    """CSV with date strings and a rating label cut at 4, random split, scenario mapping (west dropped), vectors."""
    frame = awkward_frame(2500, 2).with_columns(
        pl.from_epoch("ts", time_unit="s").dt.strftime("%Y-%m-%d %H:%M:%S").alias("ts")
    )
    items = list(range(0, 150, 2))
    pl.DataFrame({"item": items, "vec": [[float(i), float(i % 7)] for i in items]}).write_parquet(
        tmp_path / "v.parquet"
    )
    dataset = DatasetConfig(
        name="mapped",
        path=_csv(frame, tmp_path / "rows.csv"),
        label="rating",
        label_threshold=4,
        scenario="area",
        categorical=["city", "user"],
        numeric=["price", "age"],
        time="ts",
        time_format="%Y-%m-%d %H:%M:%S",
        vectors=[VectorFileConfig(path=str(tmp_path / "v.parquet"), key="item")],
    )
    scenario = ScenarioConfig(kind="mapping", column="area", mapping={"north": "n", "south": "s", "east": "s"})
    return prepare(dataset, scenario, SplitConfig(kind="random", fractions=[0.6, 0.3, 0.1], seed=5), tmp_path / "c")


def parquet_cutoffs_bins(tmp_path: Path) -> PreparedDataset:
    """A folder of two parquet files, time split at cutoffs, scenarios from age bins."""
    frame = awkward_frame(2000, 3)
    (tmp_path / "parts").mkdir()
    frame.head(1200).write_parquet(tmp_path / "parts" / "a.parquet")
    frame.tail(800).write_parquet(tmp_path / "parts" / "b.parquet")
    dataset = DatasetConfig(
        name="binned",
        path=str(tmp_path / "parts"),
        label="click",
        scenario="age",
        categorical=["area", "item", "city"],
        numeric=["price"],
        time="ts",
        user="user",
    )
    scenario = ScenarioConfig(kind="bins", column="age", bins=[30, 50])
    split = SplitConfig(kind="time", cutoffs=["1701500000", "2023-12-10"])
    return prepare(dataset, scenario, split, tmp_path / "c")


def given_top_k(tmp_path: Path) -> PreparedDataset:
    """split=given (three CSV files), scenarios: the top 2 areas, the rest merged into 'other'."""
    frame = awkward_frame(2400, 4)
    paths = {}
    for name, part in zip(("path", "val_path", "test_path"), (frame.head(1600), frame[1600:2000], frame.tail(400))):
        paths[name] = _csv(part, tmp_path / f"{name}.csv")
    dataset = DatasetConfig(
        name="given",
        label="click",
        scenario="area",
        categorical=["user", "item", "city"],
        numeric=["price", "age"],
        text=["title"],
        item="item",
        **paths,
    )
    scenario = ScenarioConfig(kind="top_k", column="area", top_k=2)
    return prepare(dataset, scenario, SplitConfig(kind="given"), tmp_path / "c")


PINNED = {
    csv_time_fractions: {
        "train": "5b0e913e951a4107",
        "val": "0d942e38585e9b25",
        "test": "ae515b65972ab798",
        "vocab": "b9174dfd0f7d2256",
        "feature_map": "01aeec5196d10922",
        "manifest": "6ef6987a0f42f509",
    },
    csv_random_mapping: {
        "train": "ccae95ac6bca4be0",
        "val": "8fc59ebeedc3ce49",
        "test": "efaf578809322c27",
        "vocab": "af18f58cc48fd498",
        "feature_map": "fa8165c07f6497d3",
        "manifest": "d3b29c7c895fb1cb",
    },
    parquet_cutoffs_bins: {
        "train": "fac650e23bb6d0de",
        "val": "aaadb186f0c70fe8",
        "test": "1d19c9489f1c198c",
        "vocab": "255bbcea120cd007",
        "feature_map": "8f982f814b2dba2e",
        "manifest": "e00e31a03a31385e",
    },
    given_top_k: {
        "train": "1b88da31a2066631",
        "val": "e1c198bac7c68fcb",
        "test": "35ed28fea66bb5fc",
        "vocab": "07b2e5002968faac",
        "feature_map": "ab7a1e5065da82b5",
        "manifest": "2072c82471e4a563",
    },
}


@pytest.mark.parametrize("case", PINNED, ids=lambda case: case.__name__)
def test_prepared_data_equals_the_reference(case, tmp_path):
    data = case(tmp_path)
    assert digests(data) == PINNED[case]


def test_a_join_encodes_as_the_replacement_map_does(tmp_path, monkeypatch):
    """Large vocabularies are applied by a join, small ones by a replacement map: with every vocabulary taken as
    large, the prepared data is the reference's still."""
    monkeypatch.setattr(vocab, "SMALL_VOCABULARY", 0)
    data = csv_time_fractions(tmp_path)
    assert digests(data) == PINNED[csv_time_fractions]
