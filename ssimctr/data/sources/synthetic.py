"""The built-in synthetic dataset as a source."""
from __future__ import annotations

from dataclasses import asdict

import polars as pl

from ssimctr.config.schema import SplitConfig, SyntheticConfig
from ssimctr.data import synthetic
from ssimctr.data.sources.base import Source
from ssimctr.errors import UserError

GENERATOR_ARGS = ("rows", "num_scenarios", "scenario_weights", "users", "items", "latent_dim",
                  "zipf_exponent", "shared_weight", "days")


def read_synthetic(dataset: SyntheticConfig, split: SplitConfig) -> Source:
    """Generate the synthetic rows (deterministic for the generator arguments)."""
    if split.kind == "given":
        raise UserError("dataset=synthetic has no train/val/test files of its own: use split=time or split=random")
    args = {name: getattr(dataset, name) for name in GENERATOR_ARGS}

    def load() -> pl.LazyFrame:
        try:
            return synthetic.generate(**args, seed=dataset.generator_seed).lazy()
        except ValueError as err:
            raise UserError(f"dataset=synthetic: {err}") from None

    return Source(load=load, fingerprint={"generator": asdict(dataset)}, origin="the synthetic generator")
