"""The job's tracker: the class the `tracking` group's `_target_` names, built with the group's keys
(tracking=none: `base.NullTracker`; tracking=mlflow: `mlflow_tracker.MlflowTracker`, whose module alone
imports mlflow)."""

from __future__ import annotations

from omegaconf import DictConfig

from ssimctr.tracking.base import Tracker
from ssimctr.utils.instantiate import instantiate


def make_tracker(tracking: DictConfig) -> Tracker:
    """The tracker of the `tracking` config."""
    return instantiate(tracking)
