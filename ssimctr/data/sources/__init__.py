"""Sources: read a dataset's own files into one polars LazyFrame (+ a fingerprint for the cache).

A source knows only its file layout. Everything after reading (validation, scenarios, splits,
vocabularies) is shared and lives in ssimctr.data.prepare. Each layout's reader (`<layout>.py`) is a
subclass of its schema (ssimctr.config.datasets) with a `read` method; the schema's `_target_` names it.
"""

from __future__ import annotations

from omegaconf import OmegaConf

from ssimctr.config.datasets import DatasetConfig
from ssimctr.config.schema import SplitConfig
from ssimctr.data.sources.base import Reader, Source
from ssimctr.utils.instantiate import instantiate


def load_source(dataset: DatasetConfig, rule: SplitConfig) -> Source:
    """The rows of `dataset`, read by the reader its `_target_` names; with split=given, a `_split` column
    says which file each row came from."""
    reader: Reader = instantiate(OmegaConf.structured(dataset))
    return reader.read(rule)


__all__ = ["Reader", "Source", "load_source"]
