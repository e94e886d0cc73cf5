"""Sources: read a dataset's own files into one polars LazyFrame (+ a fingerprint for the cache).

A source knows only its file layout. Everything after reading (validation, scenarios, splits,
vocabularies) is shared and lives in ssimctr.data.prepare.
"""
from __future__ import annotations

from typing import Callable

from ssimctr.config.schema import DatasetConfig, SplitConfig
from ssimctr.data.sources.base import Source
from ssimctr.data.sources.aliccp import read_aliccp
from ssimctr.data.sources.alimama import read_alimama
from ssimctr.data.sources.antm2c import read_antm2c
from ssimctr.data.sources.files import read_files
from ssimctr.data.sources.kuairand import read_kuairand
from ssimctr.data.sources.movielens import read_movielens
from ssimctr.data.sources.synthetic import read_synthetic
from ssimctr.errors import UserError

Reader = Callable[[DatasetConfig, SplitConfig], Source]
READERS: dict[str, Reader] = {
    "files": read_files,
    "synthetic": read_synthetic,
    "aliccp": read_aliccp,
    "alimama": read_alimama,
    "antm2c": read_antm2c,
    "kuairand": read_kuairand,
    "movielens": read_movielens,
}


def load_source(dataset: DatasetConfig, split: SplitConfig) -> Source:
    """The rows of `dataset`; with split=given, a `_split` column says which file each row came from."""
    reader = READERS.get(dataset.source)
    if reader is None:
        raise UserError(f"dataset.source={dataset.source} is not a reader: use one of {', '.join(READERS)}")
    return reader(dataset, split)


__all__ = ["READERS", "Source", "load_source"]
