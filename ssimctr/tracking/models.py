"""Logged models read back: a model URI's artifacts downloaded, its torch module loaded (mlflow.pytorch).

mlflow is imported inside the functions: importing this module costs nothing."""

from __future__ import annotations

from pathlib import Path

from ssimctr.errors import UserError
from ssimctr.tracking.store import refused, sqlite_file


def download_logged_model(uri: str, tracking_uri: str, destination: Path) -> Path:
    """The local folder of the logged model `uri` (`runs:/<run id>/<name>`, `models:/<model id>`, or any
    artifact URI), downloaded into `destination` from the store at `tracking_uri`; UserError when there is none."""
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    database = sqlite_file(tracking_uri)
    if database is not None and not database.is_file():  # opening it would create an empty store
        raise UserError(f"--uri {tracking_uri}: no MLflow store at {database} (give the store the job logged to)")
    try:
        return Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=_artifact_location(uri, tracking_uri), dst_path=str(destination), tracking_uri=tracking_uri
            )
        )
    except (MlflowException, OSError) as error:
        problem = refused(error, tracking_uri, f"read {uri}: ask the server's admin for READ on its experiment")
        if problem is not None:
            raise problem from None
        detail = (str(getattr(error, "message", error)).strip().splitlines() or [""])[0]
        raise UserError(
            f"--model {uri}: no logged model there in {tracking_uri} ({detail}); give runs:/<run id>/model "
            "(the run id the job printed under its table) or models:/<model id>, and the job's --uri"
        ) from None


def load_torch_model(folder: Path):
    """The torch module of a logged model's local folder, on the CPU."""
    import mlflow.pytorch
    import torch

    return mlflow.pytorch.load_model(str(folder), map_location=torch.device("cpu"))


def _artifact_location(uri: str, tracking_uri: str) -> str:
    """Where the artifacts of the logged model `uri` lie: `models:/<model id>` or `runs:/<run id>/<name>`
    (the run's logged model `name`: the run's own artifacts do not hold it) read through a client of
    `tracking_uri` (mlflow's own resolution asks the global store); any other URI unchanged."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    if uri.startswith("runs:/"):
        run_id, _, name = uri.removeprefix("runs:/").partition("/")
        experiment = client.get_run(run_id).info.experiment_id  # MlflowException when there is no such run
        found = client.search_logged_models(
            [experiment], filter_string=f"source_run_id = '{run_id}' AND name = '{name.strip('/')}'", max_results=1
        )
        if not found:
            raise UserError(
                f"--model {uri}: run {run_id} has no logged model '{name.strip('/')}' (it ran with "
                "tracking.log_model=false, or its task logs none)"
            )
        return found[0].artifact_location
    if uri.startswith("models:/m-"):
        return client.get_logged_model(uri.removeprefix("models:/").strip("/")).artifact_location
    return uri
