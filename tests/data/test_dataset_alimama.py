"""dataset=alimama: the three raw Taobao tables (left joins, NULL brand, missing profile -> scenario 0,
SSIM's China-time cutoff) and FuxiCTR's joined sample (shared/data/taobao-alimama) with pid scenarios."""

from __future__ import annotations

import polars as pl
import pytest
from omegaconf import OmegaConf

from conftest import SHARED_DATA, compose
from ssimctr.config.schema import ScenarioConfig, SplitConfig
from ssimctr.data.prepare import prepare
from ssimctr.data.sources.alimama import read_alimama
from ssimctr.data.sources.base import SPLIT_COLUMN
from ssimctr.errors import UserError

SPLITS = ("train", "val", "test")
GIVEN = SplitConfig(kind="given")
SAMPLE = SHARED_DATA / "taobao-alimama"
CUT = 1494518400  # 2017-05-12 00:00 China time (UTC+8) = 2017-05-11 16:00 UTC
A, B = "430548_1007", "430539_1007"
HOUR, DAY = 3600, 86400

# user, time_stamp, adgroup_id, pid, clk; users 1-3 have a profile (shopping_level 3, 1, 2), user 4 none
RAW_SAMPLE = [
    (1, CUT - 3 * DAY, 10, A, 1),
    (1, CUT - 2 * DAY, 11, B, 0),
    (2, CUT - DAY, 12, A, 0),
    (2, CUT - HOUR, 10, B, 1),
    (3, CUT - 2 * HOUR, 11, A, 0),
    (4, CUT - 100, 12, A, 1),
    (4, CUT - 1, 10, B, 0),
    # test: from the cutoff on (the two rows within 8 hours would be train with a UTC cutoff)
    (1, CUT, 12, A, 0),
    (3, CUT + HOUR, 10, B, 1),
    (4, CUT + 2 * HOUR, 11, A, 1),
    (2, CUT + DAY, 11, A, 0),
]
POOL = {"0": (2, 1), "1": (2, 1), "2": (1, 0), "3": (2, 1)}  # (rows, clicks) per shopping_level
TEST = {"0": (1, 1), "1": (1, 0), "2": (1, 1), "3": (1, 0)}
POOL_PID = {B: (3, 1), A: (4, 2)}
TEST_PID = {B: (1, 1), A: (3, 1)}


def config(*overrides: str):
    """conf/dataset/alimama.yaml, as the CLI composes it."""
    return OmegaConf.to_object(compose("dataset=alimama", *overrides).dataset)


def write_raw(folder, separator: str = ","):
    folder.mkdir(parents=True, exist_ok=True)
    sample = ["user,time_stamp,adgroup_id,pid,nonclk,clk"]
    sample += [f"{u},{t},{ad},{pid},{1 - clk},{clk}" for u, t, ad, pid, clk in RAW_SAMPLE]
    ads = [
        "adgroup_id,cate_id,campaign_id,customer,brand,price",
        "10,6261,137739,1210,158849,100.0",
        "11,5443,160194,864,NULL,2.0",
        "12,4520,1000,77,9001,1.5",
    ]
    profiles = [
        "userid,cms_segid,cms_group_id,final_gender_code,age_level,pvalue_level,shopping_level,occupation,"
        "new_user_class_level ",  # the original header ends with a space
        "1,0,5,2,5,,3,0,3",
        "2,0,2,1,2,1,1,0,",
        "3,12,4,2,4,2,2,1,2",
        "5,0,3,2,3,1,3,0,1",
    ]
    for name, lines in (("raw_sample.csv", sample), ("ad_feature.csv", ads), ("user_profile.csv", profiles)):
        (folder / name).write_text("\n".join(line.replace(",", separator) for line in lines) + "\n")
    return folder


def counts(data) -> dict[str, dict[str, tuple[int, int]]]:
    return {
        s: {k: (v["rows"], v["positives"]) for k, v in data.manifest["splits"][s]["scenarios"].items()} for s in SPLITS
    }


def pool_and_test(data):
    per = counts(data)
    pool = {k: tuple(a + b for a, b in zip(per["train"][k], per["val"][k])) for k in per["train"]}
    return pool, per["test"]


@pytest.mark.parametrize(("scenario", "pool", "test"), [("shopping_level", POOL, TEST), ("pid", POOL_PID, TEST_PID)])
def test_raw_tables_ssim_protocol(tmp_path, scenario, pool, test):
    folder = write_raw(tmp_path / "taobao")
    dataset = config(
        f"dataset.path={folder}", f"dataset.scenario={scenario}", "dataset.min_freq=1", "dataset.val_fraction=0.5"
    )
    data = prepare(dataset, ScenarioConfig(kind="column", column=scenario), GIVEN, tmp_path / "cache")
    assert data.feature_map.scenario_names == tuple(sorted(pool))
    assert data.manifest["dropped"] == {}
    assert pool_and_test(data) == (pool, test)
    assert data.manifest["splits"]["val"]["rows"] > 0
    assert len(data.feature_map.categorical) == 15 and data.feature_map.time == "ts"


def test_raw_join_fills_missing_with_zero_and_buckets_price(tmp_path):
    folder = write_raw(tmp_path / "taobao")
    frame = read_alimama(config(f"dataset.path={folder}", "dataset.val_fraction=0.5"), GIVEN).load().collect()
    assert frame.height == len(RAW_SAMPLE)
    assert frame["userid"].to_list() == [u for u, *_ in RAW_SAMPLE]  # the log's order is kept
    no_profile = frame.filter(pl.col("userid") == 4)
    assert (no_profile["shopping_level"] == 0).all() and (no_profile["age_level"] == 0).all()
    assert frame.filter(pl.col("adgroup_id") == 11)["brand"].unique().to_list() == [0]  # NULL brand
    buckets = dict(frame.select("adgroup_id", "price_bucket").unique().iter_rows())
    assert buckets == {10: 21, 11: 2, 12: 1}  # floor(ln(100)^2) = 21; int(2.0); int(1.5)
    assert frame.filter(pl.col("userid") == 2)["new_user_class_level"].to_list() == [0, 0, 0]
    assert frame["context"].to_list() == [p for *_, p, _ in RAW_SAMPLE]  # pid: the non-scenario field
    assert frame.filter(pl.col(SPLIT_COLUMN) == 2)["time_stamp"].min() == CUT
    assert frame.filter(pl.col(SPLIT_COLUMN) != 2)["time_stamp"].max() == CUT - 1


def test_raw_layout_errors_name_the_file_and_the_fix(tmp_path):
    folder = write_raw(tmp_path / "ok")
    (folder / "user_profile.csv").unlink()
    with pytest.raises(UserError, match="has no user_profile.csv"):
        read_alimama(config(f"dataset.path={folder}"), GIVEN)
    semi = write_raw(tmp_path / "semi", separator=";")
    with pytest.raises(UserError, match=r"raw_sample.csv: columns .* are missing .*separator ','"):
        read_alimama(config(f"dataset.path={semi}"), GIVEN)
    assert read_alimama(config(f"dataset.path={semi}", "dataset.separator=';'"), GIVEN).load().collect().height == 11
    short = write_raw(tmp_path / "short")
    pl.read_csv(short / "ad_feature.csv").drop("price").write_csv(short / "ad_feature.csv")
    with pytest.raises(UserError, match=r"ad_feature.csv: columns \['price'\] are missing"):
        read_alimama(config(f"dataset.path={short}"), GIVEN)
    with pytest.raises(UserError, match="dataset.val_fraction"):
        read_alimama(config(f"dataset.path={folder}", "dataset.val_fraction=1.5"), GIVEN)


def test_another_split_kind_warns_that_the_ssim_split_is_ignored(tmp_path):
    folder = write_raw(tmp_path / "taobao")
    with pytest.warns(UserWarning, match="split=time.*pass split=given"):
        read_alimama(config(f"dataset.path={folder}"), SplitConfig(kind="time"))


@pytest.mark.skipif(not SAMPLE.is_dir(), reason=f"the shared Taobao sample is not here ({SAMPLE} is absent)")
def test_joined_sample_two_pid_scenarios(tmp_path):
    dataset = config(
        "dataset.layout=joined",
        "dataset.scenario=pid",
        "dataset.min_freq=1",
        f"dataset.path={SAMPLE / 'train_sample.csv'}",
        f"dataset.val_path={SAMPLE / 'valid_sample.csv'}",
        f"dataset.test_path={SAMPLE / 'test_sample.csv'}",
    )
    data = prepare(dataset, ScenarioConfig(kind="column", column="pid"), GIVEN, tmp_path / "cache")
    assert data.feature_map.scenario_names == (B, A)
    assert data.manifest["dropped"] == {}
    expected = {B: (30, 2), A: (70, 2)}  # shared/data/PROVENANCE.md, in each of the three files
    assert counts(data) == {s: expected for s in SPLITS}
    frame = read_alimama(dataset, GIVEN).load().collect()
    assert frame["time_stamp"].min() == 1494000000  # 2017-05-06 00:00:00 China time
    assert frame["context"].dtype == pl.String and frame["price_bucket"].dtype == pl.Int64


@pytest.mark.skipif(not SAMPLE.is_dir(), reason=f"the shared Taobao sample is not here ({SAMPLE} is absent)")
def test_joined_layout_needs_both_split_files(tmp_path):
    with pytest.raises(UserError, match="both dataset.val_path and dataset.test_path"):
        read_alimama(
            config(
                "dataset.layout=joined",
                f"dataset.path={SAMPLE / 'train_sample.csv'}",
                f"dataset.val_path={SAMPLE / 'valid_sample.csv'}",
            ),
            GIVEN,
        )
