"""dataset=aliccp: the raw Ali-CCP files (\\x01\\x02\\x03 feature lists, skeleton + common features),
the processed 33-column sample (shared/data/ali-ccp/scenario-wise-rec), the shared val-carving helper."""

from __future__ import annotations

import polars as pl
import pytest
from omegaconf import OmegaConf

from conftest import SHARED_DATA, compose
from ssimctr.config.schema import ScenarioConfig, SplitConfig
from ssimctr.data.prepare import prepare
from ssimctr.data.sources.aliccp import read_aliccp
from ssimctr.data.sources.base import SPLIT_COLUMN
from ssimctr.data.sources.pools import carve_validation
from ssimctr.errors import UserError

SPLITS = ("train", "val", "test")
GIVEN = SplitConfig(kind="given")
SAMPLE = SHARED_DATA / "ali-ccp" / "scenario-wise-rec"


def config(name: str = "aliccp", *overrides: str):
    """The dataset config of conf/dataset/<name>.yaml (through Hydra, as the CLI composes it)."""
    return OmegaConf.to_object(compose(f"dataset={name}", *overrides).dataset)


def feature_list(features: list[tuple[str, str, str]]) -> str:
    return "\x01".join(f"{field}\x02{fid}\x03{value}" for field, fid, value in features)


def user(uid: str, gender: str) -> str:
    """A common-features feature list: the user fields plus a multi-valued behaviour field 109_14."""
    return feature_list(
        [
            ("101", uid, "1.0"),
            ("121", f"9{uid}", "1.0"),
            ("122", gender, "1.0"),
            ("124", "33", "1.0"),
            ("125", "44", "1.0"),
            ("126", "55", "1.0"),
            ("127", "66", "1.0"),
            ("128", "77", "1.0"),
            ("129", "88", "1.0"),
            ("109_14", f"1{uid}", "0.5"),
            ("109_14", f"2{uid}", "0.25"),
        ]
    )


def item(scenario: str, iid: str) -> str:
    """A skeleton feature list: item fields, crosses with values, and 301 (the scenario)."""
    return feature_list(
        [
            ("205", iid, "1.0"),
            ("206", "6" + iid, "1.0"),
            ("207", "7" + iid, "1.0"),
            ("216", "8" + iid, "1.0"),
            ("508", "5081", "0.69315"),
            ("509", "5091", "1.0"),
            ("702", "7021", "1.0"),
            ("853", "8531", "2.5"),
            ("301", scenario, "1.0"),
        ]
    )


# (click, purchase, common index, 301, item id); the 4th train row (click 0, purchase 1) is dropped
TRAIN = [
    (1, 0, "c1", "1", "11"),
    (0, 0, "c1", "1", "12"),
    (1, 1, "c2", "1", "11"),
    (0, 1, "c2", "2", "13"),
    (0, 0, "c3", "2", "12"),
    (1, 0, "c3", "2", "14"),
    (0, 0, "c1", "3", "13"),
    (0, 0, "c2", "3", "11"),
]
TEST = [(0, 0, "t1", "1", "12"), (1, 0, "t2", "2", "11"), (0, 0, "t1", "3", "14"), (1, 0, "t2", "3", "13")]
# (rows, clicks) per scenario by hand: train pool (train + val) and test
POOL = {"1": (3, 2), "2": (2, 1), "3": (2, 0)}
TEST_COUNTS = {"1": (1, 0), "2": (1, 1), "3": (2, 1)}


def write_raw(folder, separator: str = ","):
    folder.mkdir(parents=True, exist_ok=True)
    commons = {
        "train": {"c1": ("501", "1"), "c2": ("502", "2"), "c3": ("503", "1")},
        "test": {"t1": ("504", "2"), "t2": ("501", "1")},
    }
    for name, rows in (("train", TRAIN), ("test", TEST)):
        lines = []
        for n, (click, purchase, index, scenario, iid) in enumerate(rows):
            features = item(scenario, iid)
            lines.append(
                separator.join(
                    [f"{name}{n}", str(click), str(purchase), index, str(features.count("\x01") + 1), features]
                )
            )
        (folder / f"sample_skeleton_{name}.csv").write_text("\n".join(lines) + "\n")
        common = [",".join([index, "11", user(uid, gender)]) for index, (uid, gender) in commons[name].items()]
        (folder / f"common_features_{name}.csv").write_text("\n".join(common) + "\n")
    return folder


def counts(data) -> dict[str, dict[str, tuple[int, int]]]:
    return {
        s: {k: (v["rows"], v["positives"]) for k, v in data.manifest["splits"][s]["scenarios"].items()} for s in SPLITS
    }


def test_raw_files_join_drop_and_split(tmp_path):
    folder = write_raw(tmp_path / "aliccp")
    dataset = config("aliccp", f"dataset.path={folder}", "dataset.min_freq=1", "dataset.val_fraction=0.5")
    data = prepare(dataset, ScenarioConfig(kind="column", column="301"), GIVEN, tmp_path / "cache")
    assert data.feature_map.scenario_names == ("1", "2", "3")
    assert data.manifest["dropped"] == {"label_missing": 1}  # the click=0 & purchase=1 row
    per = counts(data)
    assert per["test"] == TEST_COUNTS
    pool = {k: tuple(a + b for a, b in zip(per["train"][k], per["val"][k])) for k in POOL}
    assert pool == POOL
    assert data.manifest["splits"]["val"]["rows"] > 0 and data.manifest["splits"]["train"]["rows"] > 0
    assert [f.name for f in data.feature_map.categorical] == list(dataset.categorical)
    assert data.feature_map.user == "101" and data.feature_map.item == "205"


def test_raw_fields_are_the_feature_ids_of_the_joined_lists(tmp_path):
    folder = write_raw(tmp_path / "aliccp")
    dataset = config("aliccp_full", f"dataset.path={folder}", "dataset.val_fraction=0.5")
    frame = read_aliccp(dataset, GIVEN).load().collect()
    assert frame.height == 12
    first = frame.row(0, named=True)
    assert first["101"] == "501" and first["122"] == "1" and first["205"] == "11" and first["301"] == "1"
    assert first["109_14"] == "2501"  # a repeated field keeps its last occurrence
    assert first["D853"] == 2.5 and first["D109_14"] == 0.25 and first["D508"] == pytest.approx(0.69315)
    assert first["210"] is None  # a field the row lacks is missing (-> OOV)
    dropped = frame.filter(pl.col("click").is_null())
    assert dropped.height == 1 and dropped["purchase"].is_null().all() and dropped["301"].to_list() == ["2"]
    assert frame.filter(pl.col(SPLIT_COLUMN) == 2).height == len(TEST)
    assert frame.filter(pl.col(SPLIT_COLUMN) == 2)["101"].to_list() == ["504", "501", "504", "501"]


def test_raw_layout_errors_name_the_file_and_the_fix(tmp_path):
    folder = write_raw(tmp_path / "ok")
    (folder / "common_features_test.csv").unlink()
    with pytest.raises(UserError, match="common_features_test.csv"):
        read_aliccp(config("aliccp", f"dataset.path={folder}"), GIVEN)
    tabs = write_raw(tmp_path / "tabs", separator="\t")
    with pytest.raises(UserError, match=r"sample_skeleton_train.csv is not an original Ali-CCP file.*6 comma"):
        read_aliccp(config("aliccp", f"dataset.path={tabs}"), GIVEN)
    with pytest.raises(UserError, match="not a folder"):
        read_aliccp(config("aliccp", f"dataset.path={folder / 'sample_skeleton_train.csv'}"), GIVEN)
    with pytest.raises(UserError, match="not Ali-CCP field ids"):
        read_aliccp(config("aliccp", f"dataset.path={tmp_path / 'tabs'}", "dataset.categorical=[user]"), GIVEN)
    with pytest.raises(UserError, match="dataset.layout=csv is not an Ali-CCP layout"):
        read_aliccp(config("aliccp", f"dataset.path={folder}", "dataset.layout=csv"), GIVEN)


def test_carve_validation_is_seeded_and_touches_only_the_pool():
    frame = pl.LazyFrame({SPLIT_COLUMN: [0] * 9000 + [2] * 1000}).with_columns(pl.col(SPLIT_COLUMN).cast(pl.Int8))
    first = carve_validation(frame, 0.1, seed=2020).collect()[SPLIT_COLUMN]
    again = carve_validation(frame, 0.1, seed=2020).collect()[SPLIT_COLUMN]
    other = carve_validation(frame, 0.1, seed=7).collect()[SPLIT_COLUMN]
    assert first.equals(again) and not first.equals(other)
    assert (first[9000:] == 2).all() and set(first[:9000].unique()) == {0, 1}
    assert (first == 1).sum() == pytest.approx(900, abs=90)


@pytest.mark.skipif(not SAMPLE.is_dir(), reason=f"the shared Ali-CCP sample is not here ({SAMPLE} is absent)")
@pytest.mark.parametrize("name", ["aliccp", "aliccp_full"])
def test_processed_sample_three_scenarios(tmp_path, name):
    paths = [
        f"dataset.{key}={SAMPLE / f'ali_ccp_{split}_sample.csv'}"
        for key, split in (("path", "train"), ("val_path", "val"), ("test_path", "test"))
    ]
    dataset = config(name, "dataset.layout=processed", "dataset.min_freq=1", *paths)
    data = prepare(dataset, ScenarioConfig(kind="column", column="301"), GIVEN, tmp_path / "cache")
    assert data.feature_map.scenario_names == ("1", "2", "3")
    assert data.manifest["dropped"] == {}
    assert counts(data) == {  # shared/data/PROVENANCE.md
        "train": {"1": (69, 6), "2": (19, 1), "3": (12, 0)},
        "val": {"1": (38, 2), "2": (7, 1), "3": (5, 0)},
        "test": {"1": (39, 3), "2": (6, 2), "3": (5, 1)},
    }
    assert len(data.feature_map.numeric) == (8 if name == "aliccp_full" else 0)


@pytest.mark.skipif(not SAMPLE.is_dir(), reason=f"the shared Ali-CCP sample is not here ({SAMPLE} is absent)")
def test_processed_layout_missing_column_and_file(tmp_path):
    paths = []
    for key, split in (("path", "train"), ("val_path", "val"), ("test_path", "test")):
        target = tmp_path / f"{split}.csv"
        pl.read_csv(SAMPLE / f"ali_ccp_{split}_sample.csv").drop("216").write_csv(target)
        paths.append(f"dataset.{key}={target}")
    with pytest.raises(UserError, match=r"dataset.categorical: column '216' is not in .*train.csv"):
        prepare(
            config("aliccp", "dataset.layout=processed", *paths),
            ScenarioConfig(kind="column", column="301"),
            GIVEN,
            tmp_path / "cache",
        )
    with pytest.raises(UserError, match="dataset.val_path"):
        prepare(
            config("aliccp", "dataset.layout=processed", paths[0]),
            ScenarioConfig(kind="column", column="301"),
            GIVEN,
            tmp_path / "cache",
        )
