"""KuaiRand (Gao et al., CIKM 2022; https://kuairand.com): short-video logs, scenario = `tab`.

layout=raw reads a release's data/ folder (research/data-formats.md "KuaiRand"): the logs
`log_standard_*_{version}.csv` (KuaiRand-27K splits each into `..._part1.csv`, `..._part2.csv`),
optionally `log_random_*_{version}.csv`, all with one header; each log row is left-joined with
`user_features_{version}.csv` on user_id and `video_features_basic_{version}.csv` on video_id.
`timestamp` = time_ms // 1000 (unix seconds) is added for split=time.

layout=joined reads Scenario-Wise-Rec's preprocessed CSV (scripts/data/kuairand/kuairand_sample.csv:
the log joined with the user features and four video columns, no time column), a flat file.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from ssimctr.config.datasets import KuaiRandConfig
from ssimctr.config.schema import SplitConfig
from ssimctr.data.sources.base import Source, release_folder
from ssimctr.data.sources.files import fingerprint, read_files
from ssimctr.errors import UserError

LAYOUTS = ("raw", "joined")
VERSIONS = ("1k", "pure", "27k")
TIME = "timestamp"
NULLS = ["", "NULL", "null", "NaN", "nan"]
LOG_COLUMNS = (
    "user_id",
    "video_id",
    "date",
    "hourmin",
    "time_ms",
    "is_click",
    "is_like",
    "is_follow",
    "is_comment",
    "is_forward",
    "is_hate",
    "long_view",
    "play_time_ms",
    "duration_ms",
    "profile_stay_time",
    "comment_stay_time",
    "is_profile_enter",
    "is_rand",
    "tab",
)
# the basic video features hold missing values and float-formatted numbers: read numbers as Float64
VIDEO_TYPES = {
    "video_id": pl.Int64,
    "author_id": pl.Int64,
    "video_type": pl.String,
    "upload_dt": pl.String,
    "upload_type": pl.String,
    "visible_status": pl.Float64,
    "video_duration": pl.Float64,
    "server_width": pl.Float64,
    "server_height": pl.Float64,
    "music_id": pl.Int64,
    "music_type": pl.Float64,
    "tag": pl.String,
}
JOINED_RENAMES = {"server_heigh": "server_height"}  # a truncated header name in some copies of the joined file


def read_kuairand(dataset: KuaiRandConfig, rule: SplitConfig) -> Source:
    """The KuaiRand rows of `dataset.layout` with the release's column names (+ `timestamp` for raw)."""
    if dataset.layout not in LAYOUTS:
        raise UserError(
            f"dataset.layout={dataset.layout} is not a KuaiRand layout: use raw (the release's folder "
            "of log and feature CSVs) or joined (one preprocessed CSV like Scenario-Wise-Rec's)"
        )
    if dataset.layout == "joined":
        return _read_joined(dataset, rule)
    if rule.kind == "given":
        raise UserError(
            "dataset=kuairand (layout=raw) ships no train/val/test files: use split=time (by time_ms) or split=random"
        )
    folder, files = _raw_files(dataset)

    def load() -> pl.LazyFrame:
        logs = _scan(
            files["log"],
            "log",
            ("user_id", "video_id", "time_ms", "is_click", "tab"),
            {c: pl.Int64 for c in LOG_COLUMNS},
        )
        users = _unique_key(
            _scan(files["user"], "user features", ("user_id",), {}, infer_all=True), "user_id", files["user"]
        )
        videos = _unique_key(
            _scan(files["video"], "basic video features", ("video_id",), VIDEO_TYPES), "video_id", files["video"]
        )
        return (
            logs.join(users, on="user_id", how="left", maintain_order="left")
            .join(videos, on="video_id", how="left", maintain_order="left")
            .with_columns((pl.col("time_ms") // 1000).alias(TIME))
        )

    used = [f for group in files.values() for f in group]
    return Source(load=load, fingerprint={"files": fingerprint(used)}, origin=str(folder))


class KuaiRandReader(KuaiRandConfig):
    """dataset=kuairand: the KuaiRand release (raw or joined); `_target_` of schema_dataset_kuairand."""

    def read(self, rule: SplitConfig) -> Source:
        """The rows of this dataset (`read_kuairand`)."""
        return read_kuairand(self, rule)


def _read_joined(dataset: KuaiRandConfig, rule: SplitConfig) -> Source:
    if dataset.path and Path(dataset.path).is_dir() and any(Path(dataset.path).glob("log_standard_*.csv")):
        raise UserError(
            f"dataset.path {dataset.path} holds the KuaiRand release's log files: read them with "
            "dataset.layout=raw (layout=joined expects one preprocessed CSV)"
        )
    files = read_files(dataset, rule)

    def load() -> pl.LazyFrame:
        frame = files.load()
        names = frame.collect_schema().names()
        if dataset.time and dataset.time not in names:
            raise UserError(
                f"{files.origin} has no time column '{dataset.time}' (Scenario-Wise-Rec's joined layout "
                "has none): add dataset.time=null split=random"
            )
        return frame.rename({old: new for old, new in JOINED_RENAMES.items() if old in names and new not in names})

    return Source(load=load, fingerprint=files.fingerprint, origin=files.origin)


def _raw_files(dataset: KuaiRandConfig) -> tuple[Path, dict[str, list[Path]]]:
    """The release files of `dataset.version` in dataset.path (or in its data/ subfolder)."""
    version = dataset.version
    if version not in VERSIONS:
        raise UserError(
            f"dataset.version={version} is not a KuaiRand version: use 1k, pure or 27k "
            "(the suffix of the release's file names)"
        )
    if not dataset.path:
        raise UserError(
            f"dataset=kuairand needs the release's data folder: set dataset.path=.../KuaiRand-{version.upper()}/data"
        )
    folder = release_folder(
        Path(dataset.path),
        "the KuaiRand release's log_standard_*, user_features_* and video_features_basic_* CSVs",
        "or set dataset.layout=joined for one preprocessed CSV",
    )
    if not _parts(folder, f"log_standard_*_{version}") and (folder / "data").is_dir():
        folder = folder / "data"
    files = {
        "log": _parts(folder, f"log_standard_*_{version}"),
        "user": _parts(folder, f"user_features_{version}"),
        "video": _parts(folder, f"video_features_basic_{version}"),
    }
    if dataset.include_random:
        files["log"] += _parts(folder, f"log_random_*_{version}")
    expected = {
        "log": f"log_standard_*_{version}.csv",
        "user": f"user_features_{version}.csv",
        "video": f"video_features_basic_{version}.csv",
    }
    for kind, pattern in expected.items():
        if not files[kind]:
            raise UserError(
                f"dataset.path: {folder} has no {pattern} (KuaiRand-{version.upper()} layout: "
                f"{', '.join(expected.values())}){_other_versions(folder, version)}"
            )
    return folder, files


def _parts(folder: Path, stem: str) -> list[Path]:
    """`stem`.csv files, and their `stem`_partN.csv pieces (KuaiRand-27K)."""
    return sorted(folder.glob(f"{stem}.csv")) + sorted(folder.glob(f"{stem}_part*.csv"))


def _other_versions(folder: Path, version: str) -> str:
    found = sorted({p.stem.removeprefix("user_features_") for p in folder.glob("user_features_*.csv")} - {version})
    found = [v for v in found if v in VERSIONS]
    if found:
        return f": the folder holds version {' and '.join(found)}, set dataset.version={found[0]}"
    return ": check dataset.path (the release's data/ folder) and dataset.version (1k | pure | 27k)"


def _scan(
    files: list[Path], what: str, required: tuple[str, ...], types: dict, infer_all: bool = False
) -> pl.LazyFrame:
    """Lazy scans of KuaiRand CSVs (comma-separated, one header each), checked file by file, concatenated."""
    scans = []
    for file in files:
        lazy = pl.scan_csv(
            file, schema_overrides=types, null_values=NULLS, infer_schema_length=None if infer_all else 10_000
        )
        names = lazy.collect_schema().names()
        missing = [c for c in required if c not in names]
        if missing:
            shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
            raise UserError(
                f"{file} ({what}) has no column(s) {missing}; its header reads: {shown}. KuaiRand "
                "files are comma-separated with a header row: check that the file is the release's, "
                "unmodified"
            )
        if scans and set(names) != set(scans[0].collect_schema().names()):
            raise UserError(f"{file} has other columns than {files[0]}: the {what} files need the same header")
        scans.append(lazy)
    if len(scans) == 1:
        return scans[0]
    columns = scans[0].collect_schema().names()
    return pl.concat([lazy.select(columns) for lazy in scans], how="vertical_relaxed")


def _unique_key(table: pl.LazyFrame, key: str, files: list[Path]) -> pl.LazyFrame:
    """A feature table joined on `key` must hold each key once, or the join would repeat log rows."""
    rows, keys = table.select(pl.len(), pl.col(key).n_unique()).collect().row(0)
    if rows != keys:
        raise UserError(
            f"{files[0]} holds {rows - keys} repeated {key} value(s): each {key} must appear once "
            "to be joined with the logs; check the file"
        )
    return table
