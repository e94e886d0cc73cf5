"""Whether a process recorded earlier (its pid, beside a run or a staging folder) still runs."""

from __future__ import annotations

import psutil


def alive_since(pid: int, started: float) -> bool:
    """Whether process `pid` exists and was created no later than `started` (seconds since the epoch): a
    pid that a later process took over after the recorded one ended is not alive."""
    try:
        return psutil.Process(pid).create_time() <= started + 1.0
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return False
