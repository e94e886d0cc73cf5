"""Choose the tracker for `tracking.backend`; mlflow is imported only for the mlflow backend."""

from __future__ import annotations

from ssimctr.errors import UserError
from ssimctr.tracking.base import NullTracker, Tracker

BACKENDS = ("mlflow", "none")


def make_tracker(backend: str, uri: str, experiment: str, artifact_location: str | None) -> Tracker:
    """Build the tracker for `tracking.backend` (mlflow | none); mlflow is imported only when used."""
    if backend == "mlflow":
        from ssimctr.tracking.mlflow_tracker import MlflowTracker  # imports mlflow (about a second)

        return MlflowTracker(uri, experiment, artifact_location)
    if backend == "none":
        return NullTracker()
    raise UserError(f"tracking.backend={backend!r} is not supported; use one of: {', '.join(BACKENDS)}")
