"""Helpers of the tests that start real processes: a free loopback port, an HTTP server's health,
stopping a process group, N copies of one Python script run at once, and `make server`'s tracking server."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_healthy(url: str, server: subprocess.Popen, log: Path | None = None, timeout: float = 180.0) -> None:
    """Until GET <url>/health answers OK; fail with the server's output (`log`) if it exits or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            output = log.read_text()[-3000:] if log else ""
            raise RuntimeError(f"server at {url} exited {server.returncode}: {output}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        time.sleep(0.5)
    raise TimeoutError(f"server at {url} not healthy after {timeout:.0f}s")


def stop_group(process: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM the process group of `process` (started with start_new_session=True), SIGKILL after `timeout`."""
    with contextlib.suppress(ProcessLookupError):  # gone already: it failed to start
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def run_at_once(script: str, arguments: list[list[str]], timeout: float = 300.0) -> None:
    """Run `python -c script` once per argument list, all at once; assert that every one exits 0."""
    jobs = [
        subprocess.Popen([sys.executable, "-c", script, *args], stderr=subprocess.PIPE, text=True) for args in arguments
    ]
    errors = [job.communicate(timeout=timeout)[1] for job in jobs]
    assert [job.returncode for job in jobs] == [0] * len(jobs), errors


@contextlib.contextmanager
def tracking_server(
    root: Path, store: str, *options: str, env: Mapping[str, str] | None = None, workers: int = 2
) -> Iterator[str]:
    """`make server`'s MLflow server (python -m ssimctr.tracking.server) on a free loopback port, its
    artifacts, basic-auth ini and users under `root`, with `options` (e.g. --auth) and environment `env`
    (default: this one); yields its URL, stops it on exit."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        sys.executable, "-m", "ssimctr.tracking.server", "--db", store, "--artifacts", str(root / "artifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers), "--state", str(root),
        "--auth-db", f"sqlite:///{root}/basic_auth.db", *options,
    ]  # fmt: skip
    # no MLflow job runner (GenAI scorers, prompt optimisation): one process less to start and stop
    env = {**(env or os.environ), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with (root / "server.log").open("w") as log:  # a pipe nobody reads would fill up
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
        try:
            wait_healthy(url, process, root / "server.log")
            yield url
        finally:
            stop_group(process)
