"""Training a method's own networks over warm entities with the model frozen: MetaEmb's generator and
CVAR's networks (docs/methods.md §3.8). Each pass visits the chosen entities in a seeded order,
`tasks_per_batch` at a time, with their support and query rows; the pass is recorded like an epoch of
`ssimctr.train.loop.fit` (rows, seconds, `validate`'s metrics, the mean losses), with no early stopping."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import nn

from ssimctr.coldstart.base import Episodes, frozen
from ssimctr.config.schema import TrainerConfig
from ssimctr.data.batch import Batch
from ssimctr.models.base import MultiScenarioModel
from ssimctr.train.loop import EpochClock, FitResult, Logger, Validator, print_epoch

# (entities [T], their support rows, each row's entity index into them, their query rows, ditto) -> [L] losses,
# the first the one minimized
Terms = Callable[[torch.Tensor, Batch, torch.Tensor, Batch, torch.Tensor], torch.Tensor]


class TaskRows:
    """Where each task's rows lie in a batch whose rows are contiguous per task, in task order."""

    def __init__(self, task: torch.Tensor, num_tasks: int) -> None:
        self.counts = torch.bincount(task, minlength=num_tasks)
        self.starts = self.counts.cumsum(0) - self.counts

    def take(self, batch: Batch, chosen: torch.Tensor) -> tuple[Batch, torch.Tensor]:
        """The rows of tasks `chosen` (in that order) and each row's position in `chosen`."""
        counts = self.counts[chosen]
        local = torch.repeat_interleave(torch.arange(len(chosen), device=chosen.device), counts)
        first = torch.repeat_interleave(self.starts[chosen], counts)
        within = torch.arange(len(local), device=chosen.device) - torch.repeat_interleave(
            counts.cumsum(0) - counts, counts
        )
        return batch.take(first + within), local


def entity_passes(
    model: MultiScenarioModel,
    networks: nn.Module,
    optimizer: torch.optim.Optimizer,
    tasks: Episodes,
    pool: torch.Tensor,
    terms: Terms,
    names: tuple[str, ...],
    passes: int,
    tasks_per_batch: int,
    validate: Validator,
    settings: TrainerConfig,
    log: Logger | None = None,
    first_step: int = 0,
) -> FitResult:
    """`passes` seeded passes (settings.seed) over the entities `pool` of `tasks`, `tasks_per_batch` per step
    (at most settings.limit_train_batches steps a pass); each step minimizes the first of `terms`. Pass i is
    logged at step first_step + i with `validate`'s metrics and the mean of each term under its name in
    `names` (e.g. "meta/loss"), plus "<prefix>/rows_per_s", and printed as an epoch of the phase <prefix>.
    The model is frozen throughout."""
    order = torch.Generator().manual_seed(settings.seed)
    support_rows = TaskRows(tasks.support_task, tasks.num_tasks)
    query_rows = TaskRows(tasks.query_task, tasks.num_tasks)
    device = tasks.query.label.device
    speed = f"{names[0].split('/')[0]}/rows_per_s"
    result = FitResult(phase=names[0].split("/")[0])
    clock = EpochClock(passes)
    with frozen(model):
        for epoch in range(1, passes + 1):
            networks.train()
            sums = torch.zeros(len(names), device=device)
            steps = rows = 0
            started = time.perf_counter()
            for chosen in pool[torch.randperm(len(pool), generator=order)].split(tasks_per_batch):
                if settings.limit_train_batches and steps >= settings.limit_train_batches:
                    break
                chosen = chosen.to(device)
                a, a_task = support_rows.take(tasks.support, chosen)
                b, b_task = query_rows.take(tasks.query, chosen)
                values = terms(chosen, a, a_task, b, b_task)
                optimizer.zero_grad(set_to_none=True)
                values[0].backward()
                optimizer.step()
                sums += values.detach()
                steps, rows = steps + 1, rows + len(a) + len(b)
            means = (sums / steps if steps else sums.fill_(float("nan"))).tolist()  # syncs the device
            seconds = time.perf_counter() - started
            result.train_rows += rows
            result.train_seconds += seconds
            metrics = validate(model)
            metrics.update(dict(zip(names, means)))
            metrics[speed] = rows / seconds if seconds else float("nan")
            result.epochs.append(metrics)
            if log:
                log(metrics, first_step + epoch)
            clock.ended(time.perf_counter() - started)
            print_epoch(result, epoch, passes, settings.monitor, clock.left(epoch), kind=result.phase)
    networks.eval()
    result.best_epoch = result.kept_epoch = len(result.epochs)  # no early stopping: the last pass is kept
    if result.epochs:
        result.best_value = result.epochs[-1].get(settings.monitor, float("nan"))
    return result
