"""Seeding and torch process settings."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch


class GeneratorState:
    """`state_dict` / `load_state_dict` of an object whose randomness is its `self.generator` (a shuffling
    loader, SSIM-R's gate): what a checkpoint keeps so that a resumed job draws what it would have."""

    generator: torch.Generator

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextmanager
def seeded_torch(seed: int, device: torch.device) -> Iterator[None]:
    """Torch's random stream seeded with `seed` inside the block and put back after it: what runs
    inside depends on `seed` alone, and the caller's stream continues as if the block had not run."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else [], device_type="cuda"):
        torch.manual_seed(seed)
        yield


def configure_torch(threads: int | None) -> None:
    """Set intra-op threads and flush denormals (rare embedding rows drift into denormal floats
    after many Adam steps, which slowed long CPU runs ~7x with identical results)."""
    if threads:
        torch.set_num_threads(threads)
    torch.set_flush_denormal(True)


def resolve_device(name: str) -> torch.device:
    """`auto` = the first CUDA device when one is present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
