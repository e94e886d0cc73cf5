"""Sources: read a dataset's own files into one polars LazyFrame (+ a fingerprint for the cache).

A source knows only its file layout. Everything after reading (validation, scenarios, splits,
vocabularies) is shared and lives in ssimctr.data.prepare.
"""
from __future__ import annotations

from ssimctr.config.schema import DatasetConfig, SplitConfig, SyntheticConfig
from ssimctr.data.sources.base import Source
from ssimctr.data.sources.files import read_files
from ssimctr.data.sources.synthetic import read_synthetic


def load_source(dataset: DatasetConfig, split: SplitConfig) -> Source:
    """The rows of `dataset`; with split=given, a `_split` column says which file each row came from."""
    if isinstance(dataset, SyntheticConfig):
        return read_synthetic(dataset, split)
    return read_files(dataset, split)


__all__ = ["Source", "load_source"]
