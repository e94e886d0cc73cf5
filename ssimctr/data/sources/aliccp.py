"""Ali-CCP (Alibaba Click and Conversion Prediction, Tianchi dataset 408; research/data-formats.md).

layout=raw: the four original files in the folder `dataset.path`, no header, comma-separated:
  sample_skeleton_{train,test}.csv  sample_id,click,purchase,common_feature_index,feature_num,feature_list
  common_features_{train,test}.csv  common_feature_index,feature_num,feature_list
  feature_list = features joined by \\x01, each `field\\x02feature_id\\x03value`.
  Each skeleton row is left-joined with the common (user-side) features of its index, within the
  same file pair. A column is made for every field the config names: a categorical / scenario /
  user / item column named by its field id (e.g. "101") holds the feature id, a numeric column
  named D<field> (e.g. "D853") holds the feature's value. As in the reference preprocessing
  (Scenario-Wise-Rec preprocess_ali_ccp.py), a field that occurs several times keeps its last
  occurrence, the common features win over the skeleton's, and a missing field is missing (-> OOV).
  `_split`: official train file = train pool (0, of which a seeded `val_fraction` -> 1), official
  test file = test (2): use split=given.
layout=processed: the 33-column CSVs of torch-rechub / Scenario-Wise-Rec (header
  click,purchase,101,...,301,...,D853), train / val / test in dataset.path / val_path / test_path.

Both layouts: a row with click=0 and purchase=1 (a conversion without a click; SSIM / AITM / ESMM
loaders drop it) gets a missing click and purchase, so the shared pipeline drops it and counts it
in the manifest under `dropped.label_missing`.
"""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl

from ssimctr.config.datasets import AliCCPConfig
from ssimctr.config.schema import SplitConfig
from ssimctr.data.sources.base import SPLIT_COLUMN, Source, release_folder
from ssimctr.data.sources.files import fingerprint, read_files
from ssimctr.data.sources.pools import carve_validation, check_fraction, warn_unless_given
from ssimctr.errors import UserError

LAYOUTS = ("raw", "processed")
DOWNLOAD = "https://tianchi.aliyun.com/dataset/408"
PAIRS = {
    0: ("sample_skeleton_train.csv", "common_features_train.csv"),
    2: ("sample_skeleton_test.csv", "common_features_test.csv"),
}
SKELETON = {
    "sample_id": pl.String,
    "click": pl.Int8,
    "purchase": pl.Int8,
    "common_feature_index": pl.String,
    "feature_num": pl.String,
    "feature_list": pl.String,
}
COMMON = {"common_feature_index": pl.String, "feature_num": pl.String, "feature_list": pl.String}
FIELD_ID = re.compile(r"^\d+(_\d+)?$")


def read_aliccp(dataset: AliCCPConfig, rule: SplitConfig) -> Source:
    """The Ali-CCP rows of `dataset.layout`; the raw layout marks its own `_split` (use split=given)."""
    if dataset.layout == "processed":
        return _read_processed(dataset, rule)
    if dataset.layout != "raw":
        raise UserError(f"dataset.layout={dataset.layout} is not an Ali-CCP layout: use one of {', '.join(LAYOUTS)}")
    warn_unless_given(
        dataset.name,
        rule.kind,
        f"official test file as test, a seeded {dataset.val_fraction:.0%} of the official train file as val",
    )
    return _read_raw(dataset)


class AliCCPReader(AliCCPConfig):
    """dataset=aliccp, aliccp_full: the Ali-CCP release (raw or processed); `_target_` of schema_dataset_aliccp."""

    def read(self, rule: SplitConfig) -> Source:
        """The rows of this dataset (`read_aliccp`)."""
        return read_aliccp(self, rule)


def drop_unclicked_purchases(frame: pl.LazyFrame) -> pl.LazyFrame:
    """click=0 & purchase=1 -> both labels missing (dropped and counted as label_missing)."""
    if not {"click", "purchase"} <= set(frame.collect_schema().names()):
        return frame
    inconsistent = (pl.col("click") == 0) & (pl.col("purchase") == 1)
    return frame.with_columns(
        pl.when(inconsistent).then(None).otherwise(pl.col(c)).alias(c) for c in ("click", "purchase")
    )


def _read_processed(dataset: AliCCPConfig, rule: SplitConfig) -> Source:
    files = read_files(dataset, rule)
    return Source(
        load=lambda: drop_unclicked_purchases(files.load()), fingerprint=files.fingerprint, origin=files.origin
    )


def _read_raw(dataset: AliCCPConfig) -> Source:
    folder = _folder(dataset)
    fraction = check_fraction(dataset.val_fraction, "dataset.val_fraction")
    categorical, numeric = _wanted_fields(dataset)
    paths = {index: (folder / skeleton, folder / common) for index, (skeleton, common) in PAIRS.items()}
    for skeleton, common in paths.values():
        _check_first_line(
            skeleton, len(SKELETON), "sample_id,click,purchase,common_feature_index,feature_num,feature_list"
        )
        _check_first_line(common, len(COMMON), "common_feature_index,feature_num,feature_list")

    def load() -> pl.LazyFrame:
        parts = [
            _joined(skeleton, common, categorical, numeric).with_columns(pl.lit(index, pl.Int8).alias(SPLIT_COLUMN))
            for index, (skeleton, common) in paths.items()
        ]
        frame = drop_unclicked_purchases(pl.concat(parts, how="vertical"))
        return carve_validation(frame, fraction, dataset.val_seed)

    files = [path for pair in paths.values() for path in pair]
    return Source(load=load, fingerprint={"files": fingerprint(files), "layout": "raw"}, origin=str(folder))


def _folder(dataset: AliCCPConfig) -> Path:
    if not dataset.path:
        raise UserError(
            "dataset=aliccp needs the folder of the original files: set dataset.path=/path/to/aliccp "
            f"(sample_skeleton_{{train,test}}.csv and common_features_{{train,test}}.csv from {DOWNLOAD})"
        )
    folder = release_folder(
        Path(dataset.path),
        "sample_skeleton_{train,test}.csv and common_features_{train,test}.csv",
        "for the 33-column processed CSVs set dataset.layout=processed and dataset.path/val_path/test_path",
    )
    for skeleton, common in PAIRS.values():
        for name in (skeleton, common):
            if not (folder / name).is_file():
                raise UserError(
                    f"dataset.path: {folder} has no {name}: the Ali-CCP raw layout needs "
                    "sample_skeleton_{train,test}.csv and common_features_{train,test}.csv, unpacked, "
                    f"from {DOWNLOAD}"
                )
    return folder


def _wanted_fields(dataset: AliCCPConfig) -> tuple[list[str], list[str]]:
    """Field ids whose feature id is a column, and field ids whose value is a column (D<field>)."""
    named = [dataset.scenario, dataset.user, dataset.item, *dataset.categorical]
    categorical = list(dict.fromkeys(c for c in named if c))
    bad = [c for c in categorical if not FIELD_ID.match(str(c))]
    if bad:
        raise UserError(
            f"dataset.categorical / scenario / user / item: {bad} are not Ali-CCP field ids: with "
            "dataset.layout=raw each column is a field id such as '101', '205' or '109_14'"
        )
    numeric = [str(c)[1:] for c in dataset.numeric]
    bad = [c for c in dataset.numeric if not (str(c).startswith("D") and FIELD_ID.match(str(c)[1:]))]
    if bad:
        raise UserError(
            f"dataset.numeric: {bad} are not Ali-CCP value columns: with dataset.layout=raw a numeric "
            "column is D<field id>, the value part of that field's feature (e.g. 'D853')"
        )
    return [str(c) for c in categorical], numeric


def _feature_id(field: str, column: str = "feature_list") -> pl.Expr:
    """The feature id of the last occurrence of `field` in a \\x01\\x02\\x03 feature list."""
    return pl.col(column).str.extract(rf"(?:.*\x01|^){re.escape(field)}\x02([^\x01\x02\x03]*)\x03", 1)


def _feature_value(field: str, column: str = "feature_list") -> pl.Expr:
    """The value of the last occurrence of `field` (a float)."""
    pattern = rf"(?:.*\x01|^){re.escape(field)}\x02[^\x01\x02\x03]*\x03([^\x01]*)"
    return pl.col(column).str.extract(pattern, 1).cast(pl.Float64, strict=False)


def _joined(skeleton: Path, common: Path, categorical: list[str], numeric: list[str]) -> pl.LazyFrame:
    """One file pair: skeleton rows with their common features, wanted fields only."""

    def extracted(prefix: str) -> list[pl.Expr]:
        return [_feature_id(f).alias(f"{prefix}{f}") for f in categorical] + [
            _feature_value(f).alias(f"{prefix}D{f}") for f in numeric
        ]

    sample = pl.scan_csv(skeleton, has_header=False, schema=SKELETON, quote_char=None)
    shared = (
        pl.scan_csv(common, has_header=False, schema=COMMON, quote_char=None)
        .select("common_feature_index", *extracted("__c_"))
        .unique(subset="common_feature_index", keep="last")
    )
    names = categorical + [f"D{f}" for f in numeric]
    return (
        sample.select("click", "purchase", "common_feature_index", *extracted("__s_"))
        .join(shared, on="common_feature_index", how="left", maintain_order="left")
        .select("click", "purchase", *[pl.coalesce(f"__c_{n}", f"__s_{n}").alias(n) for n in names])
    )


def _check_first_line(path: Path, columns: int, names: str) -> None:
    """The first line has `columns` comma-separated fields and a \\x01\\x02\\x03 feature list (a clear error
    for another separator, a header line or a processed file)."""
    with open(path, "rb") as stream:
        line = stream.readline().rstrip(b"\r\n")
    if not line:
        raise UserError(f"{path} is empty: download the Ali-CCP files again from {DOWNLOAD}")
    fields = line.split(b",")
    if len(fields) != columns or b"\x02" not in fields[-1] or b"\x03" not in fields[-1]:
        shown = line[:80].decode("utf-8", "replace").encode("unicode_escape").decode()
        raise UserError(
            f"{path} is not an original Ali-CCP file: its first line ({shown!r}) should be {columns} "
            f"comma-separated fields without a header ({names}), the last one a feature list "
            "`field\\x02id\\x03value` joined by \\x01. Use the unpacked original files, or "
            "dataset.layout=processed for the 33-column CSVs"
        )
