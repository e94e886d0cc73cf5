"""MLflow store conventions shared by the tracker, the run queries and the multirun callback.

mlflow-free: `runs` imports this at module level and must stay importable without mlflow.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from mlflow.store.entities.paged_list import PagedList

PARENT_RUN_TAG = "mlflow.parentRunId"  # = mlflow.utils.mlflow_tags.MLFLOW_PARENT_RUN_ID
SQLITE_PREFIX = "sqlite:///"

_Item = TypeVar("_Item")


def sqlite_file(uri: str) -> Path | None:
    """The database file of a `sqlite:///path` URI, None for other or in-memory URIs."""
    if not uri.startswith(SQLITE_PREFIX):
        return None
    path = uri[len(SQLITE_PREFIX) :].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def paginate(fetch_page: Callable[[str | None], PagedList[_Item]]) -> Iterator[_Item]:
    """Every item of every page: `fetch_page(token)` returns the page at `token` (None: the first)."""
    token: str | None = None
    while True:
        page = fetch_page(token)
        yield from page
        token = page.token
        if not token:
            return
