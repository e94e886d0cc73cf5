"""MovieLens-1M-structured synthetic data: `users.dat`, `movies.dat` and `ratings.dat` in the ML-1M
layout (`::`-separated, no header), drawn from a known rating model, for `dataset=movielens` at a real
scale where the real release may not be redistributed.

    python -m ssimctr.data.movielens_like data/ml-like            # 6,040 users, 3,706 movies, 1,000,209 ratings
    ssimctr dataset=movielens dataset.path=data/ml-like split=time task=cold_start

The structure follows ML-1M: users with gender (M 72 %), one of the 7 age codes and one of 21
occupations with ML-1M's shares, a zip code from a pool that some users share; movies with 1 to 3 of
the 18 genres and a title "Movie <id> (<year>)"; every user rates at least 20 movies, each at most once,
with a heavy-tailed count per user (mean ~165, like ML-1M); ratings 1..5 with ML-1M's distribution
(5.6 / 10.8 / 26.1 / 34.9 / 22.6 %, so rating >= 4 is positive on ~57.5 % of rows).

The rating model (every draw from ``np.random.default_rng(seed)``, so the same arguments give the same
files byte for byte): s = b_m + b_u + <p_u, q_m> + a(user attributes, movie genres) + noise, where

- b_m ~ N(0, 0.55^2) is the movie's quality and b_u ~ N(0, 0.45^2) the user's leniency,
- p_u, q_m ~ N(0, 0.38^2 I) in d = 8 dimensions are the user's and the movie's tastes (<p, q> has std 0.4),
- a = the mean over the movie's genres of w_gender[g] + w_age[g] + w_genre[g] (each ~ N(0, 0.15^2))
  plus an occupation offset ~ N(0, 0.05^2): the attributes explain a small share of the ratings,
- noise ~ N(0, 0.6^2),

and the rating cuts s at the quantiles of ML-1M's rating distribution. The ids (b_m, b_u, p, q) carry
most of the signal, as in the real data: a model of the attributes alone ranks far worse than one with ids.

Time: users join between 2000-04-25 and 2003-02-28, 85 % of them in the first eight months (as ML-1M's
registrations); a user rates 85 % of its movies in its first session (exponential, mean 2 hours after
joining) and the rest uniformly over the following two years (clipped to the end), so a time split's
last rows hold many users with no earlier row: natural cold users.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import polars as pl

GENRES = (
    "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
    "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
GENRE_SHARES = (503, 283, 105, 251, 1200, 211, 127, 1603, 68, 44, 343, 114, 106, 471, 276, 492, 143, 68)  # ML-1M counts
AGES = (1, 18, 25, 35, 45, 50, 56)
AGE_SHARES = (222, 1103, 2096, 1193, 550, 496, 380)  # ML-1M users per age code
OCCUPATION_SHARES = (
    711,
    528,
    267,
    173,
    759,
    112,
    236,
    679,
    17,
    92,
    195,
    129,
    388,
    142,
    302,
    144,
    241,
    502,
    70,
    72,
    281,
)
RATING_SHARES = (0.056, 0.108, 0.261, 0.349, 0.226)  # ML-1M ratings 1..5
START, END = 956_620_800, 1_046_390_400  # 2000-04-25 and 2003-02-28, 00:00 UTC
EARLY = 8 * 30 * 86_400  # 85 % of users join in the first eight months
SESSION = 2 * 3600  # mean time from joining to a first-session rating
TAIL = 2 * 365 * 86_400  # the other ratings: uniform over the two years after joining
MIN_RATINGS = 20
DIM = 8
TASTE_STD = 0.4


def generate(users: int = 6040, movies: int = 3706, ratings: int = 1_000_209, seed: int = 7) -> dict[str, pl.DataFrame]:
    """The three ML-1M tables: users (user_id, gender, age, occupation, zip), movies (movie_id, title,
    genres) and ratings (user_id, movie_id, rating, timestamp), drawn as the module docstring says."""
    if users < 1 or movies < MIN_RATINGS or ratings < MIN_RATINGS * users or ratings > users * movies:
        raise ValueError(
            f"users={users}, movies={movies}, ratings={ratings}: need movies >= {MIN_RATINGS} and "
            f"{MIN_RATINGS} * users <= ratings <= users * movies"
        )
    rng = np.random.default_rng(seed)
    gender = rng.choice(2, size=users, p=[0.28, 0.72])
    age = rng.choice(len(AGES), size=users, p=_shares(AGE_SHARES))
    occupation = rng.choice(len(OCCUPATION_SHARES), size=users, p=_shares(OCCUPATION_SHARES))
    pool = (
        rng.choice(90_000, size=max(1, int(users * 0.57)), replace=False) + 10_000
    )  # ML-1M: 3,439 zips for 6,040 users
    zip_code = pool[np.minimum(rng.zipf(1.6, size=users) - 1, len(pool) - 1)]
    zip_code = np.where(rng.random(users) < 0.6, pool[rng.integers(len(pool), size=users)], zip_code)

    genre_count = rng.choice([1, 2, 3], size=movies, p=[0.5, 0.35, 0.15])
    genre_keys = np.log(_shares(GENRE_SHARES)) + rng.gumbel(size=(movies, len(GENRES)))
    genre_rank = np.argsort(-genre_keys, axis=1)
    has_genre = np.zeros((movies, len(GENRES)), dtype=bool)
    for k in range(3):
        chosen = genre_count > k
        has_genre[np.nonzero(chosen)[0], genre_rank[chosen, k]] = True
    year = np.clip(np.round(2000 - rng.gamma(1.3, 9.0, size=movies)), 1919, 2000).astype(int)

    quality = rng.normal(0.0, 0.55, size=movies)
    leniency = rng.normal(0.0, 0.45, size=users)
    taste = np.sqrt(TASTE_STD / np.sqrt(DIM))  # per coordinate: <p, q> has std TASTE_STD
    p = rng.normal(0.0, taste, size=(users, DIM))
    q = rng.normal(0.0, taste, size=(movies, DIM))
    w_gender = rng.normal(0.0, 0.15, size=(2, len(GENRES)))
    w_age = rng.normal(0.0, 0.15, size=(len(AGES), len(GENRES)))
    w_genre = rng.normal(0.0, 0.15, size=len(GENRES))
    w_occupation = rng.normal(0.0, 0.05, size=len(OCCUPATION_SHARES))
    popularity = np.exp(1.3 * rng.normal(size=movies) + 0.6 * quality / 0.55)

    counts = _ratings_per_user(rng, users, movies, ratings)
    user_of_row = np.repeat(np.arange(users), counts)
    movie_of_row = _movies_rated(rng, counts, np.log(popularity))
    genre_mean = has_genre / has_genre.sum(1, keepdims=True)
    attribute = (genre_mean[movie_of_row] * (w_gender[gender[user_of_row]] + w_age[age[user_of_row]] + w_genre)).sum(
        1
    ) + w_occupation[occupation[user_of_row]]
    score = (
        quality[movie_of_row]
        + leniency[user_of_row]
        + (p[user_of_row] * q[movie_of_row]).sum(1)
        + attribute
        + rng.normal(0.0, 0.6, size=len(user_of_row))
    )
    cuts = np.quantile(score, np.cumsum(RATING_SHARES)[:-1])
    rating = np.searchsorted(cuts, score) + 1

    joined = np.where(
        rng.random(users) < 0.85, START + rng.uniform(0, EARLY, size=users), rng.uniform(START, END, size=users)
    )
    first_session = rng.random(len(user_of_row)) < 0.85
    delay = np.where(
        first_session, rng.exponential(SESSION, size=len(user_of_row)), rng.uniform(0, TAIL, size=len(user_of_row))
    )
    timestamp = np.minimum(joined[user_of_row] + delay, END - 1).astype(np.int64)

    user_ids, movie_ids = np.arange(1, users + 1), np.arange(1, movies + 1)
    return {
        "users": pl.DataFrame(
            {
                "user_id": user_ids,
                "gender": np.array(["F", "M"])[gender],
                "age": np.array(AGES)[age],
                "occupation": occupation,
                "zip": zip_code.astype(str),
            }
        ),
        "movies": pl.DataFrame(
            {
                "movie_id": movie_ids,
                "title": [f"Movie {m} ({y})" for m, y in zip(movie_ids, year)],
                "genres": ["|".join(GENRES[g] for g in np.nonzero(row)[0]) for row in has_genre],
            }
        ),
        "ratings": pl.DataFrame(
            {
                "user_id": user_ids[user_of_row],
                "movie_id": movie_ids[movie_of_row],
                "rating": rating,
                "timestamp": timestamp,
            }
        ),
    }


def write(folder: Path, tables: dict[str, pl.DataFrame]) -> list[Path]:
    """`tables` as `<folder>/<name>.dat`, one '::'-separated line per row (ML-1M's layout)."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, table in tables.items():
        path = folder / f"{name}.dat"
        lines = table.select(pl.concat_str([pl.col(c).cast(pl.String) for c in table.columns], separator="::"))
        lines.write_csv(path, include_header=False, quote_style="never")
        written.append(path)
    return written


def _shares(counts: tuple[int, ...]) -> np.ndarray:
    values = np.asarray(counts, dtype=float)
    return values / values.sum()


def _ratings_per_user(rng: np.random.Generator, users: int, movies: int, ratings: int) -> np.ndarray:
    """At least MIN_RATINGS per user, at most `movies`, heavy-tailed (lognormal), summing to `ratings`."""
    weights = rng.lognormal(0.0, 1.1, size=users)
    extra = ratings - MIN_RATINGS * users
    counts = MIN_RATINGS + np.minimum(np.floor(weights / weights.sum() * extra), movies - MIN_RATINGS).astype(int)
    while (short := ratings - counts.sum()) > 0:  # hand out what rounding and the cap left, to users with room
        room = np.nonzero(counts < movies)[0]
        counts[rng.choice(room, size=min(short, len(room)), replace=False)] += 1
    return counts


def _movies_rated(rng: np.random.Generator, counts: np.ndarray, log_popularity: np.ndarray) -> np.ndarray:
    """Per user, `counts[u]` distinct movies drawn with probability proportional to popularity
    (Gumbel top-k, in chunks of users), concatenated in user order."""
    chunks = []
    for start in range(0, len(counts), 256):
        part = counts[start : start + 256]
        keys = log_popularity + rng.gumbel(size=(len(part), len(log_popularity)))
        order = np.argsort(-keys, axis=1)
        chunks.append(order[np.arange(order.shape[1]) < part[:, None]])
    return np.concatenate(chunks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--users", type=int, default=6040)
    parser.add_argument("--movies", type=int, default=3706)
    parser.add_argument("--ratings", type=int, default=1_000_209)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    tables = generate(args.users, args.movies, args.ratings, args.seed)
    for path in write(args.folder, tables):
        print(path)


if __name__ == "__main__":
    main()
