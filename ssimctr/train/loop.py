"""Training and evaluation loops. The loop never knows which model it trains: it calls
`loss_fn(model, batch)` to train and `model(batch)` (own-scenario logits) to evaluate.
Every loop reads the trainer settings (`TrainerConfig`, the `trainer` config group) as one object."""

from __future__ import annotations

import copy
import dataclasses
import datetime
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
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
_PHASE: ContextVar[str] = ContextVar("ssimctr_training_phase", default="")


@contextmanager
def training_phase(name: str) -> Iterator[None]:
    """Name the fits inside (their progress bar, epoch lines and `FitResult.phase`) when their caller
    cannot pass `fit(..., phase=)`: a method's base training run through another method's code."""
    token = _PHASE.set(name)
    try:
        yield
    finally:
        _PHASE.reset(token)


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
    phase: str = ""  # which training of the job this is (search, retrain, pretrain, meta, ...); "" when alone

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
    phase: str | None = None,
) -> FitResult:
    """Train for up to `settings.epochs`, call `validate(model)` after each epoch (and `log` with
    its metrics), stop after `settings.patience` epochs without improvement of `settings.monitor`,
    and (unless restore_best is False) restore the best weights. `keep_initial`: the model as given
    competes as epoch 0, so fine-tuning that never improves validation keeps the given weights.
    Inside a job (ssimctr.train.checkpoint.checkpointing) each epoch is checkpointed, and a resumed
    job's fit restores its checkpoint: a fit that had ended returns its saved result untrained, one
    that was stopped trains on from the epoch after its last checkpoint (logging only the new epochs).
    Under trainer=ddp (ssimctr.train.distributed) the model trains through DistributedDataParallel,
    every rank runs the same number of batches, and the epoch's loss and rows are pooled over ranks.
    `phase` names this training on the console and in `FitResult.phase` (default: `training_phase`'s name).
    Each epoch prints one line (whatever trainer.progress says; the progress bar only with it)."""
    mode = settings.monitor_mode
    if mode not in ("max", "min"):
        raise UserError(f"trainer.monitor_mode={mode}: use max or min")
    monitor = settings.monitor
    result = FitResult(phase=_PHASE.get() if phase is None else phase)
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
    clock = EpochClock(settings.epochs)
    with distributed.synced(model, in_precision(loss_fn, settings.precision, train.device)) as train_loss:
        for epoch in range(first, settings.epochs + 1):
            with stops_located(f"epoch {epoch}, after its training batches"):  # the batches say which one
                started = time.perf_counter()
                bar = (result.phase, epoch, clock)
                loss, rows, seconds = _train_epoch(model, train_loss, optimizer, train, bar, limit, settings.progress)
                loss, rows, seconds = distributed.pooled_epoch(loss, rows, seconds)
                distributed.sync_buffers(model)
                result.train_rows += rows
                result.train_seconds += seconds
                metrics = _validated(validate(model), monitor)
                metrics.update({"train/loss": loss, "train/rows_per_s": rows / seconds if seconds else float("nan")})
                result.epochs.append(metrics)
                if log:
                    log(metrics, epoch)
                value = metrics[monitor]
                if _improved(value, result.best_value, mode):
                    result.best_epoch, result.best_value, stale = epoch, value, 0
                    best_state = copy.deepcopy(model.state_dict()) if restore_best else None
                else:
                    stale += 1
                schedule.after_epoch(optimizer, stale)
                clock.ended(time.perf_counter() - started)
                stopping = stale >= settings.patience and epoch < settings.epochs
                print_epoch(result, epoch, settings.epochs, monitor, clock.left(epoch), stopping=stopping)
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
    where: tuple[str, int, EpochClock],
    limit_batches: int | None,
    show_progress: bool,
) -> tuple[float, int, float]:
    """One pass over the training batches: (mean loss, rows seen, seconds). `where`: the phase, the epoch
    and the fit's clock (the progress bar's ETA)."""
    phase, epoch, clock = where
    model.train()
    total = min(len(loader), limit_batches) if limit_batches else len(loader)
    loss_sum = torch.zeros((), device=loader.device)
    rows = 0
    started = time.perf_counter()
    step = 0
    with _progress(show_progress and distributed.is_main()) as bar:
        task = bar.add_task(epoch_label(phase, epoch, clock.epochs), total=total, loss=float("nan"), speed=0.0, eta="")
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
                    left = duration(clock.left(epoch, step, total, elapsed))
                    bar.update(task, completed=step, loss=loss_sum.item() / rows, speed=rows / elapsed, eta=left)
                if step == total:
                    break
    seconds = time.perf_counter() - started
    return loss_sum.item() / max(rows, 1), rows, seconds


@dataclass
class EpochClock:
    """How long a fit's epochs take (training and validation), for the time it has left: the epochs up to
    `epochs` (trainer.epochs) at the mean pace so far, an upper bound when early stopping ends it sooner."""

    epochs: int
    seconds: list[float] = field(default_factory=list)  # each ended epoch's

    def ended(self, seconds: float) -> None:
        self.seconds.append(seconds)

    def left(self, epoch: int, step: int = 0, total: int = 0, elapsed: float = 0.0) -> float:
        """Seconds left after `step` of `total` batches of `epoch` (`elapsed` seconds in), or after the
        whole epoch (step 0); NaN before anything was timed."""
        batch = elapsed / step if step else float("nan")
        pace = float(np.mean(self.seconds)) if self.seconds else batch * total
        rest = batch * (total - step) if step else 0.0
        return rest + pace * (self.epochs - epoch)


def epoch_label(phase: str, epoch: int, epochs: int) -> str:
    """`epoch 3/10`, or `retrain epoch 3/10` for a named phase."""
    return f"{phase + ' ' if phase else ''}epoch {epoch}/{epochs}"


def duration(seconds: float) -> str:
    """`0:02:05` (whole seconds); `?` while unknown."""
    return str(datetime.timedelta(seconds=round(seconds))) if math.isfinite(seconds) else "?"


def print_epoch(
    result: FitResult, epoch: int, epochs: int, monitor: str, left: float, stopping: bool = False, kind: str = "train"
) -> None:
    """One line for `epoch` of `result` (its last entry of `epochs`), printed whatever trainer.progress says
    (rank 0 alone under trainer=ddp) and logged to the job's main.log: the phase, the monitored metric
    against the best so far, the `kind`/loss and speed, and the time left (or why training stops here)."""
    metrics = result.epochs[-1]
    value = metrics.get(monitor, float("nan"))
    if result.best_epoch == epoch:
        best = " (best)"
    elif result.best_epoch or result.initial is not None:  # epoch 0: the weights the fit started from
        best = f" (best {result.best_value:.4f}, epoch {result.best_epoch})"
    else:
        best = ""
    if epoch == epochs:
        end = "the last epoch"
    elif stopping:
        end = f"stops here: no better {monitor} for {epoch - result.best_epoch} epochs (trainer.patience)"
    else:
        more = epochs - epoch
        end = f"{more} more epoch{'s' if more > 1 else ''} at most, {duration(left)}"
    line = (
        f"{epoch_label(result.phase, epoch, epochs)}: {monitor} {value:.4f}{best}, {kind} loss "
        f"{metrics[f'{kind}/loss']:.4f}, {metrics[f'{kind}/rows_per_s']:,.0f} rows/s; {end}"
    )
    logger.info(line)
    if distributed.is_main():
        get_console().print(line, highlight=False, soft_wrap=True)


def _progress(show: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TextColumn("{task.fields[speed]:,.0f} rows/s"),
        TimeElapsedColumn(),
        TextColumn("ETA {task.fields[eta]}"),
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
