"""Feature-interaction layers of the CTR backbones: FM, cross networks v1 / v2, K-tower MLP.

Per-scenario layers keep every tower's parameters in one tensor with a leading K dimension and
run all towers together (batched matrix products), tower-major: activations are [K, B, H].
Tower k's parameters are slice k of each tensor, so a loss that reads only tower k leaves
the other slices' gradients at exactly zero. docs/methods.md §3.2, §3.3. `routed(parts)` is the
routed path (§3.12): part k, scenario k's rows of the batch, goes through tower k only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


def _uniform(shape: Sequence[int], fan_in: int) -> nn.Parameter:
    """A parameter drawn like nn.Linear's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)
    return nn.Parameter(torch.empty(*shape).uniform_(-bound, bound))


def _per_tower(x: torch.Tensor, num_towers: int) -> torch.Tensor:
    """[B, H] (shared by every tower) or [K, B, H] -> [K, B, H] (a view when shared)."""
    return x.expand(num_towers, *x.shape) if x.dim() == 2 else x


class FactorizationMachine(nn.Module):
    """FM second-order term, no parameters: [B, F, D] -> [B, 1].

    ½ Σ_d [(Σ_i E_id)² − Σ_i E_id²] = Σ_{i<j} <E_i, E_j> (docs/methods.md §3.2).
    """

    def forward(self, fields: torch.Tensor) -> torch.Tensor:
        square_of_sum = fields.sum(dim=1).pow(2)
        sum_of_square = fields.pow(2).sum(dim=1)
        return 0.5 * (square_of_sum - sum_of_square).sum(dim=1, keepdim=True)


class CrossNetV1(nn.Module):
    """DCN cross network, one per tower: x_{l+1} = x0 · (x_lᵀ w_l) + b_l + x_l (docs/methods.md §3.3).

    w_l, b_l ∈ R^H per tower and layer. Input x0 [B, H] (shared by the towers) or [K, B, H];
    output x_L [K, B, H]. Computed in closed form: by induction x_l = α_l x0 + β_l with a scalar
    α_l per row and β_l = Σ_{j<l} b_j, so α_0 = 1 and α_{l+1} = α_l (1 + x0ᵀw_l) + β_lᵀw_l.
    Exactly the layer equation, but all x0ᵀw_l come from one matrix product and no layer
    materialises a [K, B, H] tensor.
    """

    def __init__(self, in_dim: int, num_layers: int, num_towers: int = 1) -> None:
        super().__init__()
        self.num_towers = num_towers
        self.weights = _uniform((num_layers, num_towers, in_dim), in_dim)
        self.biases = nn.Parameter(torch.zeros(num_layers, num_towers, in_dim))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        shared = "bh" if x0.dim() == 2 else "kbh"
        projections = torch.einsum(f"{shared},lkh->lkb", x0, self.weights)  # x0ᵀ w_l: [L, K, B]
        return self._cross(x0, projections, self._shifts(), self.biases.sum(0).unsqueeze(1))

    def routed(self, parts: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """The routed path: tower k's cross network on part k [n_k, H] only -> [n_k, H] each."""
        per_tower = zip(parts, self.weights.unbind(1), self._shifts().unbind(1), self.biases.sum(0).unsqueeze(1))
        return [self._cross(x0, torch.einsum("bh,lh->lb", x0, w), shifts, b) for x0, w, shifts, b in per_tower]

    def _shifts(self) -> torch.Tensor:
        """β_lᵀ w_l with β_l = Σ_{j<l} b_j: [L, K, 1]."""
        offsets = self.biases.cumsum(0) - self.biases  # β_l: [L, K, H]
        return (offsets * self.weights).sum(2, keepdim=True)

    @staticmethod
    def _cross(x0: torch.Tensor, projections: torch.Tensor, shifts: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """x_L = α_L x0 + Σ_l b_l from the projections x0ᵀw_l [L, (K,) B] and shifts [L, (K,) 1]."""
        alpha = projections.new_ones(projections.shape[1:])  # α_0 = 1
        for projection, shift in zip(projections, shifts):
            alpha = alpha * (1 + projection) + shift
        return torch.addcmul(bias, x0, alpha.unsqueeze(-1))


class CrossNetV2(nn.Module):
    """DCN-V2 cross network, one per tower: x_{l+1} = x0 ⊙ (W_l x_l + b_l) + x_l (docs/methods.md §3.3).

    W_l ∈ R^{H×H} (full rank, `rank=None`) or W_l = U_l V_lᵀ with U_l, V_l ∈ R^{H×r} (`rank=r`).
    Input x0 [B, H] (shared by the towers) or [K, B, H]; output [K, B, H].
    """

    def __init__(self, in_dim: int, num_layers: int, num_towers: int = 1, rank: int | None = None) -> None:
        super().__init__()
        self.num_towers = num_towers
        self.rank = rank
        if rank is None:
            self.weights = _uniform((num_layers, num_towers, in_dim, in_dim), in_dim)  # W_lᵀ
        else:
            self.v = _uniform((num_layers, num_towers, in_dim, rank), in_dim)
            self.u = _uniform((num_layers, num_towers, rank, in_dim), rank)  # U_lᵀ
        self.biases = nn.Parameter(torch.zeros(num_layers, num_towers, 1, in_dim))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x0 = _per_tower(x0, self.num_towers)
        x = x0
        for layer, b in enumerate(self.biases):
            if self.rank is None:
                projected = torch.baddbmm(b, x, self.weights[layer])
            else:
                projected = torch.baddbmm(b, torch.bmm(x, self.v[layer]), self.u[layer])
            x = torch.addcmul(x, x0, projected)
        return x

    def routed(self, parts: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """The routed path: tower k's cross network on part k [n_k, H] only -> [n_k, H] each."""
        if self.rank is None:  # tower k: (W_lᵀ,) per layer
            maps = [list(zip(w.unbind(0))) for w in self.weights.unbind(1)]
        else:  # tower k: (V_l, U_lᵀ) per layer
            maps = [list(zip(v.unbind(0), u.unbind(0))) for v, u in zip(self.v.unbind(1), self.u.unbind(1))]
        outputs = []
        for x0, layers, biases in zip(parts, maps, self.biases.unbind(1)):
            x = x0
            for factors, b in zip(layers, biases.unbind(0)):
                hidden = x if self.rank is None else x @ factors[0]
                x = torch.addcmul(x, x0, torch.addmm(b, hidden, factors[-1]))
            outputs.append(x)
        return outputs


class TowerHead(nn.Module):
    """Per-tower linear read-out without bias: z_k = w_kᵀ [h_k^1 ; h_k^2 ; ...], [K, B, H_i]... -> [B, K].

    The parts are read through matching slices of w_k instead of being concatenated.
    """

    def __init__(self, in_dim: int, num_towers: int) -> None:
        super().__init__()
        self.weight = _uniform((num_towers, in_dim, 1), in_dim)

    def forward(self, *parts: torch.Tensor) -> torch.Tensor:
        weights = self.weight.split([part.shape[2] for part in parts], dim=1)
        logits = sum(torch.bmm(part, w) for part, w in zip(parts, weights))
        return logits.squeeze(2).transpose(0, 1)

    def routed(self, *parts: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """The routed path: each argument one input part's K segments [n_k, H_i];
        z_k on segment k only -> K logits [n_k]."""
        weights = [w.unbind(0) for w in self.weight.split([part[0].shape[-1] for part in parts], dim=1)]
        return [sum(x @ w[k] for x, w in zip(segments, weights)).reshape(-1) for k, segments in enumerate(zip(*parts))]
