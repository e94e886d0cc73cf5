"""The one place where `_target_` configs become objects."""

from __future__ import annotations

from typing import Any

from hydra.utils import instantiate as hydra_instantiate
from omegaconf import DictConfig


def instantiate(config: DictConfig, **runtime: Any) -> Any:
    """Build the object named by `config._target_` with the config's keys (as plain Python values; a
    schema dataclass nested in it, e.g. dataset.vectors' VectorFileConfig, as that dataclass) plus
    `runtime` kwargs, which are passed through untouched (Hydra would turn them into configs)."""
    factory = hydra_instantiate(config, _partial_=True, _convert_="object")
    return factory(**runtime)
