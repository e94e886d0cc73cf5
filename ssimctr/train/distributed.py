"""Distributed data-parallel training (`trainer=ddp`, run under torchrun): the process group and what
the loop needs from it. Outside a process group every helper is the single-process identity, so the
loop calls them unconditionally.

- the group: gloo on the CPU, nccl on CUDA (one process per GPU, `cuda:LOCAL_RANK`), from torchrun's
  environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT);
- training: the model's `towers(batch)` and `model(batch)` (the routed own-tower path) run through
  DistributedDataParallel (`synced`), which averages the gradients of every rank at each backward. The id
  tables give dense gradients (`dense_gradients`), all-reduced like every other parameter's, and take
  Adam's dense step: nccl has no sparse all-reduce,
  and gloo's, which has one, aborted a rank now and then in our 2-process tests on a busy CPU (its
  sparse all-reduce exchanges buffers whose sizes differ from rank to rank and step to step). Under
  trainer=ddp, the tables therefore take trainer.optimizer's dense step whatever trainer/embedding_optimizer
  says (as trainer/embedding_optimizer=adam);
- every rank runs the same number of batches per epoch (`agreed_batches`: the minimum over ranks), else
  the ranks' all-reduces would not pair up and DDP would hang;
- evaluation: each rank predicts its share of the rows, `gathered` hands every rank all of them, so every
  rank computes the same metrics (and early-stops alike).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ssimctr.errors import UserError

RUN_HINT = "torchrun --nproc_per_node 2 -m ssimctr trainer=ddp ..."
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def init(device: torch.device) -> torch.device:
    """Join torchrun's process group (gloo on the CPU, nccl on CUDA); return this rank's device."""
    missing = [key for key in TORCHRUN_ENV if key not in os.environ]
    if missing:
        raise UserError(f"trainer=ddp runs under torchrun ({', '.join(missing)} unset): {RUN_HINT}")
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def teardown() -> None:
    """Leave the process group (a no-op outside one)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def active() -> bool:
    """Whether this process is a rank of a process group (trainer=ddp; a group of one still trains through DDP)."""
    return dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    """Rank 0: the process that logs, writes and prints."""
    return rank() == 0


def barrier() -> None:
    if active():
        dist.barrier()


@contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first (e.g. prepares the cached data); the others run it after it is done."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()


def _device() -> torch.device:
    """Where the group's collectives take tensors: this rank's GPU for nccl, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce(values: list[float], op: str = "sum") -> list[float]:
    """The element-wise sum / min / max of `values` over ranks (float64)."""
    if not active():
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=_device())
    dist.all_reduce(tensor, {"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}[op])
    return tensor.tolist()


def agreed_batches(batches: int, limit: int | None) -> int | None:
    """The batches every rank runs per epoch: the fewest any rank has (capped by `limit`). A rank's extra
    batch (its share has a row more, or a row group more when streaming) is dropped for that epoch."""
    if not active():
        return limit
    fewest = int(all_reduce([min(batches, limit) if limit else batches], "min")[0])
    if fewest < 1:
        raise UserError(
            f"trainer=ddp: a rank of {world_size()} has no training rows (streamed, each rank reads whole row "
            "groups): run fewer processes, or read the split into memory (trainer.in_memory=true)"
        )
    return fewest


def pooled_epoch(loss: float, rows: int, seconds: float) -> tuple[float, int, float]:
    """One epoch over every rank: (mean loss over all rows, rows of all ranks, the slowest rank's seconds)."""
    if not active():
        return loss, rows, seconds
    loss_sum, total = all_reduce([loss * rows, rows])
    (slowest,) = all_reduce([seconds], "max")
    return loss_sum / max(total, 1), int(total), slowest


def gathered(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """Each array (the same length n_r on rank r) concatenated over ranks in rank order, on every rank.
    Lengths may differ between ranks: sizes are gathered first and every rank pads to the longest. Values
    travel as float64, which holds float32 and int32-range integers exactly."""
    if not active():
        return arrays
    device = _device()
    rows = torch.from_numpy(np.stack([np.asarray(a, dtype=np.float64) for a in arrays], 1)).to(device)
    sizes = [torch.zeros(1, dtype=torch.int64, device=device) for _ in range(world_size())]
    dist.all_gather(sizes, torch.tensor([len(rows)], dtype=torch.int64, device=device))
    longest = int(max(s.item() for s in sizes))
    padded = torch.zeros(longest, len(arrays), dtype=torch.float64, device=device)
    padded[: len(rows)] = rows
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    joined = torch.cat([part[: int(size.item())] for part, size in zip(parts, sizes)]).cpu().numpy()
    return tuple(joined[:, i].astype(np.asarray(a).dtype) for i, a in enumerate(arrays))


def sync_buffers(model: nn.Module) -> None:
    """Rank 0's buffers (e.g. BatchNorm running statistics, which each rank updates on its own rows)
    on every rank, so every rank evaluates the same model."""
    if active():
        for buffer in model.buffers():
            dist.broadcast(buffer.data, 0)


class _Scores(nn.Module):
    """The model's two ways to score a batch as one module's forward, for DistributedDataParallel to wrap:
    every tower (`model.towers(batch)`) or each row's own (`model(batch)`, the routed path)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch, every_tower: bool):
        return self.model.towers(batch) if every_tower else self.model(batch)


class _ThroughDDP:
    """The model as a loss function sees it, with `towers` and `__call__` going through DDP (gradient sync)."""

    def __init__(self, model: nn.Module, ddp: nn.Module) -> None:
        self._model, self._ddp = model, ddp

    def towers(self, batch):
        return self._ddp(batch, every_tower=True)

    def __call__(self, batch):
        return self._ddp(batch, every_tower=False)

    def __getattr__(self, name: str):
        return getattr(self._model, name)


@contextmanager
def synced(model: nn.Module, loss_fn: Callable) -> Iterator[Callable]:
    """Inside the block, the loss function whose `model.towers(batch)` runs through DistributedDataParallel
    (built here, which also broadcasts rank 0's weights); `loss_fn` itself outside a process group."""
    if not active():
        yield loss_fn
        return
    from ssimctr.models.layers.core import dense_gradients

    cuda = _device().type == "cuda"
    with dense_gradients(model):  # dense all-reduce of the id tables (see the module docstring)
        ddp = nn.parallel.DistributedDataParallel(
            _Scores(model),
            device_ids=[_device()] if cuda else None,
            # both paths use every parameter in every batch, whatever its scenarios (the routed path runs a
            # scenario without rows through its tower on no rows: zero gradients), so DDP need not search
            # the graph for unused ones each step
            find_unused_parameters=False,
        )
        proxy = _ThroughDDP(model, ddp)
        yield lambda _, batch: loss_fn(proxy, batch)
