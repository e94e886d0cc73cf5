"""CSV or parquet files described in config (dataset=tabular and any dataset in a flat layout)."""

from __future__ import annotations

import csv
import mmap
from pathlib import Path

import polars as pl

from ssimctr.config.datasets import DatasetConfig
from ssimctr.config.schema import SplitConfig
from ssimctr.data.sources.base import SPLIT_COLUMN, Source
from ssimctr.errors import UserError

FORMATS = ("csv", "parquet")
RAW_LINE_SEPARATOR = "\x1f"  # reads a file's lines whole (first_ragged_line): a byte no text file holds


def read_files(dataset: DatasetConfig, rule: SplitConfig) -> Source:
    """Scan `dataset.path` (or, with split=given, the train/val/test paths) lazily."""
    if rule.kind == "given":
        named = {
            "dataset.path": dataset.path,
            "dataset.val_path": dataset.val_path,
            "dataset.test_path": dataset.test_path,
        }
        missing = [key for key, value in named.items() if not value]
        if missing:
            raise UserError(
                f"split=given needs the train, val and test files: set {', '.join(missing)} "
                "(or use split=time / split=random with one file)"
            )
        paths = [Path(p) for p in named.values()]
        for option, path in zip(named, paths):
            data_files(path, dataset.format, option)

        def load() -> pl.LazyFrame:
            scans = [scan(path, dataset, option) for option, path in zip(named, paths)]
            columns = [lazy.collect_schema().names() for lazy in scans]
            for option, path, names in zip(named, paths, columns):
                missing = [c for c in columns[0] if c not in names]
                extra = [c for c in names if c not in columns[0]]
                if missing or extra:
                    raise UserError(
                        f"split=given: {option} {path} has other columns than dataset.path "
                        f"{paths[0]} (missing: {missing}, extra: {extra}): the train, val and test "
                        "files need the same header"
                    )
            frames = [
                lazy.select(columns[0]).with_columns(pl.lit(index, pl.Int8).alias(SPLIT_COLUMN))
                for index, lazy in enumerate(scans)
            ]
            return pl.concat(frames, how="vertical_relaxed")
    else:
        if not dataset.path:
            raise UserError(f"dataset={dataset.name} needs a file: set dataset.path=/path/to/data.csv")
        paths = [Path(dataset.path)]
        data_files(paths[0], dataset.format, "dataset.path")

        def load() -> pl.LazyFrame:
            return scan(paths[0], dataset, "dataset.path")

    return Source(load=load, fingerprint={"files": fingerprint(paths)}, origin=", ".join(map(str, paths)))


class FilesReader(DatasetConfig):
    """dataset=tabular, douban, mind (any YAML on schema_dataset_files): flat CSV / parquet files."""

    def read(self, rule: SplitConfig) -> Source:
        """The rows of this dataset (`read_files`)."""
        return read_files(self, rule)


def scan(path: Path, dataset: DatasetConfig, option: str) -> pl.LazyFrame:
    """A lazy scan of one file, or of every file of the format in a folder."""
    files = data_files(path, dataset.format, option)
    fmt = file_format(files[0], dataset.format, option)
    if fmt == "parquet":
        frame = pl.scan_parquet(files)
        try:
            frame.collect_schema()
        except pl.exceptions.DuplicateError as error:
            raise UserError(
                f"{option}: {path} has {str(error).splitlines()[0]}: give each column its own name"
            ) from None
        return frame
    for file in files:  # polars renames a repeated header name (`a_duplicated_0`): refuse it instead
        check_unique_header(file, dataset.separator, option)
    frame = pl.scan_csv(
        files, separator=dataset.separator, infer_schema_length=10_000, null_values=["", "NULL", "null", "NaN", "nan"]
    )
    check_field_counts(frame, files, dataset.separator, option)
    return frame


def check_unique_header(file: Path, separator: str, option: str) -> None:
    """One line naming the columns a CSV file's header names more than once (and where)."""
    with open(file, newline="", encoding="utf-8", errors="replace") as handle:
        if len(separator) == 1:
            header = next(csv.reader(handle, delimiter=separator), [])
        else:
            header = handle.readline().rstrip("\r\n").split(separator)
    positions: dict[str, list[int]] = {}
    for index, name in enumerate(header, start=1):
        positions.setdefault(name, []).append(index)
    repeated = {name: places for name, places in positions.items() if len(places) > 1}
    if repeated:
        listed = "; ".join(f"'{name}' (columns {', '.join(map(str, places))})" for name, places in repeated.items())
        raise UserError(
            f"{option}: {file} names more than one column {listed}: give each column its own name in the header"
        )


def check_field_counts(frame: pl.LazyFrame, files: list[Path], separator: str, option: str) -> None:
    """One clear error naming the first line whose field count differs from the header's: polars fills
    the fields missing from a short line with nulls, silently, and refuses a long line without saying
    which. A short line leaves the last column null, so one polars pass over that column alone finds
    the files that may hold one (a few % of a preparation); only those are read again, line by line,
    for the first that does not fit (`first_ragged_line`)."""
    last = frame.collect_schema().names()[-1]
    try:
        if not frame.select(pl.col(last).is_null().any()).collect().item():
            return
    except pl.exceptions.ComputeError:  # a line with more fields than the header
        pass
    for file in files:
        found = first_ragged_line(file, separator)
        if found is None:
            continue
        line, header, fields = found
        if len(fields) < len(header):
            missing = ", ".join(header[len(fields) :])
            raise UserError(
                f"{option}: {file} line {line} has {len(fields)} field{'s' if len(fields) > 1 else ''} but the "
                f"header has {len(header)} names ({missing} missing): give each line a value (maybe empty) for "
                "every column"
            )
        raise UserError(
            f"{option}: {file} line {line} has {len(fields)} fields but the header has {len(header)} names: check "
            "the file's separator (dataset.separator) and the quoting of values that hold it"
        )


def first_ragged_line(file: Path, separator: str) -> tuple[int, list[str], list[str]] | None:
    """(line number, header, fields) of the first record whose field count differs from the header's
    (blank lines aside), None when every record fits; quoted values may hold separators and newlines.
    A file without quotes is one record per line: polars counts each line's separators (about 0.4 s per
    million lines); else Python's csv reader reads the records (about 1.2 s per million)."""
    if file.stat().st_size == 0:
        return None
    with open(file, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        plain = len(separator) == 1 and data.find(b'"') < 0 and data.find(RAW_LINE_SEPARATOR.encode()) < 0
        first = data.readline().decode("utf-8", errors="replace").rstrip("\r\n")
    if plain:
        header = first.split(separator)
        lines = pl.scan_csv(
            file, has_header=False, separator=RAW_LINE_SEPARATOR, quote_char=None, schema={"line": pl.String}
        )  # a blank line is a null row: the row index stays the line's
        ragged = (
            lines.with_row_index("index")
            .filter(
                (pl.col("index") > 0)
                & pl.col("line").is_not_null()
                & (pl.col("line").str.count_matches(separator, literal=True) != len(header) - 1)
            )
            .head(1)
            .collect()
        )
        if ragged.is_empty():
            return None
        return int(ragged["index"][0]) + 1, header, ragged["line"][0].rstrip("\r").split(separator)
    with open(file, newline="", encoding="utf-8", errors="replace") as handle:
        reader = csv.reader(handle, delimiter=separator)
        header = next(reader, None)
        if header is None:
            return None
        for fields in reader:
            if fields and len(fields) != len(header):
                return reader.line_num, header, fields
    return None


def data_files(path: Path, fmt: str, option: str) -> list[Path]:
    """The files a path stands for; a clear error when there are none."""
    if not path.exists():
        raise UserError(
            f"{option}: file not found: {path} (check the path; relative paths are relative to {Path.cwd()})"
        )
    if path.is_file():
        return [path]
    suffixes = (f".{fmt}",) if fmt in FORMATS else (".csv", ".parquet")
    files = sorted(p for p in path.iterdir() if p.suffix in suffixes and p.is_file())
    if not files:
        raise UserError(f"{option}: folder {path} holds no {' or '.join(suffixes)} files")
    kinds = sorted({p.suffix for p in files})
    if len(kinds) > 1:
        listed = "; ".join(f"{kind}: {', '.join(p.name for p in files if p.suffix == kind)}" for kind in kinds)
        raise UserError(
            f"{option}: folder {path} mixes formats ({listed}): set dataset.format=csv or "
            "dataset.format=parquet to read only those files"
        )
    return files


def file_format(path: Path, fmt: str, option: str) -> str:
    if fmt in FORMATS:
        return fmt
    if fmt != "auto":
        raise UserError(f"dataset.format={fmt} is not a format: use auto, csv or parquet")
    if path.suffix == ".parquet":
        return "parquet"
    if path.suffix in (".csv", ".txt", ".tsv"):
        return "csv"
    raise UserError(f"{option}: cannot tell the format of {path.name}: set dataset.format=csv or parquet")


def fingerprint(paths: list[Path]) -> list[dict]:
    """Path, size and modification time of every input file: a change invalidates the cache."""
    entries = []
    for path in paths:
        for file in [path] if path.is_file() else sorted(path.iterdir()):
            stat = file.stat()
            entries.append({"path": str(file.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns})
    return entries
