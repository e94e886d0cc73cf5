"""Sources: read a dataset's own files into one polars LazyFrame (+ a fingerprint for the cache).

A source knows only its file layout. Everything after reading (validation, scenarios, splits,
vocabularies) is shared and lives in ssimctr.data.prepare.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ssimctr.config.datasets import DATASET_SCHEMAS, DatasetConfig
from ssimctr.config.schema import SplitConfig
from ssimctr.data.sources.aliccp import read_aliccp
from ssimctr.data.sources.alimama import read_alimama
from ssimctr.data.sources.antm2c import read_antm2c
from ssimctr.data.sources.base import Source
from ssimctr.data.sources.files import read_files
from ssimctr.data.sources.kuairand import read_kuairand
from ssimctr.data.sources.movielens import read_movielens
from ssimctr.data.sources.synthetic import read_synthetic
from ssimctr.errors import UserError

Reader = Callable[[Any, SplitConfig], Source]
READERS: dict[str, Reader] = {
    "files": read_files,
    "synthetic": read_synthetic,
    "aliccp": read_aliccp,
    "alimama": read_alimama,
    "antm2c": read_antm2c,
    "kuairand": read_kuairand,
    "movielens": read_movielens,
}
"""The reader of each `dataset.source`; it takes the config of the same kind, DATASET_SCHEMAS[source]."""


def load_source(dataset: DatasetConfig, rule: SplitConfig) -> Source:
    """The rows of `dataset`; with split=given, a `_split` column says which file each row came from."""
    reader = READERS.get(dataset.source)
    if reader is None:
        raise UserError(f"dataset.source={dataset.source} is not a reader: use one of {', '.join(READERS)}")
    schema = DATASET_SCHEMAS[dataset.source]
    if not isinstance(dataset, schema):
        raise UserError(
            f"dataset.source={dataset.source} reads a {schema.__name__}, but dataset={dataset.name} is a "
            f"{type(dataset).__name__}: start its YAML with `defaults: [/schema_dataset_{dataset.source}"
            "@_here_, _self_]`, or use the preset of that source"
        )
    return reader(dataset, rule)


__all__ = ["READERS", "Source", "load_source"]
