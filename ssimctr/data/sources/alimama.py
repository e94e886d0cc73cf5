"""AliMama = "Ad Display/Click Data on Taobao.com" (Tianchi dataset 56; research/data-formats.md).

layout=raw: the original files in the folder `dataset.path`, comma-separated with a header:
  raw_sample.csv    user,time_stamp,adgroup_id,pid,nonclk,clk
  ad_feature.csv    adgroup_id,cate_id,campaign_id,customer,brand,price      (brand may be NULL)
  user_profile.csv  userid,cms_segid,cms_group_id,final_gender_code,age_level,pvalue_level,
                    shopping_level,occupation,new_user_class_level   (the last name ends with a space)
  raw_sample left-joins user_profile on user and ad_feature on adgroup_id (SSIM, docs/methods.md §1.8).
layout=joined: FuxiCTR's 19-column CSV (clk,time_stamp,userid,...,click_sequence; time_stamp a
  '%Y-%m-%d %H:%M:%S' string in China time), one file or folder; or its own train / val / test in
  dataset.path / val_path / test_path.

Both layouts give the same columns: clk, time_stamp (unix seconds), userid, adgroup_id, pid, the
ad and profile fields, price (float) and
  price_bucket  v > 2 -> floor(ln(v)^2), else int(v): SSIM's bucketing, applied consistently
                (docs/methods.md §1.8 notes the reference code's OOV bug; we do not reproduce it)
  context       pid when the scenario is shopping_level, shopping_level otherwise: the field that is
                not the scenario, so one categorical list serves dataset.scenario=shopping_level and =pid
Missing values of the joined fields become 0 (SSIM: NaN -> 0); a user without profile has
shopping_level 0, SSIM's fourth scenario.

`_split` (SSIM protocol): time_stamp before `test_start` (default 2017-05-12 00:00 China time, UTC+8,
as the reference's `datetime.fromtimestamp` on a China-time machine) is the train pool, of which a
seeded `val_fraction` validates; the rest is test. Use split=given. A joined layout with val_path and
test_path keeps its files' split instead.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from ssimctr.config.datasets import AliMamaConfig
from ssimctr.config.schema import SplitConfig
from ssimctr.data.columns import parse_cutoff
from ssimctr.data.sources.base import SPLIT_COLUMN, Source, release_folder
from ssimctr.data.sources.files import data_files, fingerprint
from ssimctr.data.sources.pools import carve_validation, check_fraction, pool_or_test, warn_unless_given
from ssimctr.errors import UserError

LAYOUTS = ("raw", "joined")
DOWNLOAD = "https://tianchi.aliyun.com/dataset/56"
CHINA_OFFSET_S = 8 * 3600  # China Standard Time, UTC+8 (no daylight saving since 1991)
RAW = {
    "raw_sample.csv": {
        "user": pl.Int64,
        "time_stamp": pl.Int64,
        "adgroup_id": pl.Int64,
        "pid": pl.String,
        "nonclk": pl.Int8,
        "clk": pl.Int8,
    },
    "ad_feature.csv": {
        "adgroup_id": pl.Int64,
        "cate_id": pl.Int64,
        "campaign_id": pl.Int64,
        "customer": pl.Int64,
        "brand": pl.Int64,
        "price": pl.Float64,
    },
    "user_profile.csv": {
        "userid": pl.Int64,
        "cms_segid": pl.Int64,
        "cms_group_id": pl.Int64,
        "final_gender_code": pl.Int64,
        "age_level": pl.Int64,
        "pvalue_level": pl.Int64,
        "shopping_level": pl.Int64,
        "occupation": pl.Int64,
        "new_user_class_level": pl.Int64,
    },
}
AD = ("cate_id", "campaign_id", "customer", "brand")
PROFILE = (
    "cms_segid",
    "cms_group_id",
    "final_gender_code",
    "age_level",
    "pvalue_level",
    "shopping_level",
    "occupation",
    "new_user_class_level",
)
JOINED = {
    "clk": pl.Int8,
    "time_stamp": pl.String,
    "userid": pl.Int64,
    "adgroup_id": pl.Int64,
    "pid": pl.String,
    **{c: pl.Int64 for c in AD},
    "price": pl.Float64,
    **{c: pl.Int64 for c in PROFILE},
}
RAW_FIX = f"use the original file from {DOWNLOAD} (comma-separated, with its header), or set dataset.separator"
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
NULLS = ["", "NULL", "null", "NaN", "nan"]


def read_alimama(dataset: AliMamaConfig, rule: SplitConfig) -> Source:
    """The AliMama rows of `dataset.layout` with SSIM's `_split` (or the joined files' own; use split=given)."""
    if dataset.layout not in LAYOUTS:
        raise UserError(f"dataset.layout={dataset.layout} is not an AliMama layout: use one of {', '.join(LAYOUTS)}")
    if not dataset.path:
        raise UserError(
            f"dataset=alimama needs its files: set dataset.path=/path/to/folder (raw_sample.csv, "
            f"ad_feature.csv, user_profile.csv from {DOWNLOAD}), or dataset.layout=joined with a "
            "FuxiCTR CSV"
        )
    fraction = check_fraction(dataset.val_fraction, "dataset.val_fraction")
    test_start = parse_cutoff(dataset.test_start)
    scenario = dataset.scenario or "shopping_level"
    warn_unless_given(
        dataset.name,
        rule.kind,
        f"SSIM's: test from dataset.test_start, a seeded {fraction:.0%} "
        "of the earlier rows as val; or the joined layout's own files",
    )

    def ssim_split(frame: pl.LazyFrame) -> pl.LazyFrame:
        pooled = frame.with_columns(pool_or_test(pl.col("time_stamp"), test_start))
        return carve_validation(pooled, fraction, dataset.val_seed)

    if dataset.layout == "raw":
        folder = Path(dataset.path)
        paths = _raw_files(folder)
        for name, path in paths.items():
            _check_header(path, dataset.separator, list(RAW[name]), RAW_FIX)

        def load() -> pl.LazyFrame:
            return _derived(ssim_split(_raw_joined(paths, dataset.separator)), scenario)

        return Source(
            load=load, fingerprint={"files": fingerprint(list(paths.values())), "layout": "raw"}, origin=str(folder)
        )

    named = {"dataset.path": dataset.path, "dataset.val_path": dataset.val_path, "dataset.test_path": dataset.test_path}
    given = bool(dataset.val_path or dataset.test_path)
    if given and not (dataset.val_path and dataset.test_path):
        raise UserError(
            "dataset.layout=joined with its own split needs both dataset.val_path and dataset.test_path "
            "(or neither: then the SSIM time split of dataset.path)"
        )
    options = named if given else {"dataset.path": dataset.path}
    files = {option: data_files(Path(path), "csv", option) for option, path in options.items()}

    def load_joined() -> pl.LazyFrame:
        frames = [
            _scan_joined(paths, dataset.separator, option).with_columns(pl.lit(index, pl.Int8).alias(SPLIT_COLUMN))
            for index, (option, paths) in enumerate(files.items())
        ]
        frame = pl.concat(frames, how="vertical")
        # given: the files' own train / val / test are `_split` 0 / 1 / 2 already
        return _derived(frame if given else ssim_split(frame), scenario)

    every = [Path(p) for p in options.values()]
    return Source(
        load=load_joined,
        fingerprint={"files": fingerprint(every), "layout": "joined"},
        origin=", ".join(map(str, every)),
    )


class AliMamaReader(AliMamaConfig):
    """dataset=alimama: the AliMama release (raw or joined); `_target_` of schema_dataset_alimama."""

    def read(self, rule: SplitConfig) -> Source:
        """The rows of this dataset (`read_alimama`)."""
        return read_alimama(self, rule)


def _raw_files(folder: Path) -> dict[str, Path]:
    release_folder(
        folder,
        "raw_sample.csv, ad_feature.csv and user_profile.csv",
        "for FuxiCTR's joined CSV set dataset.layout=joined",
    )
    paths = {name: folder / name for name in RAW}
    for name, path in paths.items():
        if not path.is_file():
            raise UserError(
                f"dataset.path: {folder} has no {name}: the AliMama raw layout needs raw_sample.csv, "
                f"ad_feature.csv and user_profile.csv (unpacked) from {DOWNLOAD}"
            )
    return paths


def _header(path: Path, separator: str) -> list[str]:
    with open(path, "rb") as stream:
        return stream.readline().decode("utf-8", "replace").rstrip("\r\n").split(separator)


def _check_header(path: Path, separator: str, expected: list[str], fix: str) -> list[str]:
    """The file's column names (stripped); a clear error when an expected one is missing."""
    names = [n.strip().strip('"') for n in _header(path, separator)]
    missing = [c for c in expected if c not in names]
    if missing:
        raise UserError(
            f"{path}: columns {missing} are missing from its header {names[:20]} (separator {separator!r}): {fix}"
        )
    return names


def _scan(path: Path, separator: str, schema: dict, fix: str) -> pl.LazyFrame:
    names = _check_header(path, separator, list(schema), fix)
    overrides = {n: schema[n] for n in names if n in schema}
    return pl.scan_csv(
        path,
        separator=separator,
        with_column_names=lambda cols: [c.strip() for c in cols],
        schema_overrides=overrides,
        null_values=NULLS,
        infer_schema_length=10_000,
    )


def _raw_joined(paths: dict[str, Path], separator: str) -> pl.LazyFrame:
    sample, ad, profile = (
        _scan(path, separator, RAW[name], RAW_FIX).select(list(RAW[name])) for name, path in paths.items()
    )
    return (
        sample.rename({"user": "userid"})
        .join(profile.unique(subset="userid", keep="first"), on="userid", how="left", maintain_order="left")
        .join(ad.unique(subset="adgroup_id", keep="first"), on="adgroup_id", how="left", maintain_order="left")
        .select("clk", "time_stamp", "userid", "adgroup_id", "pid", *AD, "price", *PROFILE)
    )


def _scan_joined(files: list[Path], separator: str, option: str) -> pl.LazyFrame:
    fix = "a FuxiCTR Taobao CSV has clk,time_stamp,userid,adgroup_id,pid,... (or use dataset.layout=raw)"
    frames = [_scan(path, separator, JOINED, fix).select(list(JOINED)) for path in files]
    frame = pl.concat(frames, how="vertical") if len(frames) > 1 else frames[0]
    local = pl.col("time_stamp").str.to_datetime(TIME_FORMAT, strict=False, time_zone=None).dt.epoch("s")
    bad = frame.select(pl.col("time_stamp").head(1000)).filter(local.is_null() & pl.col("time_stamp").is_not_null())
    sample = bad.head(1).collect().to_series().to_list()
    if sample:
        raise UserError(
            f"{option}: time_stamp {sample[0]!r} is not a '{TIME_FORMAT}' date (FuxiCTR's joined "
            "layout): check the file, or use dataset.layout=raw for the original unix-second files"
        )
    return frame.with_columns((local - CHINA_OFFSET_S).alias("time_stamp"))


def _derived(frame: pl.LazyFrame, scenario: str) -> pl.LazyFrame:
    """NaN -> 0 on joined fields, price_bucket, context (the one of pid / shopping_level not the scenario)."""
    price = pl.col("price")
    bucket = pl.when(price > 2).then((price.log() ** 2).floor()).otherwise(price).cast(pl.Int64)
    other = pl.col("shopping_level").cast(pl.String) if scenario == "pid" else pl.col("pid")
    return frame.with_columns(pl.col(*AD, *PROFILE).fill_null(0), pl.col("price").fill_null(0.0)).with_columns(
        bucket.alias("price_bucket"), other.alias("context")
    )
