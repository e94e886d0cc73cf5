"""MLflow store conventions shared by the tracker, the run queries and the multirun callback.

mlflow-free: `runs` imports this at module level and must stay importable without mlflow.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from ssimctr.errors import UserError, cannot_write

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


# what sqlite says (through sqlalchemy, or MLflow's wrapping) when it cannot write the database file
SQLITE_WRITE_CAUSES = (
    "attempt to write a readonly database",
    "unable to open database file",
    "database or disk is full",
    "disk i/o error",
)


def unwritable_store(error: BaseException, uri: str) -> UserError | None:
    """The one line for an error that says the store at `uri` cannot be written (a read-only or full
    disk, a file in the way), from the error's text or its causes'; None for any other error."""
    if isinstance(error, OSError):
        return cannot_write(error, "tracking.uri", sqlite_file(uri), any_errno=True)
    seen: BaseException | None = error
    while seen is not None:
        text = str(seen).lower()
        cause = next((c for c in SQLITE_WRITE_CAUSES if c in text), None)
        if cause:
            fix = "free some space or choose another" if "full" in cause else "choose a writable"
            return UserError(f"cannot write {sqlite_file(uri) or uri}: {cause}; {fix} tracking.uri")
        seen = seen.__cause__ or seen.__context__
    return None


def paginate(fetch_page: Callable[[str | None], PagedList[_Item]]) -> Iterator[_Item]:
    """Every item of every page: `fetch_page(token)` returns the page at `token` (None: the first)."""
    token: str | None = None
    while True:
        page = fetch_page(token)
        yield from page
        token = page.token
        if not token:
            return
