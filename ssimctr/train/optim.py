"""The training optimizer: a dense optimizer for the weights, a row rule for the embedding tables.

The id tables (FeatureEmbedding.table, the hashed-text bags) are `nn.Embedding(sparse=True)`: their
gradient is a sparse COO tensor of the rows a batch looks up (B·F rows, not the vocabulary).
`TrainingOptimizer` holds two parts, each built from the trainer's config (docs/methods.md §3.11):

- `trainer/optimizer` (default `adam`): any torch optimizer class, made for every parameter group (fused on
  CPU where torch supports it). It steps every parameter whose gradient is dense: MLPs, towers, numeric
  and scenario embeddings, selectors, and an id table whose row rule densifies (`adam`).
- `trainer/embedding_optimizer` (default `sparse_adam`): a `RowRule` that updates a table's touched rows
  from their summed sparse gradient, O(B·F·D) per step whatever the vocabulary: `LazyAdam`,
  `RowwiseAdagrad` (torchrec's and FBGEMM's default for id tables), `RowSGD`, or `DenseTables` (the
  gradient made dense and left to the dense optimizer: O(vocabulary·D) per step).

A rule's `lr` (null: the group's) is scaled like the group's learning rate, so a schedule that lowers
the learning rate (trainer/lr_schedule) lowers both. One `state_dict` holds both parts (checkpoints).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ssimctr.utils.instantiate import instantiate

ParamGroups = Iterable[torch.Tensor] | Iterable[dict[str, Any]]


class RowRule(ABC):
    """How an embedding table's touched rows move, given their summed gradient `g` [R, D] at rows `index`.
    The rule's state for a table lives in `state` (a dict the optimizer keeps and checkpoints)."""

    lr: float | None = None  # None: the parameter group's learning rate
    densify: bool = False  # True: the gradient is made dense and the dense optimizer steps the table

    @abstractmethod
    def update(self, p: torch.Tensor, state: dict, index: torch.Tensor, g: torch.Tensor, lr: float) -> None:
        """Move rows `index` of `p` (no grad mode) and update `state`."""

    def apply(self, p: torch.Tensor, state: dict, grad: torch.Tensor, lr: float) -> None:
        """One step from the table's sparse gradient: `update` on its distinct rows, their gradients summed."""
        index, g = summed_rows(grad, p.dtype)
        self.update(p, state, index, g, lr)


@dataclass
class LazyAdam(RowRule):
    """`sparse_adam`: Adam on the touched rows only; untouched rows and their moments stay as they are.

    With the table's step count t (one per step that touches the table), for each touched row i:
    g_i ← g_i + λ·w_i, m_i ← β1·m_i + (1−β1)·g_i, v_i ← β2·v_i + (1−β2)·g_i²,
    w_i ← w_i − lr · (m_i / (1−β1^t)) / (sqrt(v_i / (1−β2^t)) + ε): ε is added after the bias-corrected
    square root, as in torch.optim.Adam (docs/methods.md §3.11).
    """

    lr: float | None = None
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0

    def update(self, p: torch.Tensor, state: dict, index: torch.Tensor, g: torch.Tensor, lr: float) -> None:
        if not state:
            state.update(step=0, exp_avg=_lazy_zeros(p), exp_avg_sq=_lazy_zeros(p))
        state["step"] += 1
        step = state["step"]
        beta1, beta2 = self.betas
        if self.weight_decay:
            g = g.add(p.index_select(0, index), alpha=self.weight_decay)
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        m = exp_avg.index_select(0, index).lerp_(g, 1 - beta1)
        v = exp_avg_sq.index_select(0, index).mul_(beta2).addcmul_(g, g, value=1 - beta2)
        exp_avg.index_copy_(0, index, m)
        exp_avg_sq.index_copy_(0, index, v)
        denom = v.sqrt_().div_(math.sqrt(1 - beta2**step)).add_(self.eps)
        p.index_add_(0, index, m.div_(denom), alpha=-lr / (1 - beta1**step))


@dataclass
class RowwiseAdagrad(RowRule):
    """`rowwise_adagrad`: Adagrad with one accumulator per row (FBGEMM's EXACT_ROWWISE_ADAGRAD).

    For each touched row i: g_i ← g_i + λ·w_i, G_i ← G_i + mean_d(g_id²), w_i ← w_i − lr · g_i / (sqrt(G_i) + ε).
    A row's step shrinks with the squared gradient it has accumulated: a rare id keeps large steps, a
    frequent one settles. The state is one float per row (D times smaller than Adam's two moments).
    """

    lr: float | None = None
    eps: float = 1e-8
    initial_accumulator: float = 0.0
    weight_decay: float = 0.0

    def update(self, p: torch.Tensor, state: dict, index: torch.Tensor, g: torch.Tensor, lr: float) -> None:
        if not state:
            state["sum"] = torch.full((p.shape[0],), self.initial_accumulator, dtype=p.dtype, device=p.device)
        if self.weight_decay:
            g = g.add(p.index_select(0, index), alpha=self.weight_decay)
        accumulated = state["sum"].index_select(0, index).add_(g.square().mean(1))
        state["sum"].index_copy_(0, index, accumulated)
        p.index_add_(0, index, g.div_(accumulated.sqrt_().add_(self.eps).unsqueeze(1)), alpha=-lr)


@dataclass
class RowSGD(RowRule):
    """`sgd`: plain gradient descent on the touched rows, w_i ← w_i − lr · (g_i + λ·w_i).

    The gradient of a mean loss reaches a row in proportion to how often the batch looks it up, so a
    rare id moves little and a frequent one a lot: unlike Adam's and Adagrad's normalized first steps,
    a rare id's few rows cannot pull its embedding far from where it started. A mean loss makes each
    lookup's gradient small (1/B), so its rate is large (of order 1 to 10 at B = 2048).
    """

    lr: float | None = None
    weight_decay: float = 0.0

    def update(self, p: torch.Tensor, state: dict, index: torch.Tensor, g: torch.Tensor, lr: float) -> None:
        if self.weight_decay:
            g = g.add(p.index_select(0, index), alpha=self.weight_decay)
        p.index_add_(0, index, g, alpha=-lr)

    def apply(self, p: torch.Tensor, state: dict, grad: torch.Tensor, lr: float) -> None:
        """Without weight decay the step is linear in the gradient: the lookups' rows are added as they
        come (a row looked up n times gets its n gradients), with no sort or sum of distinct rows."""
        if self.weight_decay or grad.sparse_dim() != 1:
            super().apply(p, state, grad, lr)
            return
        p.index_add_(0, grad._indices()[0], grad._values().to(p.dtype), alpha=-lr)


@dataclass
class DenseTables(RowRule):
    """`adam` (dense): the table's sparse gradient is made dense and the dense optimizer steps the whole
    table, untouched rows included (momentum drift, weight decay): O(vocabulary·D) per step."""

    densify: bool = True

    def update(self, p: torch.Tensor, state: dict, index: torch.Tensor, g: torch.Tensor, lr: float) -> None:
        raise AssertionError("DenseTables densifies: the dense optimizer steps the table")


class TrainingOptimizer:
    """The dense optimizer over every parameter group, and `rows` for the sparse gradients of the tables.

    Behaves as a torch optimizer for the training loop, checkpoints and schedules: `zero_grad`, `step`,
    `param_groups` (the dense optimizer's), `state_dict` / `load_state_dict` (both parts)."""

    def __init__(self, dense: torch.optim.Optimizer, rows: RowRule) -> None:
        self.dense = dense
        self.rows = rows
        for group in dense.param_groups:  # a rule's lr follows the group's as a schedule scales it
            group.setdefault("initial_lr", group["lr"])
        self.row_state: dict[torch.Tensor, dict] = {}

    @property
    def param_groups(self) -> list[dict]:
        return self.dense.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.dense.zero_grad(set_to_none=set_to_none)

    @torch.no_grad()
    def step(self) -> None:
        """One step: sparse table gradients by the row rule (or densified), everything else by the dense
        optimizer."""
        hidden: list[tuple[dict, torch.Tensor, torch.Tensor]] = []
        for group in self.dense.param_groups:
            for p in group["params"]:
                if p.grad is None or not p.grad.is_sparse:
                    continue
                if self.rows.densify:
                    p.grad = p.grad.to_dense()
                else:  # hidden from the dense optimizer, updated row-wise below
                    hidden.append((group, p, p.grad))
                    p.grad = None
        try:
            self.dense.step()
        finally:
            for _, p, grad in hidden:
                p.grad = grad
        for group, p, grad in hidden:
            self.rows.apply(p, self.row_state.setdefault(p, {}), grad, self.row_lr(group))

    def row_lr(self, group: dict) -> float:
        """The rule's learning rate in `group`: its own (or the group's), scaled as a schedule scaled the
        group's since it was made (a group made with rate 0 is not scaled: a rule's own rate stays)."""
        if self.rows.lr is None:
            return group["lr"]
        return self.rows.lr * (group["lr"] / group["initial_lr"] if group["initial_lr"] else 1.0)

    def state_dict(self) -> dict:
        params = [p for group in self.dense.param_groups for p in group["params"]]
        return {
            "dense": self.dense.state_dict(),
            "rows": {i: self.row_state[p] for i, p in enumerate(params) if p in self.row_state},
        }

    def load_state_dict(self, state: dict) -> None:
        self.dense.load_state_dict(state["dense"])
        params = [p for group in self.dense.param_groups for p in group["params"]]
        self.row_state = {
            params[int(i)]: {k: _like(v, params[int(i)]) for k, v in saved.items()}
            for i, saved in state["rows"].items()
        }


def summed_rows(grad: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(the distinct rows of a sparse row gradient, sorted; each one's summed gradient [R, D]): unique and
    index_add_, about 15% faster on CPU than coalesce for an embedding's B·F lookups."""
    if grad.sparse_dim() != 1 or grad.is_coalesced():
        grad = grad.coalesce()
        return grad.indices()[0], grad.values().to(dtype)
    index, inverse = torch.unique(grad._indices()[0], return_inverse=True)
    values = grad._values()
    summed = torch.zeros(len(index), *values.shape[1:], dtype=dtype, device=values.device)
    return index, summed.index_add_(0, inverse, values.to(dtype))


def _lazy_zeros(p: torch.Tensor) -> torch.Tensor:
    """Zeros shaped like `p`. On CPU they come from calloc (through numpy), whose large blocks are fresh
    zero pages the OS maps only when written: a moment table costs memory and time for the pages of the
    rows batches touch, not for the whole vocabulary (torch.zeros writes every page up front)."""
    if p.device.type == "cpu" and p.dtype in (torch.float32, torch.float64) and p.is_contiguous():
        return torch.from_numpy(np.zeros(tuple(p.shape), dtype=np.float32 if p.dtype == torch.float32 else np.float64))
    return torch.zeros_like(p, memory_format=torch.preserve_format)


def _like(value: Any, p: torch.Tensor) -> Any:
    """A saved state value on `p`'s device (tensors), or as saved (step counts)."""
    return value.to(p.device) if isinstance(value, torch.Tensor) else value


def fastest(optimizer: Any, groups: list) -> torch.optim.Optimizer:
    """The torch optimizer of config `optimizer` over `groups`, fused where torch supports it for these
    parameters (much faster on CPU), else foreach, else as configured (a class that takes neither)."""
    for options in ({"fused": True}, {"foreach": True}):
        try:
            return instantiate(optimizer, params=groups, **options)
        except (RuntimeError, TypeError, ValueError):
            continue
    return instantiate(optimizer, params=groups)


def build_optimizer(optimizer: Any, embedding_optimizer: Any, parameters: ParamGroups) -> TrainingOptimizer:
    """The training optimizer of `trainer.optimizer` (a torch optimizer's config, `_target_` + options) and
    `trainer.embedding_optimizer` (a RowRule's) over `parameters`: parameters, or parameter groups (dicts
    with their own `lr` / `weight_decay`, e.g. SSIM's selector at ssim.selector_lr)."""
    return TrainingOptimizer(fastest(optimizer, list(parameters)), instantiate(embedding_optimizer))
