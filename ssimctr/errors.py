"""User mistakes (bad file, column, value or option) and interruptions: what the CLI reports in one line."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class UserError(Exception):
    """A user mistake: the message names the file, column, value or option and the fix.

    The CLI prints it as one line and exits non-zero, without a traceback.
    """


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
