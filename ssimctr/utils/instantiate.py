"""The one place where `_target_` configs become objects."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hydra.utils import instantiate as hydra_instantiate
from omegaconf import DictConfig


def instantiate(config: DictConfig, **runtime: Any) -> Any:
    """Build the object named by `config._target_` with the config's keys (as plain Python values; a
    schema dataclass nested in it, e.g. dataset.vectors' VectorFileConfig, as that dataclass) plus
    `runtime` kwargs, which are passed through untouched (Hydra would turn them into configs)."""
    return factory(config)(**runtime)


def factory(config: DictConfig) -> Callable[..., Any]:
    """What `config._target_` names with the config's keys bound (as `instantiate` passes them): call it
    with the runtime kwargs to build the object."""
    return hydra_instantiate(config, _partial_=True, _convert_="object")


class BuiltFromSchema:
    """Mixin of a class that subclasses the schema it is built from, where one schema serves several classes
    (the regimes, the frozen text encoders): after the schema's checks, `_target_` names the class built, so
    the object says what it is (its repr, `asdict`), also when it is made directly."""

    def __post_init__(self) -> None:
        super().__post_init__()  # the schema's checks
        self._target_ = f"{type(self).__module__}.{type(self).__qualname__}"
