"""Each job's own folder, whatever starts at the same moment.

Hydra names a run's folder (`hydra.run.dir`) and a multirun's (`hydra.sweep.dir`) in conf/config.yaml
with `${ssimctr.job_folder:}`: `<date>/<time>-<tag>`, where the tag tells apart jobs started in the
same second:

- a plain process: its pid (two live processes of one machine never share one);
- the ranks of one torchrun job: all of them must agree on one folder, so the time is the torchrun
  agent's start (their parent process, one per machine) and the tag comes from the rendezvous:
  `TORCHELASTIC_RUN_ID` (`--rdzv-id`, a uuid under `--standalone`), or, for the default static
  rendezvous (run id "none"), the agent's pid. Two torchrun jobs of one machine have two agents.

The value is computed once per process, so every resolution of the folder in that process agrees.
"""

from __future__ import annotations

import hashlib
import os
import socket
from datetime import datetime
from functools import cache

import psutil
from omegaconf import OmegaConf

RESOLVER = "ssimctr.job_folder"
TORCHRUN_ENV = "TORCHELASTIC_RUN_ID"  # set by torchrun's agent in every rank it starts


@cache
def job_folder() -> str:
    """`<YYYY-MM-DD>/<HH-MM-SS>-<tag>` of this process's job (see the module's docstring)."""
    run_id = os.environ.get(TORCHRUN_ENV)
    if run_id is None:
        return f"{datetime.now():%Y-%m-%d/%H-%M-%S}-{os.getpid()}"
    agent = psutil.Process(os.getppid())
    started = datetime.fromtimestamp(agent.create_time())
    rendezvous = run_id if run_id != "none" else f"{socket.gethostname()}:{agent.pid}"
    digest = hashlib.sha256(rendezvous.encode()).hexdigest()[:8]
    return f"{started:%Y-%m-%d/%H-%M-%S}-torchrun-{digest}"


def register_resolver() -> None:
    """Make `${ssimctr.job_folder:}` available to the configs (before Hydra composes)."""
    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, job_folder)
