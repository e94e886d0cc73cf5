"""Schemas of the dataset group (conf/dataset/<name>.yaml: `defaults: [schema_<kind>, _self_]`).

`DatasetConfig` names the roles of a source's columns; a dataset whose files need their own
reader sets `source` (see ssimctr.data.sources.READERS) and may add its own options in a subclass.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from omegaconf import MISSING


@dataclass
class DatasetConfig:
    """A dataset read from files: which columns play which role."""

    name: str = MISSING
    source: str = "files"                 # the reader of the files' layout (ssimctr.data.sources.READERS)
    path: Optional[str] = None            # a file or a folder of files (train file for split=given)
    val_path: Optional[str] = None        # split=given only
    test_path: Optional[str] = None       # split=given only
    format: str = "auto"                  # auto | csv | parquet
    separator: str = ","
    label: str = MISSING
    label_threshold: Optional[float] = None  # label = 1 where value >= threshold (e.g. a rating)
    scenario: Optional[str] = None        # the column that names each row's scenario
    categorical: list[str] = field(default_factory=list)
    numeric: list[str] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    time: Optional[str] = None
    time_format: Optional[str] = None     # strptime format when the time column is a string
    user: Optional[str] = None
    item: Optional[str] = None
    min_freq: int = 1                     # categorical values seen fewer times in train -> OOV (0)
    shard_rows: int = 5_000_000           # prepared splits are written as parquet shards of at most this many rows
    oracle: Optional[str] = None          # a column of true click probabilities (synthetic data)


@dataclass
class SyntheticConfig(DatasetConfig):
    """The built-in generator with a known hidden click model (ssimctr.data.synthetic)."""

    source: str = "synthetic"

    rows: int = 500_000
    num_scenarios: int = 3
    scenario_weights: Optional[list[float]] = None  # relative sizes; default: geometric, unequal
    users: int = 20_000
    items: int = 5_000
    latent_dim: int = 8
    zipf_exponent: float = 1.1
    shared_weight: float = 0.8            # share of the click logit common to all scenarios
    days: int = 30
    generator_seed: int = 7
