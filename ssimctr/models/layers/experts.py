"""Mixture-of-experts layers: batched experts, softmax gates, batched towers and a PLE CGC level.

Every layer here holds G independent maps as one weight with a leading G dimension and runs them
as one batched matrix product (docs/methods.md §3.4, §3.6). Map g's parameters are slice g of each
weight, so a loss that never reaches map g leaves slice g's gradient at exactly zero.

`routed(parts)` is the routed path (docs/methods.md §3.12): parts are the segments of a batch grouped
by scenario (ssimctr.models.routing), and part p goes through its own maps only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ssimctr.models.routing import Routes


class GroupedLinear(nn.Module):
    """G independent linear maps: x [B, H] (shared by all maps) or [G', B, H] -> [G, B, O].

    With a grouped input, G' must divide G and input g feeds the G/G' consecutive maps
    g·G/G' ... (g+1)·G/G' - 1 (e.g. scenario k's input feeds scenario k's S experts).
    """

    def __init__(self, in_dim: int, out_dim: int, groups: int, bias: bool = True) -> None:
        super().__init__()
        self.groups = groups
        bound = 1.0 / math.sqrt(in_dim)
        self.weight = nn.Parameter(torch.empty(groups, in_dim, out_dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(groups, 1, out_dim).uniform_(-bound, bound)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            x = x.unsqueeze(0)
        inputs, batch, _ = x.shape
        if inputs == self.groups:
            if self.bias is None:
                return torch.bmm(x, self.weight)
            return torch.baddbmm(self.bias, x, self.weight)
        per = maps_per_input(self.groups, inputs)
        _, in_dim, out_dim = self.weight.shape
        weight = self.weight.view(inputs, per, in_dim, out_dim).permute(0, 2, 1, 3).reshape(inputs, in_dim, -1)
        out = (
            torch.bmm(x, weight).view(inputs, batch, per, out_dim).transpose(1, 2).reshape(self.groups, batch, out_dim)
        )
        return out if self.bias is None else out + self.bias

    def routed(self, parts: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Part p through its own maps only: with P = len(parts) dividing G, part p ([n_p, in], or
        [G/P, n_p, in] when each map has its own input) feeds maps p·G/P ... (p+1)·G/P − 1 -> [G/P, n_p, out];
        with P = G (one map per part) a part [n_p, in] gives [n_p, out] (one matrix product per part)."""
        per = maps_per_input(self.groups, len(parts))
        if per == 1 and all(x.dim() == 2 for x in parts):
            if self.bias is None:
                return [x @ w for x, w in zip(parts, self.weight)]
            return [torch.addmm(b, x, w) for x, w, b in zip(parts, self.weight, self.bias)]
        weights = self.weight.split(per)
        if self.bias is None:
            return [torch.matmul(x, w) for x, w in zip(parts, weights)]
        return [torch.matmul(x, w) + b for x, w, b in zip(parts, weights, self.bias.split(per))]


def maps_per_input(groups: int, inputs: int) -> int:
    """`groups` / `inputs`: how many consecutive maps (or experts) each input group feeds."""
    if groups % inputs:
        raise ValueError(f"{inputs} input groups do not divide {groups} maps")
    return groups // inputs


class Experts(nn.Module):
    """M MLPs computed together (experts, or per-scenario towers): x [B, H] or [G', B, H] -> [M, B, W].

    f_j(x) = ReLU(... ReLU(W_{j,1} x + b_{j,1}) ...), hidden sizes `hidden` (the output is the
    last hidden layer, activated, as in MMoE/PLE), optional batch norm / dropout per layer; with
    `output_dim` a final linear layer without activation follows (used for towers). A shared
    input [B, H] goes through each layer's M maps as one wide matrix product.
    """

    def __init__(
        self,
        in_dim: int,
        hidden: Sequence[int],
        num_experts: int,
        dropout: float = 0.0,
        batch_norm: bool = False,
        output_dim: int | None = None,
    ) -> None:
        super().__init__()
        widths = [in_dim, *hidden]
        self.hidden = nn.ModuleList(GroupedLinear(a, b, num_experts) for a, b in zip(widths[:-1], widths[1:]))
        self.norms = nn.ModuleList(nn.BatchNorm1d(num_experts * w) for w in hidden) if batch_norm else None
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.output = GroupedLinear(widths[-1], output_dim, num_experts) if output_dim is not None else None
        self.output_dim = output_dim if output_dim is not None else widths[-1]
        self.num_experts = num_experts

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.hidden):
            x = self._activate(layer(x), i)
        if self.output is not None:
            return self.output(x)
        return x if x.dim() == 3 else x.expand(self.num_experts, *x.shape)

    def routed(self, parts: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """The routed path: part p ([n_p, H] or [M/P, n_p, H], P = len(parts) dividing M) through experts
        p·M/P ... (p+1)·M/P − 1 only -> [M/P, n_p, W] ([n_p, W] when P = M). With batch norm, in training,
        expert j's features are normalized with the statistics of its own part's rows (`segment_norm`)."""
        per = maps_per_input(self.num_experts, len(parts))
        if self.norms is not None and self.training:
            for norm in self.norms:
                norm.num_batches_tracked.add_(1)  # once per forward, as the full path counts
        for i, layer in enumerate(self.hidden):
            parts = [self._activate(h, i, p * per) for p, h in enumerate(layer.routed(parts))]
        if self.output is not None:
            return self.output.routed(parts)
        return [x if x.dim() == 3 or per == 1 else x.expand(per, *x.shape) for x in parts]

    def _activate(self, h: torch.Tensor, layer: int, first: int | None = None) -> torch.Tensor:
        """ReLU, dropout and the layer's batch norm (if any) of h [m, n, W] (or [n, W], one expert), the
        outputs of experts first ... first + m − 1 (None: all M on the batch's rows, the full path)."""
        if self.norms is not None:
            norm = self.norms[layer]
            if h.dim() == 2:
                width = h.shape[1]
                h = segment_norm(norm, h, slice(first * width, (first + 1) * width))
            else:
                m, batch, width = h.shape
                flat = h.transpose(0, 1).reshape(batch, m * width)
                if first is None:
                    flat = norm(flat)
                else:
                    flat = segment_norm(norm, flat, slice(first * width, (first + m) * width))
                h = flat.view(batch, m, width).transpose(0, 1)
        return self.dropout(torch.relu(h))


def segment_norm(norm: nn.BatchNorm1d, x: torch.Tensor, features: slice) -> torch.Tensor:
    """`norm` on one part's rows x [n, f] with its features `features` (the routed path): in training the
    statistics of these rows only, which update those features' running statistics; a part of fewer than
    two rows has no batch variance and is normalized with the running statistics, left unchanged (as
    STAR's partitioned norm does). In evaluation, the running statistics, as the full path."""
    return F.batch_norm(
        x,
        norm.running_mean[features],
        norm.running_var[features],
        norm.weight[features],
        norm.bias[features],
        norm.training and x.shape[0] > 1,
        norm.momentum,
        norm.eps,
    )


class GroupedTowers(nn.Module):
    """K MLP towers: h [B, H] (one input for all) or [K, B, H] (tower k reads h[k]) -> logits [B, K].

    Tower k's parameters are slice k of each weight, so a row whose loss uses only tower k
    leaves the other towers' gradients at exactly zero.
    """

    def __init__(
        self, in_dim: int, hidden: Sequence[int], num_towers: int, dropout: float = 0.0, batch_norm: bool = False
    ) -> None:
        super().__init__()
        self.mlp = Experts(in_dim, hidden, num_towers, dropout, batch_norm, output_dim=1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.mlp(h).squeeze(2).transpose(0, 1)

    def routed(self, parts: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """The routed path: tower k on part k [n_k, H] only -> K logits [n_k]."""
        return [logits.reshape(-1) for logits in self.mlp.routed(parts)]


class Gates(nn.Module):
    """G softmax gates over M experts: G_g(x) = softmax(W_g x [+ b_g]); x [B, H] or [G, B, H] -> [G, B, M]."""

    def __init__(self, in_dim: int, num_experts: int, num_gates: int, bias: bool = False) -> None:
        super().__init__()
        self.linear = GroupedLinear(in_dim, num_experts, num_gates, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.linear(x), dim=-1)

    def routed(self, parts: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """The routed path: gate g on part g [n_g, H] only -> [n_g, M] each."""
        return [torch.softmax(logits, dim=-1) for logits in self.linear.routed(parts)]


def mix(gates: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
    """h_g = Σ_j G_{g,j} f_j: gates [G, B, M], experts [M, B, W] -> [G, B, W]."""
    return torch.einsum("gbm,mbw->gbw", gates, experts)


class CGCLevel(nn.Module):
    """One Customized Gate Control level of PLE (docs/methods.md §3.4) for K scenarios.

    Scenario k has S specific experts E_k; there are S_h shared experts E_s. Scenario k's gate
    mixes [E_k ; E_s]: h_k = Σ_{j ∈ E_k ∪ E_s} softmax(W_k x_k)_j f_j. With `shared_gate` (every
    level but the last) a shared gate over all K·S + S_h experts gives the next shared input
    h_s = Σ_j softmax(W_s x_s)_j f_j. Specific experts and gate k read x_k; shared ones read x_s.
    """

    def __init__(
        self,
        in_dim: int,
        hidden: Sequence[int],
        num_scenarios: int,
        specific: int,
        shared: int,
        dropout: float = 0.0,
        batch_norm: bool = False,
        gate_bias: bool = False,
        shared_gate: bool = False,
    ) -> None:
        super().__init__()
        self.num_scenarios = num_scenarios
        self.specific = specific
        self.specific_experts = Experts(in_dim, hidden, num_scenarios * specific, dropout, batch_norm)
        self.shared_experts = Experts(in_dim, hidden, shared, dropout, batch_norm)
        self.gates = Gates(in_dim, specific + shared, num_scenarios, gate_bias)
        self.shared_gate = Gates(in_dim, num_scenarios * specific + shared, 1, gate_bias) if shared_gate else None
        self.output_dim = self.shared_experts.output_dim

    def forward(self, x_specific: torch.Tensor, x_shared: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x_specific [B, H] or [K, B, H], x_shared [B, H] -> (h_k [K, B, W], h_s [B, W] or None)."""
        specific = self.specific_experts(x_specific)
        shared = self.shared_experts(x_shared)
        k, s = self.num_scenarios, self.specific
        gates = self.gates(x_specific)
        per_scenario = specific.view(k, s, *specific.shape[1:])
        h = torch.einsum("kbs,ksbw->kbw", gates[..., :s], per_scenario) + mix(gates[..., s:], shared)
        if self.shared_gate is None:
            return h, None
        h_shared = mix(self.shared_gate(x_shared), torch.cat([specific, shared], dim=0)).squeeze(0)
        return h, h_shared

    def routed(self, x_specific: Sequence[torch.Tensor], x_shared: torch.Tensor, routes: Routes) -> list[torch.Tensor]:
        """The routed path of a last level (no shared gate, which reads every scenario's experts): scenario
        k's specific experts and gate on its own rows x_specific[k] [n_k, H] only; the shared experts on
        every row x_shared [B, H] (batch order) -> h_k [n_k, W] for each scenario k."""
        if self.shared_gate is not None:
            raise ValueError("only a level without a shared gate (PLE's last) can be routed")
        s = self.specific
        specific = self.specific_experts.routed(x_specific)  # [S, n_k, W] each
        shared = routes.group(self.shared_experts(x_shared), dim=1)  # [S_h, n_k, W] each
        return [
            torch.einsum("bs,sbw->bw", g[:, :s], f) + torch.einsum("bs,sbw->bw", g[:, s:], f_shared)
            for g, f, f_shared in zip(self.gates.routed(x_specific), specific, shared)
        ]
