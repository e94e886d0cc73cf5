"""ssimctr.data.movielens_like: ML-1M-structured files that dataset=movielens reads, drawn from a known model
in which the ids carry most of the signal and a time split's last rows hold newcomers."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from omegaconf import OmegaConf

from conftest import compose
from ssimctr.data import movielens_like
from ssimctr.data.prepare import prepare

SIZE = {"users": 400, "movies": 300, "ratings": 40_000}


@pytest.fixture(scope="module")
def tables():
    return movielens_like.generate(**SIZE, seed=3)


def test_the_same_arguments_write_the_same_files(tmp_path, tables):
    first = movielens_like.write(tmp_path / "a", tables)
    second = movielens_like.write(tmp_path / "b", movielens_like.generate(**SIZE, seed=3))
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]
    other = movielens_like.write(tmp_path / "c", movielens_like.generate(**SIZE, seed=4))
    assert first[2].read_bytes() != other[2].read_bytes()
    assert (tmp_path / "a" / "ratings.dat").read_text().splitlines()[0].count("::") == 3


def test_the_structure_is_ml_1ms(tables):
    users, movies, ratings = tables["users"], tables["movies"], tables["ratings"]
    assert users.height == 400 and movies.height == 300 and ratings.height == 40_000
    per_user = ratings.group_by("user_id").len()
    assert per_user["len"].min() >= 20 and per_user.height == 400
    assert ratings.select("user_id", "movie_id").is_duplicated().sum() == 0  # each movie at most once per user
    shares = ratings["rating"].value_counts().sort("rating")["count"].to_numpy() / ratings.height
    np.testing.assert_allclose(shares, movielens_like.RATING_SHARES, atol=0.002)
    assert set(users["age"].unique()) <= set(movielens_like.AGES) and set(users["gender"].unique()) == {"F", "M"}
    genres = movies["genres"].str.split("|").explode()
    assert set(genres.unique()) <= set(movielens_like.GENRES)
    assert users["zip"].n_unique() < users.height  # some users share a zip code


def test_the_ids_carry_most_of_the_signal(tables):
    """A movie's mean rating among half of the users predicts it among the other half far better than its
    genres do: the movie's own effect (its quality) dominates."""
    ratings = tables["ratings"].join(tables["movies"], on="movie_id")
    halves = ratings.with_columns((pl.col("user_id") % 2).alias("half"))
    means = halves.group_by("movie_id", "half").agg(pl.col("rating").mean()).pivot("half", index="movie_id")
    means = means.drop_nulls()
    by_movie = np.corrcoef(means["0"].to_numpy(), means["1"].to_numpy())[0, 1]
    genre = ratings.with_columns(pl.col("genres").str.split("|").list.first().alias("genre"))
    genre_means = genre.group_by("genre").agg(pl.col("rating").mean().alias("genre_mean"))
    per_movie = genre.group_by("movie_id", "genre").agg(pl.col("rating").mean()).join(genre_means, on="genre")
    by_genre = np.corrcoef(per_movie["rating"].to_numpy(), per_movie["genre_mean"].to_numpy())[0, 1]
    assert by_movie > 0.7 and by_genre < 0.5


def test_dataset_movielens_reads_it_and_a_time_split_holds_newcomers(tmp_path, tables):
    movielens_like.write(tmp_path / "ml", tables)
    cfg = compose("dataset=movielens", f"dataset.path={tmp_path / 'ml'}", "split=time")
    data = prepare(
        OmegaConf.to_object(cfg.dataset), OmegaConf.to_object(cfg.scenario), OmegaConf.to_object(cfg.split), tmp_path
    )
    assert sum(data.manifest["splits"][s]["rows"] for s in ("train", "val", "test")) == 40_000
    positives = sum(data.manifest["splits"][s]["positives"] for s in ("train", "val", "test")) / 40_000
    assert positives == pytest.approx(0.575, abs=0.01)  # rating >= 4
    cold = data.manifest["cold"]["user"]["test"]
    assert sum(v["entities"] for v in cold.values()) > 20  # users with no train row
