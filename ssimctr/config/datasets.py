"""Schemas of the dataset group, one per kind (conf/dataset/<name>.yaml: `defaults: [/schema_dataset_<kind>@_here_,
_self_]`).

`DatasetConfig` names the roles of a source's columns and is the schema of flat CSV / parquet files (kind
`files`: dataset=tabular, douban, mind). A dataset whose files need their own reader adds that reader's
options in a subclass: the synthetic generator, the Alibaba / Ant Group releases (Ali-CCP, AliMama, AntM2C)
and the public academic ones (KuaiRand, MovieLens). Each schema's `_target_` names its reader
(ssimctr.data.sources.<layout>), a subclass of the schema that reads the files, so a dataset YAML on a
schema gets that schema's reader. Each option's default lives here only; the presets name what differs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from omegaconf import MISSING

from ssimctr.errors import UserError

ANTM2C_PARTS = ["antm2c_10m_part0", "antm2c_10m_part1", "antm2c_10m_part2"]


@dataclass
class VectorFileConfig:
    """Precomputed vectors (e.g. one image embedding per item) joined to the rows by a key column during
    preparation (ssimctr.data.vectors): a parquet file of the key column and one float-list column."""

    path: str = MISSING
    key: str = MISSING  # the column of the data (and of the file) the vectors belong to, e.g. item_id
    name: str | None = None  # the field's name; null: the file's stem


@dataclass
class DatasetConfig:
    """A dataset read from files: which columns play which role."""

    _target_: str = "ssimctr.data.sources.files.FilesReader"  # the reader of the files' layout
    name: str = MISSING
    path: str | None = None  # a file or a folder of files (train file for split=given)
    val_path: str | None = None  # split=given only
    test_path: str | None = None  # split=given only
    format: str = "auto"  # auto | csv | parquet
    separator: str = ","
    label: str = MISSING
    label_threshold: float | None = None  # label = 1 where value >= threshold (e.g. a rating)
    scenario: str | None = None  # the column that names each row's scenario
    categorical: list[str] = field(default_factory=list)
    numeric: list[str] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    time: str | None = None
    time_format: str | None = None  # strptime format when the time column is a string
    user: str | None = None
    item: str | None = None
    user_features: list[str] = field(default_factory=list)  # the user's own attribute columns (task=cold_start)
    item_features: list[str] = field(default_factory=list)  # the item's own attribute columns (task=cold_start)
    min_freq: int = 1  # categorical values seen fewer times in train -> OOV (0)
    shard_rows: int = 5_000_000  # prepared splits are written as parquet shards of at most this many rows
    oracle: str | None = None  # a column of true click probabilities (synthetic data)
    truth: str | None = None  # a 0/1 column of planted shareable rows (synthetic data): SSIM's selection AUC
    vectors: list[VectorFileConfig] = field(default_factory=list)  # joined vector files (image vectors)

    def __post_init__(self) -> None:
        """Refuse values no preparation can use (checked when the runner reads the config, before any
        data is prepared or any run is logged)."""
        if self.shard_rows < 1:
            raise UserError(
                f"dataset.shard_rows={self.shard_rows}: a shard needs at least one row "
                f"(default {DatasetConfig.shard_rows})"
            )


@dataclass
class SyntheticConfig(DatasetConfig):
    """The built-in generator with a known hidden click model (ssimctr.data.synthetic); these are its
    parameters and their only defaults."""

    _target_: str = "ssimctr.data.sources.synthetic.SyntheticReader"

    rows: int = 500_000
    num_scenarios: int = 3
    scenario_weights: list[float] | None = None  # relative sizes; default: geometric, unequal
    users: int = 20_000
    items: int = 5_000
    latent_dim: int = 8
    zipf_exponent: float = 1.1
    shared_weight: float = 0.8  # share of the click logit common to all scenarios
    days: int = 30
    newcomers: float = 0.0  # share of users and of items that arrive late (rows only in the last days)
    shareable: float | None = None  # planted shareability: mean share of flagged rows (None: off)
    ctr: float | None = None  # every scenario's target CTR (None: spread over 3%..15%)
    generator_seed: int = 7

    def __post_init__(self) -> None:
        """Refuse generator parameters no data can be drawn with, before any run or data (as DatasetConfig)."""
        super().__post_init__()
        for key in ("rows", "num_scenarios", "users", "items", "latent_dim", "days"):
            if getattr(self, key) < 1:
                raise UserError(f"dataset.{key}={getattr(self, key)}: must be at least 1")
        ranges = {  # key: (holds, the range in words)
            "zipf_exponent": (self.zipf_exponent >= 0.0, "must be 0 or positive"),
            "shared_weight": (0.0 <= self.shared_weight <= 1.0, "must be in [0, 1]"),
            "newcomers": (0.0 <= self.newcomers < 1.0, "must be in [0, 1)"),
            "shareable": (self.shareable is None or 0.0 < self.shareable < 1.0, "must be in (0, 1), or null (none)"),
            "ctr": (self.ctr is None or 0.0 < self.ctr < 1.0, "must be in (0, 1), or null (3% to 15%)"),
        }
        for key, (holds, rule) in ranges.items():
            if not holds:
                raise UserError(f"dataset.{key}={getattr(self, key)}: {rule}")
        weights = self.scenario_weights
        if weights is not None and len(weights) != self.num_scenarios:
            raise UserError(
                f"dataset.scenario_weights={list(weights)}: needs dataset.num_scenarios={self.num_scenarios} "
                f"entries, got {len(weights)}"
            )
        if weights is not None and not all(math.isfinite(w) and w > 0 for w in weights):
            raise UserError(f"dataset.scenario_weights={list(weights)}: must all be positive and finite")


@dataclass
class AliCCPConfig(DatasetConfig):
    """Ali-CCP (Tianchi 408). raw: the four original files in the folder `path`, the official
    train file is the train pool (a seeded `val_fraction` of it validates), the official test file
    the test split. processed: the 33-column CSVs of torch-rechub / Scenario-Wise-Rec given as
    path / val_path / test_path. Use split=given with both."""

    _target_: str = "ssimctr.data.sources.aliccp.AliCCPReader"
    layout: str = "raw"  # raw | processed
    val_fraction: float = 0.1  # raw: share of the train pool that validates (SSIM: 10%)
    val_seed: int = 2020  # raw: seed of that draw (SSIM's AliCCP code: 2020)


@dataclass
class AliMamaConfig(DatasetConfig):
    """AliMama / Taobao display ads (Tianchi 56). raw: raw_sample.csv + ad_feature.csv +
    user_profile.csv in the folder `path`; joined: the FuxiCTR 19-column CSV (one file: the time
    protocol below; with val_path and test_path: the files' own split). The reader assigns the
    SSIM split itself (train pool before `test_start`, a seeded `val_fraction` of it validates):
    use split=given."""

    _target_: str = "ssimctr.data.sources.alimama.AliMamaReader"
    layout: str = "raw"  # raw | joined
    test_start: str = "2017-05-12T00:00:00+08:00"  # first test instant (SSIM: local China time)
    val_fraction: float = 0.1
    val_seed: int = 2021  # SSIM's AliMama code: pandas sample, seed 2021


@dataclass
class AntM2CConfig(DatasetConfig):
    """AntM2C (Alipay, ATEC): the 37-column event parts in the folder `path`, read together."""

    _target_: str = "ssimctr.data.sources.antm2c.AntM2CReader"
    parts: list[str] = field(default_factory=lambda: list(ANTM2C_PARTS))  # file names in `path`
    has_header: bool = True  # the first line of each part names the columns


@dataclass
class KuaiRandConfig(DatasetConfig):
    """KuaiRand (kuairand.com): the release's log + feature files, or Scenario-Wise-Rec's joined CSV."""

    _target_: str = "ssimctr.data.sources.kuairand.KuaiRandReader"
    layout: str = "raw"  # raw (folder of the release's CSVs) | joined (one CSV, 42 columns)
    version: str = "1k"  # raw: file suffix of the release: 1k | pure | 27k
    include_random: bool = False  # raw: also read log_random_* (randomly exposed videos)


@dataclass
class MovieLensConfig(DatasetConfig):
    """MovieLens-1M (grouplens.org): the ::-separated .dat files, or one joined CSV."""

    _target_: str = "ssimctr.data.sources.movielens.MovieLensReader"
    layout: str = "dat"  # dat (ratings/users/movies.dat folder) | csv (joined, with header)
    label_threshold: float | None = 4.0  # label = rating >= threshold


DATASET_SCHEMAS: dict[str, type] = {
    "files": DatasetConfig,
    "synthetic": SyntheticConfig,
    "aliccp": AliCCPConfig,
    "alimama": AliMamaConfig,
    "antm2c": AntM2CConfig,
    "kuairand": KuaiRandConfig,
    "movielens": MovieLensConfig,
}
"""The schema of each dataset kind, stored as `schema_dataset_<kind>`; its `_target_` names the kind's reader."""
