"""The training optimizer: Adam whose embedding tables are updated row-wise (`trainer.embedding_optimizer`).

The id tables (FeatureEmbedding.table, the hashed-text bags) are `nn.Embedding(sparse=True)`: their
gradient is a sparse COO tensor of the rows a batch looks up (B·F rows, not the vocabulary). `RowAdam`
is one `torch.optim.Adam` over every parameter (one param_groups list, one state_dict in Adam's format)
that routes each gradient by its layout at every step:

- a dense gradient (MLPs, towers, numeric and scenario embeddings, selectors): torch's Adam (fused on CPU);
- a sparse gradient, `sparse_adam` (the default): a lazy Adam on the touched rows only, with torch's own
  ops (coalesce, index_select, index_copy_, index_add_): O(batch · D) per step whatever the vocabulary;
- a sparse gradient, `adam`: densified, then torch's Adam on the whole table (O(vocabulary · D) per step:
  the dense Adam of earlier versions).

Lazy Adam (docs/methods.md §3.11) differs from dense Adam only for rows a batch does not touch:
dense Adam keeps moving a row with its decaying first moment (and decays both moments) on every step;
lazy Adam leaves the row and its moments exactly as they are until the row is looked up again. Bias
correction uses the parameter's step count (as torch.optim.SparseAdam and TF's LazyAdam), so a row's
first update equals dense Adam's. Weight decay (trainer.weight_decay, Adam's coupled L2) is applied to the
touched rows only, when they are touched: torch.optim.SparseAdam has none at all.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import torch

EMBEDDING_OPTIMIZERS = ("sparse_adam", "adam")


class RowAdam(torch.optim.Adam):
    """torch.optim.Adam for every dense gradient; for a sparse one, a lazy Adam on the rows it holds
    (`lazy=True`) or the densified gradient through Adam (`lazy=False`). See the module docstring."""

    def __init__(self, params: Iterable, lr: float, weight_decay: float, *, lazy: bool = True, **adam) -> None:
        super().__init__(params, lr=lr, weight_decay=weight_decay, **adam)
        if any(group["amsgrad"] for group in self.param_groups):
            raise ValueError("RowAdam: amsgrad is not supported")
        self.lazy = lazy

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        rows: list[tuple[dict, torch.Tensor, torch.Tensor]] = []
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None or not p.grad.is_sparse:
                    continue
                if self.lazy:  # hidden from Adam's step, updated row-wise below
                    rows.append((group, p, p.grad))
                    p.grad = None
                else:
                    p.grad = p.grad.to_dense()
        try:
            super().step()
        finally:
            for _, p, grad in rows:
                p.grad = grad
        for group, p, grad in rows:
            self._row_step(group, p, grad)
        return loss

    def _row_step(self, group: dict, p: torch.Tensor, grad: torch.Tensor) -> None:
        """Lazy Adam on the rows of the sparse gradient `grad` of `p` (each row once, duplicates summed)."""
        state = self.state[p]
        if not state:  # Adam's own state layout, so a parameter's state serves either path
            on_device = group["fused"] or group["capturable"]
            state["step"] = torch.zeros((), dtype=torch.float32, device=p.device if on_device else "cpu")
            state["exp_avg"] = _lazy_zeros(p)
            state["exp_avg_sq"] = _lazy_zeros(p)
        state["step"] += 1
        step = float(state["step"])
        beta1, beta2 = group["betas"]
        index, g = _summed_rows(grad, p.dtype)
        if group["maximize"]:
            g = -g
        if group["weight_decay"]:
            g = g.add(p.index_select(0, index), alpha=group["weight_decay"])
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        m = exp_avg.index_select(0, index).lerp_(g, 1 - beta1)
        v = exp_avg_sq.index_select(0, index).mul_(beta2).addcmul_(g, g, value=1 - beta2)
        exp_avg.index_copy_(0, index, m)
        exp_avg_sq.index_copy_(0, index, v)
        denom = v.sqrt_().div_(math.sqrt(1 - beta2**step)).add_(group["eps"])
        p.index_add_(0, index, m.div_(denom), alpha=-group["lr"] / (1 - beta1**step))


def _summed_rows(grad: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
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


def make_row_adam(parameters: Iterable, lr: float, weight_decay: float, embedding_optimizer: str) -> RowAdam:
    """RowAdam, fused where torch supports it for these parameters (much faster on CPU), foreach otherwise.
    `parameters` may be parameters or Adam parameter groups (dicts with their own lr / weight_decay)."""
    if embedding_optimizer not in EMBEDDING_OPTIMIZERS:
        raise ValueError(f"embedding_optimizer={embedding_optimizer}: use one of {', '.join(EMBEDDING_OPTIMIZERS)}")
    parameters = list(parameters)
    lazy = embedding_optimizer == "sparse_adam"
    try:
        return RowAdam(parameters, lr, weight_decay, lazy=lazy, fused=True)
    except (RuntimeError, ValueError):
        return RowAdam(parameters, lr, weight_decay, lazy=lazy, foreach=True)
