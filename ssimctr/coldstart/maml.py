"""`coldstart=maml` and `coldstart=melu`: meta-learning over per-entity tasks (docs/methods.md §3.8).

A task t is one warm user (item) of the training rows: its support set S_t (its first rows in time)
and its query set Q_t (the rest); L_X(θ) is the mean own-tower BCE-with-logits of rows X.

**MAML** (Finn et al., ICML 2017), `Maml`:

1. Base training: plain training on the warm rows, exactly as `coldstart=none` (the first FitResult).
2. `meta_epochs` passes over the meta tasks in a random order, `tasks_per_batch` tasks per meta-batch:
   - inner loop, per task, `inner_steps` times: θ'_t ← θ'_t − α·∇ L_{S_t}(θ'_t), from θ'_t = θ (α = inner_lr);
   - outer loss: mean_t L_{Q_t}(θ'_t) on `query_rows` query rows per task sampled afresh every meta-batch
     (without replacement; with replacement when the task has fewer rows), so every task of a meta-batch
     has the same number of rows and the tasks run batched;
   - outer step: Adam(meta_lr) (trainer.optimizer.weight_decay) on θ, through the inner steps (second order), or,
     with `first_order=true`, with the inner gradients detached (FOMAML: ∇θ = ∇_{θ'} L_Q(θ'_t));
   - the meta phase runs through `ssimctr.train.loop.fit` (validation after each meta epoch, early stopping
     on `meta_monitor`, logged after the base epochs): the second FitResult. The base model competes as
     meta epoch 0 (`fit(..., keep_initial=True)`): when no meta epoch validates better, θ stays the
     base model's, so the meta phase never leaves a model worse on validation than plain training. The
     comparison is on `meta_monitor`, by default `val/cold/auc/mean`: the cold entities' val rows, the
     population the meta phase is for (trainer.monitor where the val split has no cold row; the run is
     tagged coldstart.meta_monitor and coldstart.meta_kept=true|false, and a dropped meta phase is said
     on the console).
3. Cold entities: the cold phase predicts with θ as it is (the plain forward). Warm-up round r adapts
   each cold task's θ'_t by the same inner loop on the round's support rows, starting from its round
   r − 1 parameters (θ for the first round), and predicts the task's query rows with θ'_t. Tasks run
   batched, in groups that go through every round; the model's weights never change.

The inner loops of a meta-batch (and of a group of cold tasks) run as one batched computation:
`torch.func.vmap` over the tasks of `grad` of a `functional_call` of the model, never a Python loop over
entities. Dropout draws differently per task; in training mode a model's persistent buffers (batch-norm /
partitioned-norm running statistics) get one throw-away copy per task, so the meta phase never updates
them (they keep the base training's values).

**Every parameter adapts, and what that costs for the embedding table.** A task's θ'_t is a copy of
every adapted parameter: for the MLPs and the small embeddings (numeric fields, other models' scenario
tables) that is T copies of their size per meta-batch. Copying the shared id table (V rows × D) per task
would cost T·V·D floats for every meta-batch (32 tasks × 10⁷ ids × 16 = 5·10⁹ floats) and as many
updates per inner step, although ∇_table L_S is zero outside the ≤ K·(F_cat + 1) rows the task's K
support rows look up. So the table's change is kept sparse: per task a delta [P, D] on the P table
rows its support set looks up (every distinct row once), added to every lookup of those rows. That is
θ'_table = θ_table − α·∇L_S exactly, for any number of inner steps, first or second order, at a cost of
O(T·K·F·D) instead of O(T·V·D); nothing is restricted. (A cold id is out of vocabulary: its adapted row
is the per-task copy of its field's OOV row. A later warm-up round keeps the earlier rounds' rows first
and appends the rows its own support rows add.)

**MeLU** (Lee et al., KDD 2019), `Melu`: the same, with two changes.

- Attribute embeddings only: every batch the model sees (base training, its validation, the meta phase,
  warm and cold prediction) has every id field (`Entity.id_fields`) set to 0, the OOV id, so no id
  embedding carries information (a forward pre-hook on `model.embedding`, installed while the method
  trains or predicts). Data without a categorical attribute besides the ids is a UserError.
- Local (inner) updates adapt only the decision layers, every parameter whose name does not start with
  "embedding."; the embeddings change in the outer (global) step only.

Both are one class, `MetaLearner`, parametrised by what adapts and whether ids are masked.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

from ssimctr.coldstart.base import Entity, Episodes, at_least, own_logits
from ssimctr.config.schema import TrainerConfig
from ssimctr.data.batch import Batch
from ssimctr.data.datasplit import DataSplit
from ssimctr.errors import UserError
from ssimctr.models.base import MultiScenarioModel
from ssimctr.models.layers.core import dense_gradients
from ssimctr.train.loop import FitResult, Logger, Validator, fit, make_optimizer, train_loader
from ssimctr.train.sharing import FixedSharing

TABLE = "embedding.table.weight"  # the shared id table of FeatureEmbedding, adapted sparsely
EMBEDDING = "embedding."  # MeLU: parameters under this prefix adapt in the outer step only
EVAL_ROWS = 65536  # few-shot prediction: at most this many (padded) query rows per group of cold tasks
EVAL_ELEMENTS = 1 << 26  # few-shot prediction: at most this many adapted-parameter elements per group

Params = dict[str, torch.Tensor]
Rows = dict[str, torch.Tensor]  # a Batch's tensors by field name (what vmap maps over)


@dataclass(frozen=True)
class Adapted:
    """θ'_t of T tasks: `dense` [T, ...] per-task copies of the adapted parameters (except the id table);
    the id table's change `delta` [T, P, D] on the table rows `rows` [T, P] (−1: a repeated lookup,
    never matched), None when the table does not adapt."""

    dense: Params
    delta: torch.Tensor | None
    rows: torch.Tensor | None


class MetaLearner:
    """MAML over per-entity tasks (module docstring). `adapt_embedding`: every parameter adapts in the
    inner loop (MAML) or only those outside `embedding.` (MeLU); `mask_ids`: id fields are set to 0 in
    every batch the model sees (MeLU). Subclasses set the three class attributes."""

    method: str
    adapt_embedding: bool
    mask_ids: bool

    def __init__(
        self,
        entity: Entity,
        *,
        inner_lr: float,
        meta_lr: float,
        inner_steps: int,
        first_order: bool,
        tasks_per_batch: int,
        query_rows: int,
        meta_epochs: int,
        meta_monitor: str,
    ) -> None:
        at_least("inner_steps", inner_steps, 0)
        at_least("tasks_per_batch", tasks_per_batch, 1)
        at_least("query_rows", query_rows, 1)
        at_least("meta_epochs", meta_epochs, 0)
        self.entity = entity
        self.inner_lr = inner_lr
        self.meta_lr = meta_lr
        self.inner_steps = inner_steps
        self.first_order = first_order
        self.tasks_per_batch = tasks_per_batch
        self.query_rows = query_rows
        self.meta_epochs = meta_epochs
        self.meta_monitor = meta_monitor
        self._change: tuple[torch.Tensor, torch.Tensor] | None = None  # (delta, rows) of the task being run
        self._installed: set[int] = set()  # ids of the models whose embedding carries this method's hooks
        self._id_masks: dict[tuple[torch.device, int], torch.Tensor] = {}  # MeLU: which cat columns are ids
        self.tags: dict[str, str] = {}  # meta_kept: whether a meta epoch validated better than the base model

    # -- the ColdStartMethod protocol ------------------------------------------------------------------

    def train(
        self,
        model: MultiScenarioModel,
        train: DataSplit,
        meta_tasks: Episodes,
        validate: Validator,
        settings: TrainerConfig,
        log: Logger,
    ) -> list[FitResult]:
        """Plain training on the warm rows, then `meta_epochs` meta epochs over `meta_tasks`."""
        self._check_attributes(meta_tasks, train)
        with self.installed(model):
            optimizer = make_optimizer(settings, model.parameters())
            fits = [
                fit(
                    model,
                    FixedSharing(0.0),
                    optimizer,
                    train_loader(train, settings),
                    validate,
                    settings,
                    log=log,
                    phase="base" if self.meta_epochs else "",
                )
            ]
            meta_tasks = meta_tasks.to(_device(model))
            tasks = TaskIndex(meta_tasks)
            if not self.meta_epochs or not tasks.with_query.numel():
                return fits  # no meta phase ran: nothing to keep or drop
            loader = MetaLoader(meta_tasks, tasks, self.tasks_per_batch, self.query_rows, settings.seed)
            meta_optimizer = make_optimizer(settings, [{"params": list(model.parameters()), "lr": self.meta_lr}])
            done = len(fits[0].epochs)
            monitor = self.meta_monitor if self.meta_monitor in fits[0].epochs[-1] else settings.monitor
            self.tags["meta_monitor"] = monitor
            # the meta loss reads episodes, not rows: trainer/regularizer acts on the base phase's rows only
            meta_settings = dataclasses.replace(settings, epochs=self.meta_epochs, monitor=monitor, regularizer={})
            meta_log = (lambda metrics, step: log(metrics, done + step)) if log else None
            meta = fit(
                model,
                self.meta_loss,
                meta_optimizer,
                loader,
                validate,
                meta_settings,
                keep_initial=True,
                log=meta_log,
                phase="meta",
            )
            fits.append(meta)
            self.tags["meta_kept"] = str(meta.kept_epoch > 0).lower()
        return fits

    def predict_cold(self, model: MultiScenarioModel, episodes: Episodes) -> list[torch.Tensor]:
        """The cold phase: the (id-masked, for MeLU) forward with θ. Warm-up round r: each task's θ'_t
        adapted from its round r − 1 parameters (θ for the first round) by the inner loop on the round's
        support rows, its query rows scored with it; groups of tasks at once, the model's weights never
        change."""
        with self.installed(model):
            cold = own_logits(model, episodes.query)
            if episodes.rounds == 0:
                return [cold]
            model.eval()
            episodes = episodes.to(_device(model))
            tasks = TaskIndex(episodes)
            shots = episodes.shots
            rounds = [
                torch.zeros(len(episodes.query), device=episodes.query.label.device) for _ in range(episodes.rounds)
            ]
            with torch.no_grad():  # torch.func.grad still differentiates inside
                for group, index, valid in tasks.query_groups(EVAL_ROWS, self._tasks_per_group(model)):
                    adapted = None
                    query = stack(episodes.query, index)
                    for r, out in enumerate(rounds):
                        support = stack(episodes.support, tasks.support[group][:, r * shots : (r + 1) * shots])
                        adapted = self.adapt(model, support, adapted)
                        out[index[valid]] = self.query_logits(model, adapted, query)[valid].float()
            return [cold, *rounds]

    def predict_warm(self, model: MultiScenarioModel, batch: Batch) -> torch.Tensor:
        """Warm rows with θ (ids masked for MeLU)."""
        with self.installed(model):
            return own_logits(model, batch)

    # -- the meta-learning mechanics (batched over tasks) ------------------------------------------------

    def meta_loss(self, model: MultiScenarioModel, batch: MetaBatch) -> torch.Tensor:
        """mean_t L_{Q_t}(θ'_t) of a meta-batch (differentiable in θ; first order: through θ'_t only)."""
        adapted = self.adapt(model, batch.support)
        logits = self.query_logits(model, adapted, batch.query)
        return F.binary_cross_entropy_with_logits(logits, batch.query.label)

    def adapt(self, model: MultiScenarioModel, support: Batch, start: Adapted | None = None) -> Adapted:
        """θ'_t of every task of `support` (a stacked batch [T, K, ...]): `inner_steps` gradient steps of
        size inner_lr on L_{S_t} from θ (or from each task's `start`, a previous round's θ'_t), one vmap
        over the tasks. Leaves the model's weights as they are."""
        shared, fixed = self.split_parameters(model)
        tasks = support.label.shape[0]
        buffers = self._task_buffers(model, tasks)
        dense = shared if start is None else start.dense
        before = (None, None) if start is None else (start.delta, start.rows)

        def one_task(
            dense: Params,
            earlier_delta: torch.Tensor | None,
            earlier_rows: torch.Tensor | None,
            buffers: Params,
            rows: Rows,
        ) -> tuple[Params, torch.Tensor | None, torch.Tensor | None]:
            table_rows = self._table_rows(model, rows, earlier_rows) if self.adapt_embedding else None
            delta = None
            if table_rows is not None:
                delta = torch.zeros(table_rows.shape[0], fixed[TABLE].shape[1], dtype=fixed[TABLE].dtype)
                delta = delta.to(fixed[TABLE].device)
                if earlier_delta is not None:  # the earlier rounds' change first, where the dedup keeps it
                    delta = torch.cat([earlier_delta, delta[earlier_delta.shape[0] :]])

            def support_loss(dense: Params, delta: torch.Tensor | None, buffers: Params) -> torch.Tensor:
                logits = self._task_logits(model, fixed, dense, buffers, delta, table_rows, rows)
                return F.binary_cross_entropy_with_logits(logits, rows["label"])

            for _ in range(self.inner_steps if rows["label"].shape[0] else 0):
                if delta is None:  # (buffers are an input, not captured: a forward may update them in place)
                    grads, grad_delta = grad(support_loss)(dense, None, buffers), None
                else:
                    grads, grad_delta = grad(support_loss, argnums=(0, 1))(dense, delta, buffers)
                if self.first_order:
                    grads = {name: g.detach() for name, g in grads.items()}
                    grad_delta = None if grad_delta is None else grad_delta.detach()
                dense = {name: torch.add(w, grads[name], alpha=-self.inner_lr) for name, w in dense.items()}
                if delta is not None:
                    delta = torch.add(delta, grad_delta, alpha=-self.inner_lr)
            return dense, delta, table_rows

        buffer_dims = {name: 0 for name in buffers}
        table = 0 if self.adapt_embedding else None
        per_task = None if start is None else 0
        earlier = None if start is None or not self.adapt_embedding else 0
        with self.installed(model), dense_gradients(model):
            dense, delta, rows = vmap(
                one_task,
                in_dims=(per_task, earlier, earlier, buffer_dims, 0),
                out_dims=(0, table, table),
                randomness="different",
            )(dense, *before, buffers, _rows(support))
        return Adapted(dense, delta, rows)

    def query_logits(self, model: MultiScenarioModel, adapted: Adapted, query: Batch) -> torch.Tensor:
        """Own-tower logits [T, R] of a stacked batch [T, R, ...], task t's rows with θ'_t."""
        _, fixed = self.split_parameters(model)
        buffers = self._task_buffers(model, query.label.shape[0])

        def one_task(dense: Params, delta, table_rows, buffers: Params, rows: Rows) -> torch.Tensor:
            return self._task_logits(model, fixed, dense, buffers, delta, table_rows, rows)

        buffer_dims = {name: 0 for name in buffers}
        table = 0 if adapted.delta is not None else None
        with self.installed(model), dense_gradients(model):
            return vmap(one_task, in_dims=(0, table, table, buffer_dims, 0), randomness="different")(
                adapted.dense, adapted.delta, adapted.rows, buffers, _rows(query)
            )

    def split_parameters(self, model: MultiScenarioModel) -> tuple[Params, Params]:
        """(the parameters copied per task, the parameters every task shares). MAML: all but the id
        table are copied (the table adapts through a sparse delta); MeLU: those outside `embedding.`."""
        dense, fixed = {}, {}
        for name, parameter in model.named_parameters():
            adapts = name != TABLE if self.adapt_embedding else not name.startswith(EMBEDDING)
            (dense if adapts else fixed)[name] = parameter
        return dense, fixed

    @contextmanager
    def installed(self, model: MultiScenarioModel) -> Iterator[None]:
        """Within the block, the model's embedding masks ids (MeLU) and adds a task's table change when
        one is being run (MAML); both hooks are removed on exit."""
        if id(model) in self._installed:  # already (an outer block): hook once
            yield
            return
        with ExitStack() as stack:
            self._installed.add(id(model))
            stack.callback(self._installed.discard, id(model))
            if self.mask_ids:
                stack.callback(model.embedding.register_forward_pre_hook(self._mask).remove)
            if self.adapt_embedding:
                stack.callback(model.embedding.register_forward_hook(self._add_change).remove)
            yield

    # -- helpers -------------------------------------------------------------------------------------

    def _task_logits(
        self,
        model: MultiScenarioModel,
        fixed: Params,
        dense: Params,
        buffers: Params,
        delta: torch.Tensor | None,
        table_rows: torch.Tensor | None,
        rows: Rows,
    ) -> torch.Tensor:
        """One task's own-tower logits [R] with its parameters (called inside vmap)."""
        self._change = None if delta is None else (delta, table_rows)
        try:
            return functional_call(model, (fixed, dense, buffers), (Batch(**rows),))
        finally:
            self._change = None

    def _table_rows(self, model: MultiScenarioModel, rows: Rows, earlier: torch.Tensor | None = None) -> torch.Tensor:
        """The table rows a task's support rows look up, after the rows an earlier round changed
        (`earlier`, kept first): [P] with each distinct row once (repeats −1, never matched)."""
        ids = _table_ids(model.embedding, rows["cat"], rows["scenario"]).flatten()
        if earlier is not None:
            ids = torch.cat([earlier, ids])
        same = ids.unsqueeze(0) == ids.unsqueeze(1)
        earlier_same = (same & torch.ones_like(same).tril(-1)).any(1)
        return torch.where(earlier_same, -1, ids)

    def _add_change(self, module, args, output: torch.Tensor) -> torch.Tensor | None:
        """Forward hook on the embedding: lookups of a changed table row get the task's delta added."""
        if self._change is None:
            return None
        delta, table_rows = self._change
        batch = args[0]
        ids = _table_ids(module, batch.cat, batch.scenario)  # [R, F']
        match = (ids.unsqueeze(-1) == table_rows).to(output.dtype)  # [R, F', P]
        looked_up = ids.shape[-1]
        return torch.cat([output[:, :looked_up] + match @ delta.to(output.dtype), output[:, looked_up:]], dim=1)

    def _mask(self, module, args) -> tuple[Batch]:
        """Forward pre-hook on the embedding: every id field set to 0 (the OOV id)."""
        batch = args[0]
        key = (batch.cat.device, batch.cat.shape[-1])
        if key not in self._id_masks:
            is_id = torch.zeros(key[1], dtype=torch.bool)
            is_id[list(self.entity.id_fields)] = True
            self._id_masks[key] = is_id.to(key[0])
        return (dataclasses.replace(batch, cat=torch.where(self._id_masks[key], 0, batch.cat)),)

    def _task_buffers(self, model: MultiScenarioModel, tasks: int) -> Params:
        """Training mode: one copy per task of each persistent buffer (running statistics a forward may
        update in place; the updates are discarded). Evaluation mode: none (the model's own are read)."""
        if not model.training:
            return {}
        persistent = model.state_dict(keep_vars=True)
        return {
            name: b.detach().unsqueeze(0).expand(tasks, *b.shape).clone()
            for name, b in model.named_buffers()
            if name in persistent
        }

    def _tasks_per_group(self, model: MultiScenarioModel) -> int:
        dense, _ = self.split_parameters(model)
        return max(1, EVAL_ELEMENTS // max(1, sum(p.numel() for p in dense.values())))

    def _check_attributes(self, meta_tasks: Episodes, train: DataSplit) -> None:
        if not self.mask_ids:
            return
        fields = meta_tasks.query.cat.shape[1]
        if fields > len(set(self.entity.id_fields)):
            return
        feature_map = getattr(train, "feature_map", None)
        if feature_map is not None:
            ids = ", ".join(feature_map.categorical[i].name for i in self.entity.id_fields)
        elif len(self.entity.id_fields) > 1:
            ids = f"{self.entity.column} and the other id fields"
        else:
            ids = self.entity.column
        raise UserError(
            f"coldstart={self.method} needs user or item attribute columns besides {ids} (dataset.categorical)"
        )


class Maml(MetaLearner):
    """MAML (docs/methods.md §3.8): every parameter adapts per task; ids are features as usual."""

    method = "maml"
    adapt_embedding = True
    mask_ids = False


class Melu(MetaLearner):
    """MeLU (docs/methods.md §3.8): ids masked everywhere; only the decision layers adapt per task."""

    method = "melu"
    adapt_embedding = False
    mask_ids = True


# -- tasks as index tensors ------------------------------------------------------------------------------


class TaskIndex:
    """Where each task's rows are: `support` [T, rounds·K] positions in episodes.support; `query_start`,
    `query_count` [T] of its rows in `query_order` (episodes.query positions grouped by task, in order)."""

    def __init__(self, episodes: Episodes) -> None:
        tasks, shots = episodes.num_tasks, episodes.shots * episodes.rounds
        support_task = episodes.support_task.cpu()
        counts = torch.bincount(support_task, minlength=tasks)
        if tasks and not bool((counts == shots).all()):
            raise ValueError(f"every task needs {shots} support rows; counts range {counts.min()}..{counts.max()}")
        self.device = episodes.query.label.device
        self.support = torch.argsort(support_task, stable=True).view(tasks, shots).to(self.device)
        query_task = episodes.query_task.cpu()
        self.query_order = torch.argsort(query_task, stable=True)
        self.query_count = torch.bincount(query_task, minlength=tasks)
        self.query_start = self.query_count.cumsum(0) - self.query_count
        self.with_query = torch.nonzero(self.query_count > 0).squeeze(1)

    def sample_query(self, rows: int, generator: torch.Generator) -> torch.Tensor:
        """[T, rows] query positions per task: a uniform sample without replacement, with replacement
        where the task has fewer than `rows` (tasks without query rows get position 0: unused)."""
        total = len(self.query_order)
        task = torch.repeat_interleave(torch.arange(len(self.query_count)), self.query_count)
        shuffled = self.query_order[
            torch.argsort(task.double() + torch.rand(total, generator=generator, dtype=torch.double))
        ]
        j = torch.arange(rows)
        count, start = self.query_count.unsqueeze(1), self.query_start.unsqueeze(1)
        without = shuffled[(start + j).clamp(max=max(total - 1, 0))]
        drawn = (torch.rand(len(count), rows, generator=generator) * count).long().clamp(max=(count - 1).clamp(min=0))
        with_ = self.query_order[(start + drawn).clamp(max=max(total - 1, 0))]
        return torch.where(count >= rows, without, with_)

    def query_groups(self, max_rows: int, max_tasks: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Groups of tasks for prediction, by increasing query count so that padding stays small:
        (tasks [G], query positions [G, L] padded by repeating a task's last row, valid [G, L])."""
        order = self.with_query[torch.argsort(self.query_count[self.with_query], stable=True)].tolist()
        counts = self.query_count.tolist()
        group: list[int] = []
        for task in order + [None]:
            if group and (task is None or len(group) >= max_tasks or (len(group) + 1) * counts[task] > max_rows):
                yield self._padded(torch.tensor(group))
                group = []
            if task is not None:
                group.append(task)

    def _padded(self, group: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        count, start = self.query_count[group].unsqueeze(1), self.query_start[group].unsqueeze(1)
        j = torch.arange(int(count.max()))
        index = self.query_order[start + torch.minimum(j, count - 1)]
        return tuple(t.to(self.device) for t in (group, index, j < count))


@dataclass(frozen=True)
class MetaBatch:
    """Support [T, K, ...] and sampled query rows [T, R, ...] of a meta-batch's T tasks."""

    support: Batch
    query: Batch

    def __len__(self) -> int:
        return self.support.label.numel() + self.query.label.numel()


class MetaLoader:
    """The meta-batches of one pass over the tasks that have query rows: a fresh task order and query
    sample every pass (seeded by the trainer seed and the pass)."""

    def __init__(self, episodes: Episodes, tasks: TaskIndex, tasks_per_batch: int, query_rows: int, seed: int) -> None:
        self.episodes, self.tasks = episodes, tasks
        self.tasks_per_batch, self.query_rows, self.seed = tasks_per_batch, query_rows, seed
        self.device = tasks.device
        self.num_rows = len(tasks.with_query) * (episodes.shots + query_rows)
        self._passes = 0

    def __len__(self) -> int:
        return math.ceil(len(self.tasks.with_query) / self.tasks_per_batch)

    def state_dict(self) -> dict:
        """The passes made: the next pass's order and query sample follow from it (a checkpoint keeps it)."""
        return {"passes": self._passes}

    def load_state_dict(self, state: dict) -> None:
        self._passes = state["passes"]

    def __iter__(self) -> Iterator[MetaBatch]:
        self._passes += 1
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self._passes)
        order = self.tasks.with_query[torch.randperm(len(self.tasks.with_query), generator=generator)]
        query = self.tasks.sample_query(self.query_rows, generator).to(self.device)
        order = order.to(self.device)
        for start in range(0, len(order), self.tasks_per_batch):
            chosen = order[start : start + self.tasks_per_batch]
            yield MetaBatch(
                stack(self.episodes.support, self.tasks.support[chosen]),
                stack(self.episodes.query, query[chosen]),
            )


# -- small functions ------------------------------------------------------------------------------------


def stack(batch: Batch, index: torch.Tensor) -> Batch:
    """Rows `index` [T, R] of `batch` as a stacked batch: every tensor [T, R, ...]."""
    rows = batch.take(index.flatten())
    return Batch(**{name: t.view(*index.shape, *t.shape[1:]) for name, t in _rows(rows).items()})


def _rows(batch: Batch) -> Rows:
    return {f.name: getattr(batch, f.name) for f in dataclasses.fields(Batch) if getattr(batch, f.name) is not None}


def _table_ids(embedding, cat: torch.Tensor, scenario: torch.Tensor) -> torch.Tensor:
    """The id table rows FeatureEmbedding looks up: [..., F'] (categorical fields, then the scenario)."""
    ids = cat
    if embedding.scenario_feature:
        ids = torch.cat([ids, scenario.unsqueeze(-1)], dim=-1)
    return ids + embedding.offsets


def _device(model: MultiScenarioModel) -> torch.device:
    return next(model.parameters()).device
