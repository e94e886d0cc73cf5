"""MLflow store conventions shared by the tracker, the run queries and the multirun callback.

mlflow-free: `runs` imports this at module level and must stay importable without mlflow.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
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


# MlflowException.error_code of a tracking server's HTTP 401 (no or wrong login) and 403 (no permission)
LOGIN_REFUSED = ("UNAUTHENTICATED", "CUSTOMER_UNAUTHORIZED")
PERMISSION_REFUSED = "PERMISSION_DENIED"
USERNAME_ENV, PASSWORD_ENV = "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"  # MLflow's client reads them


def refused(error: BaseException, uri: str, wanted: str) -> UserError | None:
    """The one line for a tracking server's refusal, None for any other error: of the login (HTTP 401),
    naming the variable to set or correct, or of the user's permission to `wanted` (HTTP 403; `wanted`
    says what was refused and how to get it, e.g. "log runs into experiment 'x': ask ... for EDIT")."""
    code = getattr(error, "error_code", None)
    if code not in (*LOGIN_REFUSED, PERMISSION_REFUSED):
        return None
    from mlflow.utils.credentials import read_mlflow_creds  # the environment's, else ~/.mlflow/credentials'

    user, password = read_mlflow_creds()
    if code == PERMISSION_REFUSED:
        return UserError(f"the tracking server {uri} does not let user {user!r} {wanted}")
    if user and not password:
        return UserError(f"the tracking server {uri} needs the password of user {user!r}: set {PASSWORD_ENV}")
    if not user:
        need = USERNAME_ENV if password else f"{USERNAME_ENV} and {PASSWORD_ENV}"
        return UserError(f"the tracking server {uri} lets in only its users: set {need} (an account its admin made)")
    return UserError(f"the tracking server {uri} refused user {user!r}: wrong {PASSWORD_ENV} (or {USERNAME_ENV})")


@contextmanager
def refusals(uri: str, wanted: str) -> Iterator[None]:
    """Inside the block, a tracking server's refusal of the login or of the permission to `wanted` is
    re-raised as its one line (`refused`)."""
    try:
        yield
    except Exception as error:
        problem = refused(error, uri, wanted)
        if problem is None:
            raise
        raise problem from None


def paginate(fetch_page: Callable[[str | None], PagedList[_Item]]) -> Iterator[_Item]:
    """Every item of every page: `fetch_page(token)` returns the page at `token` (None: the first)."""
    token: str | None = None
    while True:
        page = fetch_page(token)
        yield from page
        token = page.token
        if not token:
            return
