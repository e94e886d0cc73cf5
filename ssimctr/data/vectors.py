"""Precomputed vectors joined during preparation (`dataset.vectors=[{path: img.parquet, key: item_id}]`).

A vector file is a parquet file with the key column and one column of fixed-length float lists. Its
distinct keys, in file order (the first row of a repeated key wins), get the indexes 1..n; the prepared
rows carry the index of their key in an Int32 column named after the field (0: no vector for the key,
counted per split in the manifest), and the vectors are written to `vectors/<name>.parquet` in the
prepared folder, row i - 1 for index i. The model reads them as a projected field whose index 0 is a
learned "missing" vector (ssimctr.models.layers.encoded).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from ssimctr.config.datasets import VectorFileConfig
from ssimctr.errors import UserError

VECTOR_FOLDER = "vectors"


def field_name(spec: VectorFileConfig) -> str:
    return spec.name or Path(spec.path).stem


def fingerprints(specs: list[VectorFileConfig]) -> list[dict]:
    """Size and modification time of each vector file (part of the preparation's cache key)."""
    return [{"path": str(Path(s.path).resolve()), **_stat(Path(s.path))} for s in specs]


def join_vectors(frame: pl.LazyFrame, specs: list[VectorFileConfig], out: Path, origin: str) -> pl.LazyFrame:
    """`frame` with one index column per vector file; each file's vectors written under `out`."""
    columns = frame.collect_schema().names()
    for position, spec in enumerate(specs):
        option = f"dataset.vectors[{position}]"
        name = field_name(spec)
        if spec.key not in columns:
            raise UserError(
                f"{option}.key: column '{spec.key}' is not in {origin}. Columns there: {', '.join(columns)}"
            )
        if name in columns:
            raise UserError(f"{option}: the field name '{name}' is a column of {origin} already: set {option}.name")
        table = read_vectors(spec, option)
        (out / VECTOR_FOLDER).mkdir(parents=True, exist_ok=True)
        table.select("vector").write_parquet(out / VECTOR_FOLDER / f"{name}.parquet")
        index = table.lazy().select(
            pl.col("key").alias(spec.key), pl.int_range(1, pl.len() + 1, dtype=pl.Int32).alias(name)
        )
        frame = frame.join(
            index, left_on=pl.col(spec.key).cast(pl.String), right_on=spec.key, how="left", maintain_order="left"
        ).with_columns(pl.col(name).fill_null(0))
        frame = frame.drop(f"{spec.key}_right", strict=False)
    return frame


def read_vectors(spec: VectorFileConfig, option: str) -> pl.DataFrame:
    """The file's distinct keys (as text) and vectors (Array of Float32), checked."""
    path = Path(spec.path)
    if not path.is_file():
        raise UserError(f"{option}.path: {path} is not a file")
    try:
        raw = pl.read_parquet(path)
    except pl.exceptions.PolarsError as error:
        raise UserError(f"{option}.path: {path} is not a readable parquet file: {str(error).splitlines()[0]}") from None
    lists = [c for c, dtype in raw.schema.items() if c != spec.key and isinstance(dtype, pl.List | pl.Array)]
    if spec.key not in raw.columns or len(lists) != 1:
        raise UserError(
            f"{option}: {path} needs the key column '{spec.key}' and one column of float lists "
            f"(it has {', '.join(f'{c}: {t}' for c, t in raw.schema.items())})"
        )
    table = raw.select(pl.col(spec.key).cast(pl.String).alias("key"), pl.col(lists[0]).alias("vector"))
    table = table.unique("key", keep="first", maintain_order=True)
    lengths = table["vector"].list.len() if isinstance(table.schema["vector"], pl.List) else None
    if lengths is not None:
        bad = (lengths != lengths[0]) | lengths.is_null()
        if bad.any():
            key = table["key"].filter(bad)[0]
            raise UserError(
                f"{option}: {path}: vectors differ in length: key {key!r} has "
                f"{lengths.filter(bad)[0]} values, the first vector has {lengths[0]}"
            )
        table = table.with_columns(pl.col("vector").cast(pl.Array(pl.Float32, int(lengths[0]))))
    return table.with_columns(pl.col("vector").cast(pl.Array(pl.Float32, table.schema["vector"].size)))


def missing_rows(out: Path, names: list[str], splits: tuple[str, ...]) -> dict:
    """Per vector field and split: the prepared rows without a vector (index 0)."""
    return {
        name: {
            split: int(pl.scan_parquet(out / split).select((pl.col(name) == 0).sum()).collect().item())
            for split in splits
        }
        for name in names
    }


def _stat(path: Path) -> dict:
    return {"size": path.stat().st_size, "mtime": path.stat().st_mtime_ns} if path.is_file() else {}
