"""Schemas of the public academic datasets (KuaiRand, MovieLens, Douban, MIND) in the dataset group.

Douban and MIND are flat CSV files read by `source: files` (schema_files); KuaiRand and MovieLens
have readers of their own (ssimctr.data.sources.kuairand / .movielens) with the options below.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ssimctr.config.datasets import DatasetConfig


@dataclass
class KuaiRandConfig(DatasetConfig):
    """KuaiRand (kuairand.com): the release's log + feature files, or Scenario-Wise-Rec's joined CSV."""

    source: str = "kuairand"
    layout: str = "raw"                   # raw (folder of the release's CSVs) | joined (one CSV, 42 columns)
    version: str = "1k"                   # raw: file suffix of the release: 1k | pure | 27k
    include_random: bool = False          # raw: also read log_random_* (randomly exposed videos)


@dataclass
class MovieLensConfig(DatasetConfig):
    """MovieLens-1M (grouplens.org): the ::-separated .dat files, or one joined CSV."""

    source: str = "movielens"
    layout: str = "dat"                   # dat (ratings/users/movies.dat folder) | csv (joined, with header)
    label_threshold: Optional[float] = 4.0  # label = rating >= threshold


PUBLIC_SCHEMAS: dict[str, type] = {
    "kuairand": KuaiRandConfig,
    "movielens": MovieLensConfig,
}
