"""Scenario-conditioned layers: STAR's partitioned norm and star-topology linear map (docs/methods.md
§3.5), and a linear layer whose parameters a hyper-network generates (DFFM §3.7, M2M).

Every layer holds one slice per partition (scenario) or generates parameters per conditioning
vector, and can evaluate every partition for every row at once ("all" mode, [P, B, ...]), which is
what the [B, K] tower contract needs, or route each row through its own partition only (`routed`,
the segments of a batch grouped by scenario, §3.12). Partition p's private slice only receives
gradient from losses that reach partition p's output.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ssimctr.models.routing import Routes


class PartitionedNorm(nn.Module):
    """STAR's Partitioned Normalization over P partitions (docs/methods.md §3.5).

    z' = (γ ⊙ γ_p) ⊙ (z − μ_p) / sqrt(σ²_p + ε) + (β + β_p), γ/β shared, γ_p/β_p private to p.

    Statistics of partition p: in training, the mean and (biased) variance of the batch rows of
    partition p (masked batch statistics); the per-partition running mean / unbiased variance
    [P, dim] are updated like BatchNorm's, r ← (1 − momentum)·r + momentum·stat. In eval, the
    running statistics of p. A partition with fewer than two rows in a training batch has no
    usable batch variance: it is normalized with its running statistics, which stay unchanged.
    """

    def __init__(self, dim: int, num_partitions: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.num_partitions = num_partitions
        self.eps = eps
        self.momentum = momentum
        self.gamma = nn.Parameter(torch.ones(dim))
        self.beta = nn.Parameter(torch.zeros(dim))
        self.gamma_p = nn.Parameter(torch.ones(num_partitions, dim))
        self.beta_p = nn.Parameter(torch.zeros(num_partitions, dim))
        self.register_buffer("running_mean", torch.zeros(num_partitions, dim))
        self.register_buffer("running_var", torch.ones(num_partitions, dim))

    def forward(self, z: torch.Tensor, partition: torch.Tensor) -> torch.Tensor:
        """Each row normalized as its own partition: z [B, dim], partition [B] -> [B, dim]."""
        mean, var = self.statistics(z, partition)
        normalized = (z - mean[partition]) * torch.rsqrt(var[partition] + self.eps)
        return normalized * (self.gamma * self.gamma_p[partition]) + (self.beta + self.beta_p[partition])

    def forward_all(self, z: torch.Tensor, partition: torch.Tensor) -> torch.Tensor:
        """Every row normalized as every partition p (p's statistics, γ_p, β_p): [B, dim] -> [P, B, dim].

        `partition` (the rows' own partitions) only decides which rows give p's batch statistics.
        """
        mean, var = self.statistics(z, partition)
        normalized = (z - mean.unsqueeze(1)) * torch.rsqrt(var + self.eps).unsqueeze(1)
        return normalized * (self.gamma * self.gamma_p).unsqueeze(1) + (self.beta + self.beta_p).unsqueeze(1)

    def routed(self, z: torch.Tensor, partition: torch.Tensor, routes: Routes) -> list[torch.Tensor]:
        """Each row normalized as its own partition only, the rows grouped by partition (`routes`):
        z [B, dim], partition [B] (batch order) -> [n_p, dim] per partition p. The statistics and their
        running updates are `forward_all`'s (partition p's come from its own rows either way)."""
        mean, var = self.statistics(z, partition)
        per_partition = zip(
            routes.group(z), mean, torch.rsqrt(var + self.eps), self.gamma * self.gamma_p, self.beta + self.beta_p
        )
        return [(z_p - m) * inverse * scale + shift for z_p, m, inverse, scale, shift in per_partition]

    def statistics(self, z: torch.Tensor, partition: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, variance) per partition, [P, dim] each; updates the running statistics in training."""
        if not self.training:
            return self.running_mean, self.running_var
        zeros = z.new_zeros(self.num_partitions, z.shape[1])
        counts = z.new_zeros(self.num_partitions).index_add(0, partition, z.new_ones(z.shape[0]))
        n = counts.clamp(min=1).unsqueeze(1)
        mean = zeros.index_add(0, partition, z) / n
        var = zeros.index_add(0, partition, (z - mean[partition]).square()) / n
        present = (counts >= 2).unsqueeze(1)
        with torch.no_grad():
            m = self.momentum
            unbiased = var * n / (n - 1).clamp(min=1)
            self.running_mean.copy_(torch.where(present, (1 - m) * self.running_mean + m * mean, self.running_mean))
            self.running_var.copy_(torch.where(present, (1 - m) * self.running_var + m * unbiased, self.running_var))
        return torch.where(present, mean, self.running_mean), torch.where(present, var, self.running_var)


PARTITION_INITS = ("ones", "like_shared")


class StarLinear(nn.Module):
    """Star-topology fully connected layer over P partitions (docs/methods.md §3.5).

    Partition p uses W_p^⋆ = W ⊙ W_p and b_p^⋆ = b + b_p: out = in · W_p^⋆ + b_p^⋆ (no activation).
    W, b are shared (uniform ±1/sqrt(in), nn.Linear's range); W_p and b_p are private to p.
    partition_init="ones": W_p = 1, b_p = 0, so every partition starts as the shared layer;
    "like_shared": W_p drawn like W (the reference code draws both alike), b_p = 0.
    """

    def __init__(self, in_dim: int, out_dim: int, num_partitions: int, partition_init: str = "ones") -> None:
        super().__init__()
        if partition_init not in PARTITION_INITS:
            raise ValueError(f"partition_init must be one of {', '.join(PARTITION_INITS)}, got {partition_init}")
        bound = 1.0 / math.sqrt(in_dim)
        self.weight = nn.Parameter(torch.empty(in_dim, out_dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(out_dim).uniform_(-bound, bound))
        partition_weight = torch.ones(num_partitions, in_dim, out_dim)
        if partition_init == "like_shared":
            partition_weight.uniform_(-bound, bound)
        self.partition_weight = nn.Parameter(partition_weight)
        self.partition_bias = nn.Parameter(torch.zeros(num_partitions, out_dim))

    def combined(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(W ⊙ W_p [P, in, out], b + b_p [P, 1, out]) for every partition."""
        return self.weight * self.partition_weight, (self.bias + self.partition_bias).unsqueeze(1)

    def forward(self, x: torch.Tensor, partition: torch.Tensor) -> torch.Tensor:
        """Each row through its own partition's layer: x [B, in], partition [B] -> [B, out]."""
        return self.forward_all(x)[partition, torch.arange(x.shape[0], device=x.device)]

    def forward_all(self, x: torch.Tensor) -> torch.Tensor:
        """Every partition's layer: x [B, in] (shared) or [P, B, in] (one input per partition) -> [P, B, out]."""
        weight, bias = self.combined()
        if x.dim() == 2:
            return torch.matmul(x, weight) + bias
        return torch.baddbmm(bias, x, weight)

    def routed(self, parts: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Partition p's layer on part p [n_p, in] only -> [n_p, out] per partition."""
        weight, bias = self.combined()
        return [x @ w + b for x, w, b in zip(parts, weight, bias)]


class GeneratedLinear(nn.Module):
    """A linear map (or G = `groups` maps) whose weight and bias a hyper-network generates from c.

    θ(c) = θ_0 + H c (one linear hyper-layer), split into weight [(G,) in, out] and bias [(G,) 1, out];
    out = x · W(c) + b(c). θ_0 starts like nn.Linear's parameters and H small, so the generated
    map starts near an ordinary linear layer and moves with c. Used by DFFM (§3.7) and M2M.
    """

    def __init__(self, cond_dim: int, in_dim: int, out_dim: int, groups: int | None = None) -> None:
        super().__init__()
        self.in_dim, self.out_dim = in_dim, out_dim
        self.group_shape = () if groups is None else (groups,)
        self.hyper = nn.Linear(cond_dim, (groups or 1) * (in_dim * out_dim + out_dim))
        bound = 1.0 / math.sqrt(in_dim)
        nn.init.uniform_(self.hyper.bias, -bound, bound)
        nn.init.uniform_(self.hyper.weight, -bound / math.sqrt(cond_dim), bound / math.sqrt(cond_dim))

    def generate(self, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cond [N, c] -> (weight [N, (G,) in, out], bias [N, (G,) 1, out])."""
        theta = self.hyper(cond).view(cond.shape[0], *self.group_shape, -1)
        split = self.in_dim * self.out_dim
        weight = theta[..., :split].unflatten(-1, (self.in_dim, self.out_dim))
        return weight, theta[..., split:].unsqueeze(-2)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """One map per condition. No groups: x [B, in] (shared) or [N, B, in] -> [N, B, out];
        G groups: x [G, B, in] or [N, G, B, in] -> [N, G, B, out] (map g reads x[..., g, :, :])."""
        weight, bias = self.generate(cond)
        return torch.matmul(x, weight) + bias

    def routed(self, parts: Sequence[torch.Tensor], cond: torch.Tensor) -> list[torch.Tensor]:
        """Map n (generated from cond[n]) on part n only: part n [n_rows, in] (or [G, n_rows, in] with
        groups) -> [n_rows, out] (or [G, n_rows, out]); cond [N, c] with N = len(parts)."""
        weights, biases = self.generate(cond)
        return [torch.matmul(x, w) + b for x, w, b in zip(parts, weights, biases)]
