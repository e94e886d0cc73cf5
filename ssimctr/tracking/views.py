"""A saved view of the MLflow UI's runs table: each scenario's test AUC as columns, best mean first.

What MLflow's UI (3.17, 3.18) lets a client set, and what it does not (read from its JS bundle, checked in a
headless browser by tests/tracking/test_ui_browser.py):
- the runs table's columns are browser state (localStorage); their default (Source, Models, Dataset)
  cannot be changed from the store, nor can the GenAI / Model training switch, a browser-wide setting
  (localStorage `mlflow.workflowType`, GenAI by default: an experiment opens on its GenAI overview);
- an experiment tag `mlflow.sharedViewState.<id>` is a *saved view* (its state: the search facets,
  `searchFilter` among them, and the columns) (what the UI's "Views > Save view"
  writes): listed in the Views menu of the runs page, and opened by the link
  `<ui>/#/experiments/<experiment id>/runs?viewStateShareKey=<id>`; the query parameter
  `workflowType=machine_learning` opens it in the Model training mode;
- the experiment tag `mlflow.experimentKind` (`custom_model_development`) picks the experiment's type
  in UI builds without the switch; set at creation (`mlflow_tracker.create_experiment`).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable

VIEW_ID = "ssimctr-test-auc"
VIEW_NAME = "test AUC per scenario"
VIEW_TAG_PREFIX = "mlflow.sharedViewState."
VIEW_TAG = VIEW_TAG_PREFIX + VIEW_ID
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
METRIC_PREFIX = "test/auc/"
SORT_METRIC = "test/auc/mean"
# the runs the view lists: finished jobs (a failed run, a multirun's parent without test metrics left out)
VIEW_FILTER = f"attributes.status = 'FINISHED' and metrics.`{SORT_METRIC}` > 0"
UI_URL = "http://127.0.0.1:5000"  # `make ui`


def metric_column(key: str) -> str:
    """The UI's id of a metric column: metrics.`test/auc/s0`."""
    return f"metrics.`{key}`"


def view_columns(metric_keys: Iterable[str], columns: Iterable[str] = ()) -> list[str]:
    """`columns` (a saved view's), then a column for every test/auc/<scenario> key, scenarios in natural
    order before `mean` and `overall`."""
    keys = sorted({k for k in metric_keys if k.startswith(METRIC_PREFIX)}, key=_scenario_order)
    return list(dict.fromkeys([*columns, *map(metric_column, keys)]))


def view_tag_value(columns: list[str], created_ms: int | None = None) -> str:
    """The tag's value: the UI's saved-view envelope {name, createdAt, updatedAt, state} around the
    view state (JSON text): the finished jobs (`VIEW_FILTER`), the columns shown, sorted by the mean test
    AUC, best first."""
    now = int(time.time() * 1000)
    state = {
        "selectedColumns": columns,
        "orderByKey": metric_column(SORT_METRIC),
        "orderByAsc": False,
        "searchFilter": VIEW_FILTER,
    }
    created = now if created_ms is None else created_ms
    return json.dumps({"name": VIEW_NAME, "createdAt": created, "updatedAt": now, "state": json.dumps(state)})


def saved_columns(value: str | None) -> tuple[list[str], int | None]:
    """The columns and creation time of a saved view's tag value; ([], None) when unreadable."""
    try:
        envelope = json.loads(value or "")
        columns = json.loads(envelope["state"])["selectedColumns"]
        return [str(c) for c in columns], int(envelope["createdAt"])
    except (ValueError, KeyError, TypeError):
        return [], None


def save_runs_view(client, experiment_id: str, metric_keys: Iterable[str]) -> bool:  # noqa: ANN001 (MlflowClient)
    """Add the test/auc/* columns of `metric_keys` to the experiment's saved view (created on first use);
    True when the tag was written (False: no such metric, or the view has them all already)."""
    tags = client.get_experiment(experiment_id).tags
    columns, created = saved_columns(tags.get(VIEW_TAG))
    wanted = view_columns(metric_keys, columns)
    if wanted == columns or not wanted:
        return False
    client.set_experiment_tag(experiment_id, VIEW_TAG, view_tag_value(wanted, created))
    return True


def view_url(experiment_id: str, ui: str = UI_URL) -> str:
    """The link that opens the saved view in the Model training mode of the UI served at `ui`."""
    return (
        f"{ui.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning&viewStateShareKey={VIEW_ID}"
    )


def _scenario_order(key: str) -> tuple:
    name = key[len(METRIC_PREFIX) :]
    summary = ("mean", "overall")
    return (
        summary.index(name) + 1 if name in summary else 0,
        tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", name) if p),
    )
