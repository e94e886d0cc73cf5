"""The built-in synthetic dataset as a source."""

from __future__ import annotations

from dataclasses import asdict

import polars as pl

from ssimctr.config.datasets import SyntheticConfig
from ssimctr.config.schema import SplitConfig
from ssimctr.data import synthetic
from ssimctr.data.sources.base import Source
from ssimctr.errors import UserError


def read_synthetic(dataset: SyntheticConfig, rule: SplitConfig) -> Source:
    """Generate the synthetic rows (deterministic for the generator parameters)."""
    if rule.kind == "given":
        raise UserError("dataset=synthetic has no train/val/test files of its own: use split=time or split=random")

    def load() -> pl.LazyFrame:  # SyntheticConfig checked the generator's parameters when it was made
        return synthetic.generate(dataset).lazy()

    return Source(load=load, fingerprint={"generator": asdict(dataset)}, origin="the synthetic generator")


class SyntheticReader(SyntheticConfig):
    """dataset=synthetic: the built-in generator; `_target_` of schema_dataset_synthetic."""

    def read(self, rule: SplitConfig) -> Source:
        """The rows of this dataset (`read_synthetic`)."""
        return read_synthetic(self, rule)
