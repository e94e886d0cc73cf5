"""User mistakes (bad file, column, value or option) and interruptions: what the CLI reports in one line."""

from __future__ import annotations

import errno
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


class UserError(Exception):
    """A user mistake: the message names the file, column, value or option and the fix.

    The CLI prints it as one line and exits non-zero, without a traceback.
    """


# what a disk or its permissions refuse a write with: a user's setup to fix, not a bug to trace
WRITE_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR, errno.EEXIST}
FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}


def cannot_write(
    error: OSError, option: str, path: str | Path | None = None, any_errno: bool = False
) -> UserError | None:
    """The one line for an OSError a write met because of the disk or its permissions (read-only,
    full, not a folder): `cannot write PATH: CAUSE (errno N); choose a writable OPTION`. None for
    another OSError (a bug: it keeps its traceback) unless `any_errno` (the write was a probe).
    PATH is the error's own file name, else `path`."""
    if error.errno not in WRITE_ERRNOS and not (any_errno and error.errno):
        return None
    where = error.filename if error.filename is not None else path
    cause = (error.strerror or str(error)).lower()
    fix = f"free some space or choose another {option}" if error.errno in FULL_ERRNOS else f"choose a writable {option}"
    return UserError(f"cannot write {where}: {cause} (errno {error.errno}); {fix}")


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM: the run ends KILLED and the CLI prints one line, `str(self)`, and exits
    with 128 + `signum` (130 for Ctrl-C, 143 for SIGTERM)."""

    def __init__(self, cause: str = "interrupted", where: str = "", signum: int = signal.SIGINT) -> None:
        super().__init__(f"{cause} at {where}" if where else cause)
        self.cause, self.signum = cause, signum


@contextmanager
def stops_located(where: str | Callable[[], str]) -> Iterator[None]:
    """Turn a Ctrl-C (or an unlocated SIGTERM `Interrupted`) inside the block into an `Interrupted`
    that says where it happened: `where`, or `where()` when that is only known at the stop (e.g.
    "epoch 2, batch 10/40")."""
    try:
        yield
    except KeyboardInterrupt as stop:
        if isinstance(stop, Interrupted) and str(stop) != stop.cause:
            raise  # located already, deeper down
        cause, signum = (stop.cause, stop.signum) if isinstance(stop, Interrupted) else ("interrupted", signal.SIGINT)
        raise Interrupted(cause, where() if callable(where) else where, signum) from None
