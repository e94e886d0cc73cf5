"""dataset=kuairand: the release's raw layout (tiny files written here in its exact format) and
Scenario-Wise-Rec's joined layout (the real sample in shared/data, which holds one tab only)."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import polars as pl
import pytest
from omegaconf import OmegaConf

from conftest import SHARED_DATA, compose, scenario_totals
from ssimctr.config.datasets import KuaiRandConfig
from ssimctr.config.schema import ScenarioConfig, SplitConfig
from ssimctr.data.prepare import prepare
from ssimctr.errors import UserError

SPLITS = ("train", "val", "test")
DAY_MS = 86_400_000
START_MS = 1_649_347_200_000  # 2022-04-08 00:00 Beijing time
LOG_HEADER = (
    "user_id,video_id,date,hourmin,time_ms,is_click,is_like,is_follow,is_comment,is_forward,is_hate,"
    "long_view,play_time_ms,duration_ms,profile_stay_time,comment_stay_time,is_profile_enter,is_rand,tab"
)
# (user, video, day, is_click, tab); user 4 and video 99 have no features (the left joins keep the row)
STANDARD_EARLY = [
    (1, 10, 0, 1, 1),
    (2, 11, 1, 0, 1),
    (3, 12, 2, 1, 0),
    (1, 13, 3, 0, 0),
    (2, 10, 4, 0, 2),
    (3, 11, 5, 1, 4),
    (1, 12, 6, 0, 6),
    (2, 13, 7, 0, 1),
    (3, 10, 8, 1, 1),
    (1, 11, 9, 0, 3),
    (2, 12, 10, 0, 0),
    (3, 13, 11, 0, 2),
]
STANDARD_LATE = [
    (1, 10, 14, 1, 1),
    (2, 11, 15, 0, 0),
    (3, 12, 16, 1, 2),
    (1, 13, 17, 0, 4),
    (2, 10, 18, 0, 1),
    (3, 11, 19, 1, 6),
    (1, 12, 20, 0, 1),
    (2, 13, 22, 0, 4),
    (3, 10, 24, 1, 0),
    (1, 11, 26, 0, 1),
    (4, 99, 28, 0, 2),
]
RANDOM = [(1, 12, 15, 1, 1), (2, 13, 16, 0, 0)]
# rows, clicks per tab over both standard logs (counted by hand from the lists above)
PER_TAB = {"0": (5, 2), "1": (8, 3), "2": (4, 1), "3": (1, 0), "4": (3, 1), "6": (2, 1)}
USER_HEADER = (
    "user_id,user_active_degree,is_lowactive_period,is_live_streamer,is_video_author,follow_user_num,"
    "follow_user_num_range,fans_user_num,fans_user_num_range,friend_user_num,friend_user_num_range,"
    "register_days,register_days_range," + ",".join(f"onehot_feat{i}" for i in range(18))
)
USERS = [
    '1,high_active,0,0,1,5,"(0,10]",312,"[100,1k)",0,0,3624,730+,1,2,2,1153,4,0,0,31,354,3,3,2,1,0,0,0,0,0',
    '2,full_active,0,0,0,120,"(100,150]",3,"[1,10)",7,"[5,30)",200,181-365,0,6,49,7,,1,2,117,453,6,4,4,0,1,1,1,1,1',
    "3,UNKNOWN,1,0,0,0,0,0,0,0,0,20,15-30,1,0,0,0,14,33,0,0,0,0,0,0,0,0,0,0,0,0",
]
VIDEO_HEADER = (
    "video_id,author_id,video_type,upload_dt,upload_type,visible_status,video_duration,server_width,"
    "server_height,music_id,music_type,tag"
)
VIDEOS = [
    '10,441,NORMAL,2020-07-08,ShortImport,1,17200.0,720,1280,989206467,4,"12,65"',
    "11,442,AD,2022-04-01,PictureSet,1,9000.0,1080,1920,0,,9",
    '12,441,NORMAL,2021-11-30,LongImport,0,60600.0,720,1280,12,9,"1,2,3"',
    "13,9000,NORMAL,2022-03-03,ShortImport,1,,540,960,5,4,",
]
YAML_ROLES = dict(  # conf/dataset/kuairand.yaml
    label="is_click",
    scenario="tab",
    user="user_id",
    item="video_id",
    categorical=[
        "user_id",
        "video_id",
        "user_active_degree",
        "is_lowactive_period",
        "is_live_streamer",
        "is_video_author",
        "follow_user_num_range",
        "fans_user_num_range",
        "friend_user_num_range",
        "register_days_range",
        *(f"onehot_feat{i}" for i in range(18)),
        "video_type",
        "visible_status",
    ],
    numeric=[
        "duration_ms",
        "follow_user_num",
        "fans_user_num",
        "friend_user_num",
        "register_days",
        "server_width",
        "server_height",
    ],
)


def _log_lines(rows: list[tuple], is_rand: int) -> list[str]:
    lines = []
    for user, video, day, click, tab in rows:
        time_ms = START_MS + day * DAY_MS + 3_600_000 + user
        play = 9000 if click else 800
        day_text = (date(2022, 4, 8) + timedelta(days=day)).strftime("%Y%m%d")
        lines.append(
            f"{user},{video},{day_text},{1000 + user},{time_ms},{click},0,0,0,0,0,{click},{play},"
            f"17200,0,0,0,{is_rand},{tab}"
        )
    return lines


def _write(path: Path, header: str, lines: list[str]) -> None:
    path.write_text(header + "\n" + "\n".join(lines) + "\n")


def write_release(folder: Path, version: str = "1k") -> Path:
    """A tiny KuaiRand release folder: 2 standard logs, 1 random log, user and basic video features."""
    folder.mkdir(parents=True, exist_ok=True)
    _write(folder / f"log_standard_4_08_to_4_21_{version}.csv", LOG_HEADER, _log_lines(STANDARD_EARLY, 0))
    _write(folder / f"log_standard_4_22_to_5_08_{version}.csv", LOG_HEADER, _log_lines(STANDARD_LATE, 0))
    _write(folder / f"log_random_4_22_to_5_08_{version}.csv", LOG_HEADER, _log_lines(RANDOM, 1))
    _write(folder / f"user_features_{version}.csv", USER_HEADER, USERS)
    _write(folder / f"video_features_basic_{version}.csv", VIDEO_HEADER, VIDEOS)
    return folder


def seconds(day: int) -> int:
    return (START_MS + day * DAY_MS) // 1000


def _prepare(tmp_path, scenario: ScenarioConfig, split: SplitConfig, **options):
    values = dict(name="kuairand", path=str(tmp_path / "data"), time="timestamp", **YAML_ROLES)
    values.update(options)
    data = prepare(KuaiRandConfig(**values), scenario, split, tmp_path / "cache")
    return data, {s: pl.read_parquet(data.split_path(s)) for s in SPLITS}


def _per_split(data) -> dict[str, dict[str, tuple[int, int]]]:
    return {
        s: {
            name: (v["rows"], v["positives"])
            for name, v in data.manifest["splits"][s]["scenarios"].items()
            if v["rows"]
        }
        for s in SPLITS
    }


def test_raw_logs_joined_with_features_and_split_by_time(tmp_path):
    write_release(tmp_path / "data")
    data, parts = _prepare(
        tmp_path,
        ScenarioConfig(kind="column", column="tab"),
        SplitConfig(kind="time", cutoffs=[str(seconds(20)), str(seconds(25))]),
    )
    assert data.feature_map.scenario_names == ("0", "1", "2", "3", "4", "6")
    assert scenario_totals(data) == PER_TAB
    assert data.manifest["dropped"] == {}
    # train: days 0-19 (18 rows), val: days 20-24 (3 rows), test: days 26 and 28 (2 rows)
    assert _per_split(data) == {
        "train": {"0": (4, 1), "1": (6, 3), "2": (3, 1), "3": (1, 0), "4": (2, 1), "6": (2, 1)},
        "val": {"0": (1, 1), "1": (1, 0), "4": (1, 0)},
        "test": {"1": (1, 0), "2": (1, 0)},
    }
    # time_ms (milliseconds) became unix seconds
    assert parts["train"]["ts"].min() == (START_MS + 3_600_000 + 1) // 1000
    assert parts["train"]["ts"].max() < seconds(20) <= parts["val"]["ts"].min()
    # the row of user 4 / video 99 has no user or video features: kept, its features encode to 0
    orphan = parts["test"].filter(pl.col("scenario") == data.feature_map.scenario_names.index("2"))
    assert orphan.height == 1 and orphan["user_active_degree"][0] == 0 and orphan["video_type"][0] == 0
    # features from both joined tables reached the train split: "(0,10]" and "AD" are vocabulary values
    vocab = {f.name: f.vocab_size for f in data.feature_map.categorical}
    assert vocab["follow_user_num_range"] == 4 and vocab["video_type"] == 3 and vocab["user_active_degree"] == 4


def test_random_log_is_added_on_request(tmp_path):
    write_release(tmp_path / "data")
    data, _ = _prepare(
        tmp_path, ScenarioConfig(kind="column", column="tab"), SplitConfig(kind="random"), include_random=True
    )
    assert scenario_totals(data) == {**PER_TAB, "0": (6, 2), "1": (9, 4)}


@pytest.mark.parametrize(
    "scenario, expected, dropped",
    [
        (
            ScenarioConfig(kind="top_k", column="tab", top_k=5, rest="drop"),
            {k: v for k, v in PER_TAB.items() if k != "3"},
            {"scenario_outside_top_k": 1},
        ),
        (
            ScenarioConfig(kind="top_k", column="tab", top_k=5, rest="merge"),
            {**{k: v for k, v in PER_TAB.items() if k != "3"}, "other": (1, 0)},
            {},
        ),
        (
            ScenarioConfig(
                kind="mapping", column="tab", mapping={0: "tab0", 1: "tab1", 2: "tab2", 4: "tab4", 6: "tab6"}
            ),
            {f"tab{k}": v for k, v in PER_TAB.items() if k != "3"},
            {"scenario_unmapped": 1},
        ),
    ],
)
def test_scenario_wise_rec_five_tabs(tmp_path, scenario, expected, dropped):
    write_release(tmp_path / "data")
    data, _ = _prepare(tmp_path, scenario, SplitConfig(kind="random"))
    assert scenario_totals(data) == expected
    assert data.manifest["dropped"] == dropped


def _configs(*overrides: str):
    """The dataset, scenario and split configs of dataset=kuairand with `overrides`."""
    cfg = compose("dataset=kuairand", *overrides)
    return OmegaConf.to_object(cfg.dataset), OmegaConf.to_object(cfg.scenario), OmegaConf.to_object(cfg.split)


def test_the_yaml_preset_reads_the_release_folder_or_its_parent(tmp_path):
    write_release(tmp_path / "KuaiRand-1K" / "data")
    dataset, scenario, split = _configs(
        f"dataset.path={tmp_path / 'KuaiRand-1K'}",
        "scenario=mapping",
        "scenario.mapping={0: tab0, 1: tab1, 2: tab2, 4: tab4, 6: tab6}",
    )
    assert isinstance(dataset, KuaiRandConfig) and dataset.layout == "raw" and split.kind == "time"
    data = prepare(dataset, scenario, split, tmp_path / "cache")
    assert data.feature_map.scenario_names == ("tab0", "tab1", "tab2", "tab4", "tab6")
    assert sum(data.manifest["splits"][s]["rows"] for s in SPLITS) == 22


JOINED = SHARED_DATA / "kuairand" / "kuairand_sample.csv"


@pytest.mark.skipif(not JOINED.is_file(), reason=f"the shared KuaiRand sample is not here ({JOINED})")
def test_the_joined_sample_holds_one_tab_and_is_refused(tmp_path):
    dataset, scenario, split = _configs(
        "dataset.layout=joined", f"dataset.path={JOINED}", "dataset.time=null", "split=random"
    )
    with pytest.raises(UserError) as err:
        prepare(dataset, scenario, split, tmp_path / "cache")
    message = str(err.value)
    assert "'tab'" in message and "1 scenario ('1')" in message and "at least 2" in message


@pytest.mark.skipif(not JOINED.is_file(), reason=f"the shared KuaiRand sample is not here ({JOINED})")
def test_the_joined_layout_with_a_truncated_column_name(tmp_path):
    """Some copies name the last column server_heigh; the reader restores server_height."""
    lines = JOINED.read_text().splitlines()
    lines[0] = lines[0].replace("server_height", "server_heigh")
    rows = lines[1:]
    for index in range(0, len(rows), 2):  # a second tab, so that the run is multi-scenario
        fields = rows[index].split(",")
        fields[7] = "0"
        rows[index] = ",".join(fields)
    (tmp_path / "joined.csv").write_text("\n".join([lines[0], *rows]) + "\n")
    data, _ = _prepare(
        tmp_path,
        ScenarioConfig(kind="column", column="tab"),
        SplitConfig(kind="random"),
        layout="joined",
        path=str(tmp_path / "joined.csv"),
        time=None,
    )
    assert data.feature_map.scenario_names == ("0", "1")
    assert sum(rows for rows, _ in scenario_totals(data).values()) == 200
    assert sum(clicks for _, clicks in scenario_totals(data).values()) == 32
    assert "server_height" in [f.name for f in data.feature_map.numeric]


def _error(tmp_path, **options) -> str:
    with pytest.raises(UserError) as err:
        _prepare(tmp_path, ScenarioConfig(kind="column", column="tab"), SplitConfig(kind="random"), **options)
    return str(err.value)


def test_missing_feature_file_is_named(tmp_path):
    (write_release(tmp_path / "data") / "user_features_1k.csv").unlink()
    message = _error(tmp_path)
    assert "user_features_1k.csv" in message and str(tmp_path / "data") in message and "dataset.path" in message


def test_wrong_version_suggests_the_one_present(tmp_path):
    write_release(tmp_path / "data")
    message = _error(tmp_path, version="pure")
    assert "log_standard_*_pure.csv" in message and "dataset.version=1k" in message


def test_tab_separated_log_is_refused_with_the_file_and_the_fix(tmp_path):
    folder = write_release(tmp_path / "data")
    log = folder / "log_standard_4_22_to_5_08_1k.csv"
    log.write_text(log.read_text().replace(",", "\t"))
    message = _error(tmp_path)
    assert log.name in message and "comma-separated" in message


def test_repeated_video_in_the_features_is_refused(tmp_path):
    folder = write_release(tmp_path / "data")
    with (folder / "video_features_basic_1k.csv").open("a") as handle:
        handle.write(VIDEOS[0] + "\n")
    message = _error(tmp_path)
    assert "video_features_basic_1k.csv" in message and "repeated video_id" in message


def test_a_file_with_layout_raw_points_to_layout_joined(tmp_path):
    write_release(tmp_path / "data")
    message = _error(tmp_path, path=str(tmp_path / "data" / "user_features_1k.csv"))
    assert "dataset.layout=joined" in message


def test_joined_layout_without_time_says_how_to_split(tmp_path):
    _write(tmp_path / "joined.csv", "user_id,video_id,is_click,tab", ["1,2,0,1", "2,3,1,0"])
    message = _error(tmp_path, layout="joined", path=str(tmp_path / "joined.csv"), categorical=[], numeric=[])
    assert "dataset.time=null split=random" in message
