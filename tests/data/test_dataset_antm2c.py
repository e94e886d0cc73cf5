"""dataset=antm2c: three part files in the 37-column release layout (header line, comma, Chinese text,
quoted fields), read together; the third-party date split via split=time and split.cutoffs."""

from __future__ import annotations

import csv

import polars as pl
import pytest
from omegaconf import OmegaConf

from conftest import compose
from ssimctr.config.schema import ScenarioConfig, SplitConfig
from ssimctr.data.prepare import prepare
from ssimctr.data.sources.antm2c import COLUMNS, read_antm2c
from ssimctr.errors import UserError

SPLITS = ("train", "val", "test")
CUTOFFS = SplitConfig(kind="time", cutoffs=["2023-08-03", "2023-08-05"])

# (user, item, log_time, label, scene) per part
PARTS = [
    [
        ("u1", "i1", "2023-08-01 09:00:00", 1, "1"),
        ("u2", "i2", "2023-08-02 10:00:00", 0, "2"),
        ("u3", "i3", "2023-08-03 08:00:00", 1, "3"),
        ("u1", "i4", "2023-08-05 12:00:00", 0, "4"),
    ],
    [
        ("u2", "i1", "2023-08-01 11:00:00", 0, "1"),
        ("u4", "i3", "2023-08-02 23:59:59", 1, "3"),
        ("u3", "i2", "2023-08-04 20:00:00", 0, "2"),
        ("u4", "i4", "2023-08-06 08:00:00", 1, "4"),
    ],
    [
        ("u1", "i2", "2023-08-02 07:00:00", 1, "2"),
        ("u5", "i4", "2023-08-01 06:00:00", 0, "4"),
        ("u5", "i1", "2023-08-03 00:00:00", 1, "1"),
        ("u2", "i3", "2023-08-05 00:00:00", 1, "3"),
    ],
]
# (rows, clicks) per scene and split by hand: train < 2023-08-03 <= val < 2023-08-05 <= test
EXPECTED = {
    "train": {"1": (2, 1), "2": (2, 1), "3": (1, 1), "4": (1, 0)},
    "val": {"1": (1, 1), "2": (1, 0), "3": (1, 1), "4": (0, 0)},
    "test": {"1": (0, 0), "2": (0, 0), "3": (1, 1), "4": (2, 1)},
}
TITLES = {"i1": "支付宝红包, 天天领", "i2": "蚂蚁森林", "i3": "余额宝收益", "i4": '花呗"免息"券'}


def config(*overrides: str):
    """conf/dataset/antm2c.yaml, as the CLI composes it."""
    return OmegaConf.to_object(compose("dataset=antm2c", *overrides).dataset)


def write_parts(folder, delimiter: str = ",", header: bool = True, drop_last_column: bool = False):
    folder.mkdir(parents=True, exist_ok=True)
    for index, rows in enumerate(PARTS):
        with open(folder / f"antm2c_10m_part{index}", "w", encoding="utf-8", newline="") as stream:
            writer = csv.writer(stream, delimiter=delimiter)
            width = len(COLUMNS) - drop_last_column
            if header:
                writer.writerow(COLUMNS[:width])
            for user, item, time, label, scene in rows:
                text = [f"账单,{user}", "生活缴费", f"搜索 {item}", "红包|优惠券", TITLES[item]]
                deep = [str((sum(map(ord, user)) + k) % 5) if k % 2 else str(k % 3) for k in range(27)]
                writer.writerow([user, item, time, label, *text, scene, *deep][:width])
    return folder


def test_three_parts_four_scenes_date_split(tmp_path):
    folder = write_parts(tmp_path / "antm2c")
    data = prepare(
        config(f"dataset.path={folder}"), ScenarioConfig(kind="column", column="scene"), CUTOFFS, tmp_path / "cache"
    )
    assert data.feature_map.scenario_names == ("1", "2", "3", "4")
    assert data.manifest["dropped"] == {}
    assert {
        s: {k: (v["rows"], v["positives"]) for k, v in data.manifest["splits"][s]["scenarios"].items()} for s in SPLITS
    } == EXPECTED
    assert data.feature_map.text == (
        "bill_entity_seq",
        "service_entity_seq",
        "query_entity_seq",
        "item_entity_names",
        "item_title",
    )
    assert len(data.feature_map.categorical) == 29 and data.feature_map.time == "ts"
    titles = pl.concat([pl.read_parquet(data.split_path(s)) for s in SPLITS])["item_title"]
    assert set(titles) == set(TITLES.values())  # Chinese text with commas and quotes intact


def test_parts_read_in_order_with_names_by_position(tmp_path):
    folder = write_parts(tmp_path / "antm2c")
    frame = read_antm2c(config(f"dataset.path={folder}"), CUTOFFS).load().collect()
    assert frame.columns == COLUMNS and frame.height == 12
    assert frame["user_id"].to_list() == [row[0] for part in PARTS for row in part]
    assert frame["label"].dtype == pl.Int64 and frame["bill_entity_seq"][0] == "账单,u1"
    headless = write_parts(tmp_path / "headless", header=False)
    frame = read_antm2c(config(f"dataset.path={headless}", "dataset.has_header=false"), CUTOFFS).load().collect()
    assert frame.height == 12


def test_layout_errors_name_the_file_and_the_fix(tmp_path):
    folder = write_parts(tmp_path / "ok")
    (folder / "antm2c_10m_part1").unlink()
    with pytest.raises(UserError, match="has no antm2c_10m_part1"):
        read_antm2c(config(f"dataset.path={folder}"), CUTOFFS)
    assert (
        read_antm2c(config(f"dataset.path={folder}", "dataset.parts=[antm2c_10m_part0,antm2c_10m_part2]"), CUTOFFS)
        .load()
        .collect()
        .height
        == 8
    )
    tabs = write_parts(tmp_path / "tabs", delimiter="\t")
    with pytest.raises(UserError, match=r"antm2c_10m_part0: the first line has 1 fields .*dataset.separator='\\t'"):
        read_antm2c(config(f"dataset.path={tabs}"), CUTOFFS)
    short = write_parts(tmp_path / "short", drop_last_column=True)
    with pytest.raises(UserError, match="has 36 fields"):
        read_antm2c(config(f"dataset.path={short}"), CUTOFFS)
    tab_config = config(f"dataset.path={tabs}", "dataset.has_header=false")
    tab_config.separator = "\t"
    with pytest.raises(UserError, match="looks like a header.*has_header=true"):
        read_antm2c(tab_config, CUTOFFS)
    headless = write_parts(tmp_path / "headless", header=False)
    with pytest.raises(UserError, match="looks like data.*has_header=false"):
        read_antm2c(config(f"dataset.path={headless}"), CUTOFFS)
