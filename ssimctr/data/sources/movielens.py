"""MovieLens-1M (GroupLens; https://grouplens.org/datasets/movielens/1m/): ratings with user and movie data.

layout=dat reads the release folder (research/data-formats.md "MovieLens"): `ratings.dat`
(UserID::MovieID::Rating::Timestamp), `users.dat` (UserID::Gender::Age::Occupation::Zip-code) and
`movies.dat` (MovieID::Title::Genres), `::`-separated without a header, joined on UserID and MovieID.
polars separators are one byte, so ratings.dat (ASCII digits, the large file) is scanned lazily with
`:` as separator, which makes every other field empty. users.dat and movies.dat are small (one row per
user / movie): they are decoded whole (UTF-8, else Latin-1: the ML-1M titles are Latin-1, e.g.
"Misérables, Les (1995)"), `::` is replaced by a byte absent from the data, and polars parses that.

layout=csv reads one joined CSV with a header (DeepCTR's movielens_sample.txt): user_id, movie_id,
rating, timestamp, title, genres, gender, age, occupation, zip.

Both layouts give those ten columns plus two derived ones:
  genre      the first of the `|`-separated genres (Scenario-Wise-Rec's `cate_id`); `genres` keeps all
  age_group  Scenario-Wise-Rec's / HAMUR's three user domains from the age code
             ({1, 18} -> under25, {25} -> 25-34, {35, 45, 50, 56} -> 35plus; its map_group_indicator)
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from ssimctr.config.datasets import MovieLensConfig
from ssimctr.config.schema import SplitConfig
from ssimctr.data.sources.base import Source, release_folder
from ssimctr.data.sources.files import data_files, fingerprint
from ssimctr.errors import UserError

LAYOUTS = ("dat", "csv")
GENRE = "genre"
AGE_GROUP = "age_group"
AGE_GROUPS = {1: "under25", 18: "under25", 25: "25-34", 35: "35plus", 45: "35plus", 50: "35plus", 56: "35plus"}
TYPES = {
    "user_id": pl.Int64,
    "movie_id": pl.Int64,
    "rating": pl.Int64,
    "timestamp": pl.Int64,
    "title": pl.String,
    "genres": pl.String,
    "gender": pl.String,
    "age": pl.Int64,
    "occupation": pl.Int64,
    "zip": pl.String,
}
DAT_FILES = {
    "ratings.dat": ("user_id", "movie_id", "rating", "timestamp"),
    "users.dat": ("user_id", "gender", "age", "occupation", "zip"),
    "movies.dat": ("movie_id", "title", "genres"),
}
COLUMNS = ("user_id", "movie_id", "rating", "timestamp", "title", "genres", "gender", "age", "occupation", "zip")
FIELD_SEPARATOR = "\x1f"  # ASCII unit separator: stands in for '::' in users.dat / movies.dat


def read_movielens(dataset: MovieLensConfig, rule: SplitConfig) -> Source:
    """The MovieLens ratings joined with their user and movie, plus `genre` and `age_group`."""
    if dataset.layout not in LAYOUTS:
        raise UserError(
            f"dataset.layout={dataset.layout} is not a MovieLens layout: use dat (the ML-1M folder "
            "of ratings.dat, users.dat, movies.dat) or csv (one joined CSV with a header)"
        )
    if rule.kind == "given":
        raise UserError(
            "dataset=movielens ships no train/val/test files: use split=time (by timestamp) or split=random"
        )
    if not dataset.path:
        raise UserError(
            "dataset=movielens needs its files: set dataset.path=/path/to/ml-1m (the folder of the "
            ".dat files; or a joined CSV with dataset.layout=csv)"
        )
    path = Path(dataset.path)
    if dataset.layout == "csv":
        if path.is_dir() and (path / "ratings.dat").exists():
            raise UserError(f"dataset.path {path} holds ratings.dat: read the ML-1M .dat files with dataset.layout=dat")
        files = data_files(path, "csv", "dataset.path")
        return Source(
            load=lambda: _derive(_scan_joined(files, dataset.separator)),
            fingerprint={"files": fingerprint(files)},
            origin=str(path),
        )
    files = _dat_files(path)
    return Source(load=lambda: _derive(_join_dat(files)), fingerprint={"files": fingerprint(files)}, origin=str(path))


class MovieLensReader(MovieLensConfig):
    """dataset=movielens: MovieLens-1M (dat or csv); `_target_` of schema_dataset_movielens."""

    def read(self, rule: SplitConfig) -> Source:
        """The rows of this dataset (`read_movielens`)."""
        return read_movielens(self, rule)


def _dat_files(folder: Path) -> list[Path]:
    release_folder(
        folder,
        "ML-1M's ratings.dat, users.dat and movies.dat (the unzipped ml-1m/ folder)",
        "or set dataset.layout=csv for one joined CSV",
    )
    files = [folder / name for name in DAT_FILES]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise UserError(
            f"dataset.path: {folder} has no {', '.join(missing)}: dataset.layout=dat needs the ML-1M "
            "files ratings.dat, users.dat and movies.dat together (unzip ml-1m.zip from "
            "https://grouplens.org/datasets/movielens/1m/ and point dataset.path at ml-1m/)"
        )
    for file in files:
        _check_first_line(file, DAT_FILES[file.name])
    return files


def _check_first_line(file: Path, columns: tuple[str, ...]) -> None:
    """The first line has one field per column, separated by '::' (ML-1M's layout)."""
    with file.open("rb") as handle:
        line = handle.readline().rstrip(b"\r\n")
    fields = line.split(b"::")
    if len(fields) == len(columns) and fields[0].strip().isdigit():
        return
    hint = (
        " It looks comma- or tab-separated: for a joined CSV with a header use dataset.layout=csv."
        if b"," in line or b"\t" in line
        else ""
    )
    raise UserError(
        f"{file} is not in the ML-1M .dat layout: its first line {line[:80].decode('latin-1')!r} has "
        f"{len(fields)} '::'-separated field(s), expected {len(columns)} "
        f"({'::'.join(columns)}, no header).{hint}"
    )


def _join_dat(files: list[Path]) -> pl.LazyFrame:
    ratings_file, users_file, movies_file = files
    ratings = _scan_ratings(ratings_file)
    users = _read_small_dat(users_file, DAT_FILES["users.dat"])
    movies = _read_small_dat(movies_file, DAT_FILES["movies.dat"])
    return (
        ratings.join(users.lazy(), on="user_id", how="left", maintain_order="left")
        .join(movies.lazy(), on="movie_id", how="left", maintain_order="left")
        .select(COLUMNS)
    )


def _scan_ratings(file: Path) -> pl.LazyFrame:
    """ratings.dat scanned with ':' as separator: the empty fields between the two colons are skipped."""
    columns = DAT_FILES["ratings.dat"]
    schema = {}
    for index, name in enumerate(columns):
        schema[name] = TYPES[name]
        if index < len(columns) - 1:
            schema[f"_gap{index}"] = pl.String
    return pl.scan_csv(file, separator=":", has_header=False, schema=schema, quote_char=None).select(columns)


def _read_small_dat(file: Path, columns: tuple[str, ...]) -> pl.DataFrame:
    """A small '::'-separated file (one row per user or movie), decoded as UTF-8 or else Latin-1."""
    raw = file.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    table = pl.read_csv(
        text.replace("::", FIELD_SEPARATOR).encode(),
        separator=FIELD_SEPARATOR,
        has_header=False,
        schema={c: TYPES[c] for c in columns},
        quote_char=None,
    )
    repeated = table[columns[0]].is_duplicated().sum()
    if repeated:
        raise UserError(
            f"{file} holds {repeated} rows with a repeated {columns[0]}: each must appear once to be "
            "joined with ratings.dat; check the file"
        )
    return table


def _scan_joined(files: list[Path], separator: str) -> pl.LazyFrame:
    """The joined CSV; zip codes and texts stay strings (a zip code is an identifier: 02138 keeps its 0)."""
    lazy = pl.scan_csv(
        files,
        separator=separator,
        infer_schema_length=10_000,
        null_values=["", "NULL", "null", "NaN", "nan"],
        schema_overrides={c: TYPES[c] for c in ("title", "genres", "gender", "zip")},
    )
    names = lazy.collect_schema().names()
    missing = [c for c in COLUMNS if c not in names]
    if missing:
        shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
        raise UserError(
            f"{files[0]} has no column(s) {missing} (its header reads: {shown}): dataset.layout=csv "
            f"expects the joined header {','.join(COLUMNS)} with dataset.separator="
            f"'{separator}'; for the ML-1M .dat folder use dataset.layout=dat"
        )
    return lazy


def _derive(frame: pl.LazyFrame) -> pl.LazyFrame:
    """Add `genre` (the first genre) and `age_group` (Scenario-Wise-Rec's 3 age domains; null if unknown)."""
    return frame.with_columns(
        pl.col("genres").str.split("|").list.first().alias(GENRE),
        pl.col("age")
        .cast(pl.Int64, strict=False)
        .replace_strict(AGE_GROUPS, default=None, return_dtype=pl.String)
        .alias(AGE_GROUP),
    )
