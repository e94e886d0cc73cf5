"""Rows grouped by scenario: how a model computes each row's own scenario's tower and no other (the
routed path of `MultiScenarioModel.forward`, docs/methods.md §3.12).

`Routes` sorts a batch's rows by scenario once (a stable sort, so each scenario's rows keep their batch
order) and cuts the sorted rows into one contiguous segment per tower. A per-scenario layer then runs
tower k's maps on segment k only (one matrix product per tower and layer), and `ungroup` puts the
segments' outputs back in batch order. A scenario without rows in the batch gets an empty segment: its
tower still runs, on no rows, so every parameter is part of the graph and gets a gradient (zeros), as
under the full path (`towers()`, every tower on every row). Tower k's parameters only ever meet
scenario k's rows, so a loss on other rows gives them exactly zero gradient.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


class Routes:
    """A batch's rows grouped by scenario, for `num_towers` towers (scenario k -> tower k).

    order   [B] the row indexes sorted by scenario (stable);
    tower   [B] the tower of each sorted row (the scenario, sorted);
    counts  rows per tower (K entries, zeros included): the segment sizes.
    """

    def __init__(self, scenario: torch.Tensor, num_towers: int) -> None:
        self.order = torch.argsort(scenario, stable=True)
        self.tower = scenario.index_select(0, self.order)
        counts = torch.bincount(scenario, minlength=num_towers)
        if counts.shape[0] > num_towers:
            raise ValueError(f"scenario ids go up to {counts.shape[0] - 1}, but the model has {num_towers} towers")
        self.counts: list[int] = counts.tolist()  # one host sync per batch

    def sort(self, x: torch.Tensor, dim: int = 0) -> torch.Tensor:
        """`x` (batch order along `dim`) in sorted order: one gather."""
        return x.index_select(dim, self.order)

    def split(self, x: torch.Tensor, dim: int = 0) -> list[torch.Tensor]:
        """A sorted `x` cut into the K segments along `dim` (views)."""
        return list(x.split(self.counts, dim))

    def group(self, x: torch.Tensor, dim: int = 0) -> list[torch.Tensor]:
        """`x` (batch order along `dim`) as K segments: segment k holds scenario k's rows."""
        return self.split(self.sort(x, dim), dim)

    def own(self, x: torch.Tensor) -> list[torch.Tensor]:
        """A tower-major `x` [K, B, ...] (row b through every tower) as K segments: segment k is tower k's
        output for scenario k's rows, x[k, rows of k]."""
        return [x[k].index_select(0, rows) for k, rows in enumerate(self.split(self.order))]

    def unsort(self, x: torch.Tensor) -> torch.Tensor:
        """A sorted `x` [B, ...] back in batch order."""
        return x.new_empty(x.shape).index_copy(0, self.order, x)

    def ungroup(self, parts: Sequence[torch.Tensor]) -> torch.Tensor:
        """K segments' outputs [n_k, ...] as one tensor [B, ...] in batch order."""
        return self.unsort(torch.cat(list(parts)))


def routable(scenario: torch.Tensor) -> bool:
    """Whether rows can be grouped by this scenario tensor: not inside a torch.func transform that hides its
    values (vmap over MAML's tasks: per-task segment sizes are data-dependent shapes vmap cannot batch), where
    the full path is taken instead."""
    return not torch._C._functorch.is_functorch_wrapped_tensor(scenario)
