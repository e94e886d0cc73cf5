"""Experiment tracking: the only package that imports mlflow.

This module re-exports the mlflow-free interface only; build a tracker with
`ssimctr.tracking.mlflow_tracker.make_tracker` (importing mlflow takes about a second).
"""

from ssimctr.tracking.base import (
    PARENT_RUN_ENV,
    NullTracker,
    Tracker,
    flatten_params,
    parent_run_id_from_env,
)

__all__ = ["PARENT_RUN_ENV", "NullTracker", "Tracker", "flatten_params", "parent_run_id_from_env"]
