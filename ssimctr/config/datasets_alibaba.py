"""Schemas of the Alibaba / Ant Group datasets (Ali-CCP, AliMama, AntM2C) in the dataset group.

Readers: ssimctr/data/sources/{aliccp,alimama,antm2c}.py; presets: conf/dataset/{aliccp,aliccp_full,
alimama,antm2c}.yaml.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ssimctr.config.datasets import DatasetConfig

ANTM2C_PARTS = ["antm2c_10m_part0", "antm2c_10m_part1", "antm2c_10m_part2"]


@dataclass
class AliCCPConfig(DatasetConfig):
    """Ali-CCP (Tianchi 408). raw: the four original files in the folder `path`, the official
    train file is the train pool (a seeded `val_fraction` of it validates), the official test file
    the test split. processed: the 33-column CSVs of torch-rechub / Scenario-Wise-Rec given as
    path / val_path / test_path. Use split=given with both."""

    source: str = "aliccp"
    layout: str = "raw"                   # raw | processed
    val_fraction: float = 0.1             # raw: share of the train pool that validates (SSIM: 10%)
    val_seed: int = 2020                  # raw: seed of that draw (SSIM's AliCCP code: 2020)


@dataclass
class AliMamaConfig(DatasetConfig):
    """AliMama / Taobao display ads (Tianchi 56). raw: raw_sample.csv + ad_feature.csv +
    user_profile.csv in the folder `path`; joined: the FuxiCTR 19-column CSV (one file: the time
    protocol below; with val_path and test_path: the files' own split). The reader assigns the
    SSIM split itself (train pool before `test_start`, a seeded `val_fraction` of it validates):
    use split=given."""

    source: str = "alimama"
    layout: str = "raw"                   # raw | joined
    test_start: str = "2017-05-12T00:00:00+08:00"  # first test instant (SSIM: local China time)
    val_fraction: float = 0.1
    val_seed: int = 2021                  # SSIM's AliMama code: pandas sample, seed 2021


@dataclass
class AntM2CConfig(DatasetConfig):
    """AntM2C (Alipay, ATEC): the 37-column event parts in the folder `path`, read together."""

    source: str = "antm2c"
    parts: list[str] = field(default_factory=lambda: list(ANTM2C_PARTS))  # file names in `path`
    has_header: bool = True               # the first line of each part names the columns


ALIBABA_SCHEMAS: dict[str, type] = {
    "aliccp": AliCCPConfig,
    "alimama": AliMamaConfig,
    "antm2c": AntM2CConfig,
}
