"""The job's tracker: the class the `tracking` group's `_target_` names, built with the group's keys
(tracking=none: `base.NullTracker`; tracking=mlflow: `mlflow_tracker.MlflowTracker`, whose module alone
imports mlflow)."""

from __future__ import annotations

from hydra.utils import get_class
from omegaconf import DictConfig

from ssimctr.tracking.base import NullTracker, Tracker
from ssimctr.utils.instantiate import instantiate


def make_tracker(tracking: DictConfig) -> Tracker:
    """The tracker of the `tracking` config."""
    return instantiate(tracking)


def keeps_runs(tracking: DictConfig) -> bool:
    """Whether the `tracking` config's tracker keeps runs in a store (not the NullTracker of tracking=none)."""
    return not issubclass(get_class(str(tracking._target_)), NullTracker)
