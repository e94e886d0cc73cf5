"""AntM2C (Alipay; arXiv 2308.16437, SIGIR 2024; research/data-formats.md, docs/methods.md §2).

The 10M-row release ships as `antm2c_10m_part0..2` (no file extension; `.csv` is accepted too) in
the folder `dataset.path`, read together in that order. Each part: one header line, then 37 columns
  user_id, item_id, log_time ('%Y-%m-%d %H:%M:%S'), label (click 0/1),
  bill_entity_seq, service_entity_seq, query_entity_seq, item_entity_names, item_title  (Chinese text),
  scene (the scenario), deep_features_0 .. deep_features_26 (anonymized categorical ids).
Columns are named by position, as the third-party loaders do (pandas `names=COLUMNS`, first line
skipped), so a header with other spellings still reads. Separator and header are not verified
against the official files: comma and a header line are what those loaders assume; set
dataset.separator / dataset.has_header when the files differ. Every column is read as text
(label as a number), so ids keep their exact spelling.
"""

from __future__ import annotations

import csv
from pathlib import Path

import polars as pl

from ssimctr.config.datasets import AntM2CConfig
from ssimctr.config.schema import SplitConfig
from ssimctr.data.sources.base import Source, release_folder
from ssimctr.data.sources.files import fingerprint
from ssimctr.errors import UserError

DOWNLOAD = "https://www.atecup.cn (OfficalDataSet page)"
TEXT = ["bill_entity_seq", "service_entity_seq", "query_entity_seq", "item_entity_names", "item_title"]
DEEP = [f"deep_features_{i}" for i in range(27)]
COLUMNS = ["user_id", "item_id", "log_time", "label", *TEXT, "scene", *DEEP]
OTHER_SEPARATORS = (",", "\t", ";", "|", "\x01")


def read_antm2c(dataset: AntM2CConfig, rule: SplitConfig) -> Source:
    """The AntM2C parts read together, every column as text (label as a number)."""
    files = part_files(dataset)
    for path in files:
        _check_first_line(path, dataset.separator, dataset.has_header)

    def load() -> pl.LazyFrame:
        frame = pl.scan_csv(
            files,
            has_header=dataset.has_header,
            separator=dataset.separator,
            schema={c: pl.String for c in COLUMNS},
            null_values=[""],
        )
        label = pl.col("label").str.strip_chars().cast(pl.Float64, strict=False).cast(pl.Int64)
        return frame.with_columns(label.alias("label"))

    return Source(load=load, fingerprint={"files": fingerprint(files)}, origin=str(Path(dataset.path)))


class AntM2CReader(AntM2CConfig):
    """dataset=antm2c: the AntM2C event parts; `_target_` of schema_dataset_antm2c."""

    def read(self, rule: SplitConfig) -> Source:
        """The rows of this dataset (`read_antm2c`)."""
        return read_antm2c(self, rule)


def part_files(dataset: AntM2CConfig) -> list[Path]:
    """The part files, in the order of dataset.parts; a clear error naming a missing one."""
    parts = list(dataset.parts)
    if not dataset.path:
        raise UserError(
            "dataset=antm2c needs the folder of the part files: set dataset.path=/path/to/antm2c "
            f"(antm2c_10m_part0, _part1, _part2 from {DOWNLOAD})"
        )
    folder = release_folder(
        Path(dataset.path), f"the AntM2C part files {', '.join(parts)}", "set dataset.parts to read other file names"
    )
    if not parts:
        raise UserError(
            "dataset.parts is empty: list the AntM2C part files to read (e.g. "
            "[antm2c_10m_part0,antm2c_10m_part1,antm2c_10m_part2])"
        )
    files = []
    for name in parts:
        found = [p for p in (folder / name, folder / f"{name}.csv") if p.is_file()]
        if not found:
            raise UserError(
                f"dataset.path: {folder} has no {name} (nor {name}.csv): download the part from "
                f"{DOWNLOAD} and unpack it there, or set dataset.parts to the parts you have"
            )
        files.append(found[0])
    return files


def _check_first_line(path: Path, separator: str, has_header: bool) -> None:
    """37 fields on the first line; a header where one is expected (and none where none is)."""
    with open(path, encoding="utf-8", errors="replace", newline="") as stream:
        line = stream.readline()
    if not line.strip():
        raise UserError(f"{path} is empty: download the part again from {DOWNLOAD}")
    fields = next(csv.reader([line], delimiter=separator)) if len(separator) == 1 else line.split(separator)
    if len(fields) != len(COLUMNS):
        fits = [
            s for s in OTHER_SEPARATORS if s != separator and len(next(csv.reader([line], delimiter=s))) == len(COLUMNS)
        ]
        hint = f"set dataset.separator={fits[0]!r}" if fits else "check that the file is an AntM2C part"
        raise UserError(
            f"{path}: the first line has {len(fields)} fields separated by {separator!r}, expected "
            f"{len(COLUMNS)} (user_id, item_id, log_time, label, 5 text fields, scene, "
            f"deep_features_0..26): {hint}"
        )
    looks_like_header = fields[2].strip() == "log_time" or not fields[2].strip()[:2].isdigit()
    if has_header and not looks_like_header:
        raise UserError(
            f"{path}: the first line looks like data (log_time {fields[2]!r}), not a header: "
            "set dataset.has_header=false"
        )
    if not has_header and looks_like_header:
        raise UserError(f"{path}: the first line looks like a header ({fields[:4]}): set dataset.has_header=true")
