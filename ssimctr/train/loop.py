"""Training and evaluation loops. The loop never knows which model it trains: it calls
`loss_fn(model, batch)` to train and `model(batch)` (own-scenario logits) to evaluate.
Every loop reads the trainer settings (`TrainerConfig`, the `trainer` config group) as one object."""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from rich import get_console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ssimctr.config.schema import TrainerConfig
from ssimctr.data.batch import Batch
from ssimctr.data.datasplit import DataSplit, Loader
from ssimctr.errors import UserError, stops_located
from ssimctr.metrics import scenario_metrics
from ssimctr.models.base import MultiScenarioModel
from ssimctr.train import distributed
from ssimctr.train.checkpoint import FitCheckpoint
from ssimctr.train.optim import ParamGroups, TrainingOptimizer, build_optimizer
from ssimctr.train.regularizers import regularized
from ssimctr.utils.instantiate import instantiate

LossFn = Callable[[MultiScenarioModel, Batch], torch.Tensor]
Logger = Callable[[dict[str, float], int], None]  # (metrics, step)
Validator = Callable[[MultiScenarioModel], dict[str, float]]
PROGRESS_EVERY = 10  # batches between progress updates (each update syncs the loss to the host)
logger = logging.getLogger(__name__)  # a job's main.log (Hydra's job log) gets each epoch's line


@dataclass
class FitResult:
    """What `fit` did: each epoch's metrics, the best epoch, the epoch whose weights the model
    ends with, and training throughput."""

    epochs: list[dict[str, float]] = field(default_factory=list)
    initial: dict[str, float] | None = None  # the model's metrics before training, when it competed (epoch 0)
    best_epoch: int = 0
    best_value: float = float("nan")
    kept_epoch: int = 0  # the epoch whose weights the model holds (0: none kept)
    train_rows: int = 0
    train_seconds: float = 0.0

    @property
    def rows_per_second(self) -> float:
        return self.train_rows / self.train_seconds if self.train_seconds else float("nan")

    @property
    def val(self) -> dict[str, float]:
        """The validation metrics of the model `fit` returned (the best epoch's when restored)."""
        metrics = self.epochs[self.kept_epoch - 1] if self.kept_epoch else self.initial or {}
        return {key: value for key, value in metrics.items() if key.startswith("val/")}


@dataclass
class Trained:
    """What a training procedure (a regime, an SSIM phase) gives back: the validation metrics of the
    selected model(s), their test metrics, each fit, and the selected model. The task makes its
    result (ssimctr.tasks.outcome.Outcome) of it.

    `val_logged`: the validation metrics were already logged per epoch under `val/*` (one model
    trained on every scenario); otherwise they are logged once, at the end."""

    val: dict[str, float]
    test: dict[str, float]
    fits: list[FitResult]
    val_logged: bool = True
    model: MultiScenarioModel | None = None  # the selected model, scoring every scenario (None: none kept)


def make_optimizer(settings: TrainerConfig, parameters: ParamGroups) -> TrainingOptimizer:
    """The training optimizer of the trainer's nested groups (trainer/optimizer for the dense weights,
    trainer/embedding_optimizer for the id tables' rows: ssimctr.train.optim) over `parameters`, or over
    parameter groups (dicts with their own `lr` / `weight_decay`)."""
    return build_optimizer(settings.optimizer, settings.embedding_optimizer, parameters)


def fit(
    model: MultiScenarioModel,
    loss_fn: LossFn,
    optimizer: torch.optim.Optimizer,
    train: Loader,
    validate: Validator,
    settings: TrainerConfig,
    *,
    restore_best: bool = True,
    keep_initial: bool = False,
    log: Logger | None = None,
) -> FitResult:
    """Train for up to `settings.epochs`, call `validate(model)` after each epoch (and `log` with
    its metrics), stop after `settings.patience` epochs without improvement of `settings.monitor`,
    and (unless restore_best is False) restore the best weights. `keep_initial`: the model as given
    competes as epoch 0, so fine-tuning that never improves validation keeps the given weights.
    Inside a job (ssimctr.train.checkpoint.checkpointing) each epoch is checkpointed, and a resumed
    job's fit restores its checkpoint: a fit that had ended returns its saved result untrained, one
    that was stopped trains on from the epoch after its last checkpoint (logging only the new epochs).
    Under trainer=ddp (ssimctr.train.distributed) the model trains through DistributedDataParallel,
    every rank runs the same number of batches, and the epoch's loss and rows are pooled over ranks."""
    mode = settings.monitor_mode
    if mode not in ("max", "min"):
        raise UserError(f"trainer.monitor_mode={mode}: use max or min")
    monitor = settings.monitor
    result = FitResult()
    best_state = None
    stale = 0
    first = 1
    loss_fn = regularized(loss_fn, [instantiate(config) for config in settings.regularizer.values()], model, settings)
    schedule = instantiate(settings.lr_schedule)
    checkpoint = FitCheckpoint.of_current(model, optimizer, loss_fn, train, settings.epochs)  # inside a job
    saved = checkpoint.restore() if checkpoint else None
    if saved is not None:  # a resumed job: this fit ended, or ended some epochs, before the stop
        result, best_state, stale = FitResult(**saved["result"]), saved["best_state"], saved["stale"]
        if settings.progress:
            done = "done" if saved["done"] else f"epoch {saved['epoch']} done"
            get_console().print(f"resumed from {checkpoint.path} ({done})")
        if saved["done"]:
            return result
        first = saved["epoch"] + 1 if stale < settings.patience else settings.epochs + 1  # stopped early already
    elif keep_initial:
        result.initial = _validated(validate(model), monitor)
        result.best_value = result.initial[monitor]
        best_state = copy.deepcopy(model.state_dict())
    limit = distributed.agreed_batches(len(train), settings.limit_train_batches)
    with distributed.synced(model, in_precision(loss_fn, settings.precision, train.device)) as train_loss:
        for epoch in range(first, settings.epochs + 1):
            with stops_located(f"epoch {epoch}, after its training batches"):  # the batches say which one
                loss, rows, seconds = _train_epoch(model, train_loss, optimizer, train, epoch, limit, settings.progress)
                loss, rows, seconds = distributed.pooled_epoch(loss, rows, seconds)
                distributed.sync_buffers(model)
                result.train_rows += rows
                result.train_seconds += seconds
                metrics = _validated(validate(model), monitor)
                metrics.update({"train/loss": loss, "train/rows_per_s": rows / seconds if seconds else float("nan")})
                result.epochs.append(metrics)
                if log:
                    log(metrics, epoch)
                _print_epoch(epoch, metrics, monitor, settings.progress)
                value = metrics[monitor]
                if _improved(value, result.best_value, mode):
                    result.best_epoch, result.best_value, stale = epoch, value, 0
                    best_state = copy.deepcopy(model.state_dict()) if restore_best else None
                else:
                    stale += 1
                schedule.after_epoch(optimizer, stale)
                if checkpoint:
                    best_is_current = restore_best and result.best_epoch == epoch
                    checkpoint.save_epoch(epoch, dataclasses.asdict(result), best_state, best_is_current, stale)
                if stale >= settings.patience:
                    break
    if best_state is not None:
        model.load_state_dict(best_state)
    result.kept_epoch = result.best_epoch if restore_best else len(result.epochs)
    if checkpoint:
        checkpoint.save_done(dataclasses.asdict(result))
    return result


def _validated(metrics: dict[str, float], monitor: str) -> dict[str, float]:
    """The validation metrics, after checking that the monitored one is among them."""
    if monitor not in metrics:
        raise UserError(
            f"trainer.monitor={monitor} is not a validation metric; choose one of "
            f"{', '.join(sorted(k for k in metrics if k.startswith('val/')))}"
        )
    return metrics


def _improved(value: float, best: float, mode: str) -> bool:
    if math.isnan(value):
        return False
    if math.isnan(best):
        return True
    return value > best if mode == "max" else value < best


def in_precision(loss_fn: LossFn, precision: str, device: torch.device) -> LossFn:
    """`loss_fn` with its forward under torch.autocast(bfloat16) for trainer.precision=bf16 (its loss
    returned as float32, so the backward runs outside autocast, as torch recommends); else itself."""
    if precision == "fp32":
        return loss_fn

    def autocast_loss(model: MultiScenarioModel, batch: Batch) -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            return loss_fn(model, batch).float()

    return autocast_loss


def _train_epoch(
    model: MultiScenarioModel,
    loss_fn: LossFn,
    optimizer: torch.optim.Optimizer,
    loader: Loader,
    epoch: int,
    limit_batches: int | None,
    show_progress: bool,
) -> tuple[float, int, float]:
    """One pass over the training batches: (mean loss, rows seen, seconds)."""
    model.train()
    total = min(len(loader), limit_batches) if limit_batches else len(loader)
    loss_sum = torch.zeros((), device=loader.device)
    rows = 0
    started = time.perf_counter()
    step = 0
    with _progress(show_progress) as bar:
        task = bar.add_task(f"epoch {epoch}", total=total, loss=float("nan"), speed=0.0)
        with stops_located(lambda: f"epoch {epoch}, batch {step}/{total}"):
            for step, batch in enumerate(loader, start=1):
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(model, batch)
                loss.backward()
                optimizer.step()
                loss_sum += loss.detach() * len(batch)
                rows += len(batch)
                if step % PROGRESS_EVERY == 0 or step == total:
                    elapsed = time.perf_counter() - started
                    bar.update(task, completed=step, loss=loss_sum.item() / rows, speed=rows / elapsed)
                if step == total:
                    break
    seconds = time.perf_counter() - started
    return loss_sum.item() / max(rows, 1), rows, seconds


def _print_epoch(epoch: int, metrics: dict[str, float], monitor: str, show: bool = True) -> None:
    """One line per epoch under its progress bar (`show`): the monitored metric, the training loss and
    speed; logged (INFO) either way."""
    line = (
        f"epoch {epoch}: {monitor} {metrics[monitor]:.4f}, train loss {metrics['train/loss']:.4f}, "
        f"{metrics['train/rows_per_s']:,.0f} rows/s"
    )
    logger.info(line)
    if show:
        get_console().print(line)


def _progress(show: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TextColumn("{task.fields[speed]:,.0f} rows/s"),
        TimeElapsedColumn(),
        disable=not show,
        transient=False,
    )


@torch.inference_mode()
def predict(model: MultiScenarioModel, loader: Loader) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels, own-scenario logits, scenario) for every row of `loader`, in loader order."""
    model.eval()
    labels, logits, scenarios = [], [], []
    for batch in loader:
        logits.append(model(batch).float())
        labels.append(batch.label)
        scenarios.append(batch.scenario)
    if not labels:  # no rows (e.g. a data-parallel rank's empty share of a streamed split)
        return np.zeros(0, np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)
    return tuple(torch.cat(parts).cpu().numpy() for parts in (labels, logits, scenarios))


def evaluate(model: MultiScenarioModel, loader: Loader, split: str, scenario_names: Sequence[str]) -> dict[str, float]:
    """Per-scenario, pooled and macro-mean AUC and logloss of `model` on `loader` (under trainer=ddp: on
    the rows of every rank's loader, gathered, so every rank gets the same metrics)."""
    labels, logits, scenario = distributed.gathered(*predict(model, loader))  # every rank's rows under ddp
    return scenario_metrics(split, labels, logits, scenario, scenario_names)


def validator(loader: Loader, scenario_names: Sequence[str], split: str = "val") -> Validator:
    """A `fit` validator: the metrics of `evaluate` on `loader`."""
    return lambda model: evaluate(model, loader, split, scenario_names)


def train_loader(data: DataSplit, settings: TrainerConfig) -> Loader:
    """The training loader: shuffled with the job's seed, training batch size."""
    return data.loader(settings.batch_size, shuffle=True, seed=settings.seed)


def eval_loader(data: DataSplit, settings: TrainerConfig) -> Loader:
    """An evaluation loader: unshuffled, evaluation batch size."""
    return data.loader(settings.eval_batch_size, shuffle=False)
