"""Experiment tracking: the only package that imports mlflow.

This module exports the mlflow-free interface. `make_tracker` builds the class the `tracking` group's
`_target_` names: `base.NullTracker` (tracking=none) or `mlflow_tracker.MlflowTracker` (tracking=mlflow),
whose module imports mlflow only when a job tracks with it (importing mlflow takes about a second).
"""

from ssimctr.tracking.backends import keeps_runs, make_tracker
from ssimctr.tracking.base import PARENT_RUN_ENV, NullTracker, Tracker, flatten_params, parent_run_id_from_env

__all__ = [
    "PARENT_RUN_ENV",
    "NullTracker",
    "Tracker",
    "flatten_params",
    "keeps_runs",
    "make_tracker",
    "parent_run_id_from_env",
]
