"""dataset=movielens: ML-1M's .dat files (tiny ones written here in the exact format: '::', no header,
Latin-1 titles) and the joined CSV layout (the real DeepCTR sample in shared/data)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from omegaconf import OmegaConf

from conftest import SHARED_DATA, compose, scenario_totals
from ssimctr.config.datasets import MovieLensConfig
from ssimctr.config.schema import ScenarioConfig, SplitConfig
from ssimctr.data.prepare import prepare
from ssimctr.errors import UserError

SPLITS = ("train", "val", "test")
T0 = 978_300_000
USERS = [
    "1::F::1::10::48067",
    "2::M::56::16::70072",
    "3::M::25::15::55117",
    "4::M::45::7::02460",
    "5::M::25::20::55455",
    "6::F::50::9::55117",
    "7::M::35::1::06810",
    "8::M::18::12::11413",
]
MOVIES = [
    "1::Toy Story (1995)::Animation|Children's|Comedy",
    "2::Misérables, Les (1995)::Drama|Musical",
    "3::Star Wars: Episode IV - A New Hope (1977)::Action|Adventure|Fantasy|Sci-Fi",
    "4::Heat (1995)::Action|Crime|Thriller",
]
# (user, movie, rating); the i-th rating (from 1) has timestamp T0 + 1000 i
RATINGS = [
    (1, 1, 5),
    (1, 2, 3),
    (2, 3, 4),
    (2, 4, 2),
    (3, 1, 4),
    (3, 3, 5),
    (4, 2, 1),
    (4, 4, 4),
    (5, 1, 3),
    (5, 2, 5),
    (6, 3, 4),
    (6, 4, 3),
    (7, 1, 2),
    (7, 3, 5),
    (8, 2, 4),
    (8, 4, 1),
]
# by hand: age groups under25 = users 1 (age 1), 8 (18); 25-34 = users 3, 5; 35plus = users 2, 4, 6, 7
AGE_GROUPS = {"25-34": (4, 3), "35plus": (8, 4), "under25": (4, 2)}
YAML_ROLES = dict(  # conf/dataset/movielens.yaml
    label="rating",
    label_threshold=4,
    scenario="age_group",
    user="user_id",
    item="movie_id",
    time="timestamp",
    categorical=["user_id", "movie_id", "gender", "occupation", "zip", "genre"],
    numeric=["age"],
    text=["title", "genres"],
)


def write_ml1m(folder: Path, encoding: str = "latin-1") -> Path:
    """ratings.dat, users.dat, movies.dat as in ml-1m.zip ('\\n' line ends, movies.dat in `encoding`)."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = [f"{u}::{m}::{r}::{T0 + 1000 * i}" for i, (u, m, r) in enumerate(RATINGS, start=1)]
    (folder / "ratings.dat").write_bytes(("\n".join(lines) + "\n").encode("ascii"))
    (folder / "users.dat").write_bytes(("\n".join(USERS) + "\n").encode("ascii"))
    (folder / "movies.dat").write_bytes(("\n".join(MOVIES) + "\n").encode(encoding))
    return folder


def _prepare(tmp_path, scenario: ScenarioConfig, split: SplitConfig, **options):
    values = dict(name="movielens", path=str(tmp_path / "ml-1m"), **YAML_ROLES)
    values.update(options)
    data = prepare(MovieLensConfig(**values), scenario, split, tmp_path / "cache")
    return data, {s: pl.read_parquet(data.split_path(s)) for s in SPLITS}


def test_latin1_dat_files_by_age_group_with_a_time_split(tmp_path):
    assert b"\xe9" in write_ml1m(tmp_path / "ml-1m").joinpath("movies.dat").read_bytes()  # é in Latin-1
    cutoffs = [str(T0 + 13_000), str(T0 + 15_000)]  # val = ratings 13-14, test = ratings 15-16
    data, parts = _prepare(
        tmp_path, ScenarioConfig(kind="column", column="age_group"), SplitConfig(kind="time", cutoffs=cutoffs)
    )
    assert data.feature_map.scenario_names == ("25-34", "35plus", "under25")
    assert scenario_totals(data) == AGE_GROUPS
    assert [data.manifest["splits"][s]["rows"] for s in SPLITS] == [12, 2, 2]
    assert [data.manifest["splits"][s]["positives"] for s in SPLITS] == [7, 1, 1]  # rating >= 4
    assert data.manifest["dropped"] == {}
    rows = pl.concat(parts.values()).sort("row_id")
    assert rows["ts"].to_list() == [T0 + 1000 * i for i in range(1, 17)]
    # the Latin-1 title decodes, a title with ':' stays whole, the first genre is a field of its own
    titles = dict(zip(rows["row_id"].to_list(), rows["title"].to_list()))
    assert titles[1] == "Misérables, Les (1995)" and titles[2] == "Star Wars: Episode IV - A New Hope (1977)"
    assert dict(zip(rows["row_id"].to_list(), rows["genres"].to_list()))[0] == "Animation|Children's|Comedy"
    genre = {f.name: f.vocab_size for f in data.feature_map.categorical}["genre"]
    assert genre == 4  # Animation, Drama, Action (first genres) + OOV


def test_utf8_movies_file_reads_the_same(tmp_path):
    write_ml1m(tmp_path / "ml-1m", encoding="utf-8")
    data, parts = _prepare(tmp_path, ScenarioConfig(kind="column", column="gender"), SplitConfig(kind="random"))
    assert scenario_totals(data) == {"F": (4, 2), "M": (12, 7)}
    titles = pl.concat(parts.values())["title"].to_list()
    assert "Misérables, Les (1995)" in titles


def test_age_groups_as_a_mapping_on_age_give_the_same_domains(tmp_path):
    write_ml1m(tmp_path / "ml-1m")
    mapping = {1: "under25", 18: "under25", 25: "25-34", 35: "35plus", 45: "35plus", 50: "35plus", 56: "35plus"}
    data, _ = _prepare(
        tmp_path, ScenarioConfig(kind="mapping", column="age", mapping=mapping), SplitConfig(kind="random")
    )
    assert scenario_totals(data) == AGE_GROUPS


SAMPLE = SHARED_DATA / "movielens" / "movielens_sample.txt"
needs_sample = pytest.mark.skipif(not SAMPLE.is_file(), reason=f"the shared MovieLens sample is not here ({SAMPLE})")


def _configs(*overrides: str):
    """The dataset, scenario and split configs of dataset=movielens with `overrides`."""
    cfg = compose("dataset=movielens", *overrides)
    return OmegaConf.to_object(cfg.dataset), OmegaConf.to_object(cfg.scenario), OmegaConf.to_object(cfg.split)


@needs_sample
def test_sample_by_age_group_through_the_yaml_preset(tmp_path):
    dataset, scenario, split = _configs("dataset.layout=csv", f"dataset.path={SAMPLE}", "split=random")
    assert isinstance(dataset, MovieLensConfig) and dataset.label_threshold == 4
    data = prepare(dataset, scenario, split, tmp_path / "cache")
    # PROVENANCE: age 1: 6 (5) | 18: 36 (14) | 25: 72 (41) | 35: 36 (24) | 45: 13 (5) | 50: 25 (17) | 56: 12 (7)
    assert scenario_totals(data) == {
        "under25": (6 + 36, 5 + 14),
        "25-34": (72, 41),
        "35plus": (36 + 13 + 25 + 12, 24 + 5 + 17 + 7),
    }
    assert data.manifest["dropped"] == {}


@needs_sample
def test_sample_by_gender_with_the_documented_override(tmp_path):
    dataset, scenario, split = _configs(
        "dataset.layout=csv",
        f"dataset.path={SAMPLE}",
        "split=random",
        "dataset.scenario=gender",
        "dataset.categorical=[user_id,movie_id,occupation,zip,genre]",
    )
    data = prepare(dataset, scenario, split, tmp_path / "cache")
    assert data.feature_map.scenario_names == ("F", "M")
    assert scenario_totals(data) == {"F": (46, 25), "M": (154, 88)}
    assert sum(p for _, p in scenario_totals(data).values()) == 113


@needs_sample
def test_sample_with_the_documented_mapping_override(tmp_path):
    dataset, scenario, split = _configs(
        "dataset.layout=csv",
        f"dataset.path={SAMPLE}",
        "split=time",
        "scenario=mapping",
        "scenario.column=age",
        "scenario.mapping={1: young, 18: young, 25: adult, 35: adult, 45: senior, 50: senior, 56: senior}",
    )
    data = prepare(dataset, scenario, split, tmp_path / "cache")
    assert scenario_totals(data) == {"young": (42, 19), "adult": (108, 65), "senior": (50, 29)}


def _error(tmp_path, **options) -> str:
    with pytest.raises(UserError) as err:
        _prepare(tmp_path, ScenarioConfig(kind="column", column="age_group"), SplitConfig(kind="random"), **options)
    return str(err.value)


def test_missing_dat_file_is_named(tmp_path):
    (write_ml1m(tmp_path / "ml-1m") / "users.dat").unlink()
    message = _error(tmp_path)
    assert "users.dat" in message and str(tmp_path / "ml-1m") in message and "ratings.dat, users.dat" in message


def test_comma_separated_ratings_point_to_the_csv_layout(tmp_path):
    folder = write_ml1m(tmp_path / "ml-1m")
    ratings = folder / "ratings.dat"
    ratings.write_text(ratings.read_text().replace("::", ","))
    message = _error(tmp_path)
    assert str(ratings) in message and "'::'-separated" in message and "dataset.layout=csv" in message


def test_csv_layout_on_the_dat_folder_points_to_the_dat_layout(tmp_path):
    write_ml1m(tmp_path / "ml-1m")
    assert "dataset.layout=dat" in _error(tmp_path, layout="csv")


def test_csv_without_genres_is_refused_with_the_expected_header(tmp_path):
    (tmp_path / "joined.csv").write_text(
        "user_id,movie_id,rating,timestamp,title,gender,age,occupation,zip\n1,2,5,978300760,Heat (1995),F,1,10,48067\n"
    )
    message = _error(tmp_path, layout="csv", path=str(tmp_path / "joined.csv"))
    assert "joined.csv" in message and "['genres']" in message and "user_id,movie_id,rating" in message
