"""The real data samples in ../shared/data: scenarios, rows and positives per scenario as listed in
shared/data/PROVENANCE.md (counted there with Python's csv module, independently of this code)."""

from __future__ import annotations

import polars as pl
import pytest

from conftest import SHARED_DATA, per_split_counts, scenario_totals
from ssimctr.config.datasets import DatasetConfig
from ssimctr.config.schema import ScenarioConfig, SplitConfig
from ssimctr.data.prepare import prepare
from ssimctr.errors import UserError

pytestmark = pytest.mark.skipif(
    not SHARED_DATA.is_dir(), reason=f"the shared data samples are not here ({SHARED_DATA} is absent)"
)

SPLITS = ("train", "val", "test")


def _prepare(tmp_path, spec: ScenarioConfig, split: SplitConfig, **dataset):
    data = prepare(DatasetConfig(**dataset), spec, split, tmp_path / "cache")
    parts = {s: pl.read_parquet(data.split_path(s)) for s in SPLITS}
    return data, parts


def _check_consistent(data, parts, total_rows: int) -> None:
    """Nothing dropped, row ids cover the file(s), the manifest matches the parquet."""
    assert data.manifest["dropped"] == {}
    ids = pl.concat([p["row_id"] for p in parts.values()])
    assert ids.n_unique() == ids.len() == total_rows and ids.min() == 0 and ids.max() == total_rows - 1
    for split, part in parts.items():
        assert data.manifest["splits"][split]["rows"] == part.height
        assert data.manifest["splits"][split]["positives"] == int(part["label"].cast(pl.Int64).sum())
        for field in data.feature_map.categorical:
            assert part[field.name].max() < field.vocab_size


def test_douban_three_domains(tmp_path):
    data, parts = _prepare(
        tmp_path,
        ScenarioConfig(kind="column", column="domain"),
        SplitConfig(kind="random"),
        name="douban",
        path=str(SHARED_DATA / "douban" / "douban_sample.csv"),
        label="rating",
        scenario="domain",
        categorical=["user_id", "item_id", "living_place"],
    )
    assert data.feature_map.scenario_names == ("book", "movie", "music")
    assert scenario_totals(data) == {"movie": (2299, 1415), "book": (364, 259), "music": (337, 262)}
    _check_consistent(data, parts, 3000)
    assert parts["train"].height / 3000 == pytest.approx(0.8, abs=0.03)
    # living_place is Chinese text: a real vocabulary, not one OOV bucket
    assert {f.name: f.vocab_size for f in data.feature_map.categorical}["living_place"] > 10


def test_douban_time_split_on_the_join_date(tmp_path):
    data, parts = _prepare(
        tmp_path,
        ScenarioConfig(kind="column", column="domain"),
        SplitConfig(kind="time"),
        name="douban",
        path=str(SHARED_DATA / "douban" / "douban_sample.csv"),
        label="rating",
        scenario="domain",
        categorical=["user_id", "item_id"],
        time="join_time",
    )
    assert parts["train"]["ts"].max() < parts["val"]["ts"].min() <= parts["val"]["ts"].max() < parts["test"]["ts"].min()
    assert scenario_totals(data) == {"movie": (2299, 1415), "book": (364, 259), "music": (337, 262)}
    _check_consistent(data, parts, 3000)


def test_mind_four_categories(tmp_path):
    data, parts = _prepare(
        tmp_path,
        ScenarioConfig(kind="column", column="Category"),
        SplitConfig(kind="random"),
        name="mind",
        path=str(SHARED_DATA / "mind" / "mind_sample.csv"),
        label="label",
        scenario="Category",
        categorical=["User_ID", "News_ID", "SubCategory"],
    )
    assert data.feature_map.scenario_names == ("finance", "lifestyle", "news", "sports")
    assert scenario_totals(data) == {
        "news": (3742, 163),
        "lifestyle": (1565, 60),
        "sports": (1428, 84),
        "finance": (1265, 56),
    }
    _check_consistent(data, parts, 8000)


MOVIELENS = dict(
    name="movielens",
    path=str(SHARED_DATA / "movielens" / "movielens_sample.txt"),
    label="rating",
    label_threshold=4,
    categorical=["user_id", "movie_id", "occupation", "zip"],
    time="timestamp",
)


def test_movielens_by_gender_with_binarized_rating(tmp_path):
    data, parts = _prepare(
        tmp_path,
        ScenarioConfig(kind="column", column="gender"),
        SplitConfig(kind="random"),
        scenario="gender",
        **MOVIELENS,
    )
    assert data.feature_map.scenario_names == ("F", "M")
    assert scenario_totals(data) == {"F": (46, 25), "M": (154, 88)}
    assert sum(p for _, p in scenario_totals(data).values()) == 113
    _check_consistent(data, parts, 200)


def test_movielens_by_age_bins(tmp_path):
    data, parts = _prepare(
        tmp_path,
        ScenarioConfig(kind="bins", column="age", bins=[18, 35, 50]),
        SplitConfig(kind="time"),
        scenario="age",
        **MOVIELENS,
    )
    assert data.feature_map.scenario_names == ("lt18", "18-35", "35-50", "ge50")
    # PROVENANCE: age 1: 6 (5) | 18: 36 (14) | 25: 72 (41) | 35: 36 (24) | 45: 13 (5) | 50: 25 (17) | 56: 12 (7)
    assert scenario_totals(data) == {"lt18": (6, 5), "18-35": (108, 55), "35-50": (49, 29), "ge50": (37, 24)}
    _check_consistent(data, parts, 200)
    assert parts["train"]["ts"].max() < parts["val"]["ts"].min()


def test_movielens_age_bins_with_names(tmp_path):
    data, _ = _prepare(
        tmp_path,
        ScenarioConfig(kind="bins", column="age", bins=[25, 45], names=["young", "mid", "old"]),
        SplitConfig(kind="random"),
        scenario="age",
        **MOVIELENS,
    )
    assert scenario_totals(data) == {"young": (42, 19), "mid": (108, 65), "old": (50, 29)}


TAOBAO = SHARED_DATA / "taobao-alimama"


def test_taobao_alimama_given_split_two_slots(tmp_path):
    data, parts = _prepare(
        tmp_path,
        ScenarioConfig(kind="column", column="pid"),
        SplitConfig(kind="given"),
        name="taobao",
        path=str(TAOBAO / "train_sample.csv"),
        val_path=str(TAOBAO / "valid_sample.csv"),
        test_path=str(TAOBAO / "test_sample.csv"),
        label="clk",
        scenario="pid",
        categorical=["userid", "adgroup_id", "cate_id", "brand", "pvalue_level"],
        numeric=["price"],
        time="time_stamp",
    )
    assert data.feature_map.scenario_names == ("430539_1007", "430548_1007")
    per_file = {"430548_1007": (70, 2), "430539_1007": (30, 2)}
    assert per_split_counts(data) == {"train": per_file, "val": per_file, "test": per_file}
    assert scenario_totals(data) == {"430548_1007": (210, 6), "430539_1007": (90, 6)}
    _check_consistent(data, parts, 300)
    assert [p.height for p in parts.values()] == [100, 100, 100]
    # val and test are byte-identical files: same rows, same encoding
    assert parts["val"].drop("row_id").equals(parts["test"].drop("row_id"))
    # pvalue_level has empty cells: they encode to 0, never to a vocabulary index
    raw_val = pl.read_csv(TAOBAO / "valid_sample.csv", infer_schema_length=None)
    empty = raw_val["pvalue_level"].is_null()
    assert empty.any() and (parts["val"]["pvalue_level"].filter(empty) == 0).all()


ALI = SHARED_DATA / "ali-ccp" / "scenario-wise-rec"


def test_ali_ccp_scenario_wise_rec_given_split_three_scenarios(tmp_path):
    data, parts = _prepare(
        tmp_path,
        ScenarioConfig(kind="column", column="301"),
        SplitConfig(kind="given"),
        name="aliccp",
        path=str(ALI / "ali_ccp_train_sample.csv"),
        val_path=str(ALI / "ali_ccp_val_sample.csv"),
        test_path=str(ALI / "ali_ccp_test_sample.csv"),
        label="click",
        scenario="301",
        categorical=["101", "121", "205", "206", "216"],
        numeric=["D509", "D702"],
    )
    assert data.feature_map.scenario_names == ("1", "2", "3")
    assert per_split_counts(data) == {
        "train": {"1": (69, 6), "2": (19, 1), "3": (12, 0)},
        "val": {"1": (38, 2), "2": (7, 1), "3": (5, 0)},
        "test": {"1": (39, 3), "2": (6, 2), "3": (5, 1)},
    }
    assert scenario_totals(data) == {"1": (146, 11), "2": (32, 4), "3": (22, 1)}
    _check_consistent(data, parts, 200)


def test_ali_ccp_purchase_label_per_scenario(tmp_path):
    data, _ = _prepare(
        tmp_path,
        ScenarioConfig(kind="column", column="301"),
        SplitConfig(kind="given"),
        name="aliccp",
        path=str(ALI / "ali_ccp_train_sample.csv"),
        val_path=str(ALI / "ali_ccp_val_sample.csv"),
        test_path=str(ALI / "ali_ccp_test_sample.csv"),
        label="purchase",
        scenario="301",
        categorical=["101", "205"],
    )
    assert {s: {k: v[1] for k, v in per.items()} for s, per in per_split_counts(data).items()} == {
        "train": {"1": 1, "2": 0, "3": 0},
        "val": {"1": 0, "2": 1, "3": 0},
        "test": {"1": 1, "2": 0, "3": 0},
    }


@pytest.mark.parametrize(
    "path, label, scenario",
    [
        ("kuairand/kuairand_sample.csv", "is_click", "tab"),
        ("ali-ccp/torch-rechub/ali_ccp_train_sample.csv", "click", "301"),
    ],
)
def test_single_scenario_samples_are_refused_with_the_reason(tmp_path, path, label, scenario):
    with pytest.raises(UserError) as err:
        prepare(
            DatasetConfig(name="one", path=str(SHARED_DATA / path), label=label, scenario=scenario, categorical=[]),
            ScenarioConfig(kind="column", column=scenario),
            SplitConfig(kind="random"),
            tmp_path / "cache",
        )
    message = str(err.value)
    assert f"'{scenario}'" in message and "1 scenario ('1')" in message and "at least 2" in message
