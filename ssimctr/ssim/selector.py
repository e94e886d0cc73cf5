"""SSIM's adaptive selection network and its gates (docs/methods.md §1.3).

m(x) = a_{d(x)}ᵀ MLP(e(x)) + b_{d(x)}: an MLP on the flattened instance embedding (scenario field
included) and one linear head per scenario, the row's own head used (`shared_head=True`: one head
for every scenario, the SSIM-ND ablation). Search: p = sigmoid(τ m), g = STE(relu(p − ε)).
Retrain: the top ⌊r·B⌋ rows of each batch by m are shared.
The MLP's hidden sizes follow the backbone's towers unless ssim.selector_hidden sets them (`selector_hidden`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ssimctr.config.models import DNNConfig, backbone_config
from ssimctr.data.batch import Batch
from ssimctr.models.layers import MLP, FeatureEmbedding

FALLBACK_HIDDEN = tuple(DNNConfig().hidden)  # backbones without `hidden`: the DNN's default towers


def selector_hidden(hidden: Sequence[int] | None, backbone: Any) -> list[int]:
    """The selector MLP's hidden sizes: `hidden` (ssim.selector_hidden) when set; when null, the tower
    sizes `hidden` of the backbone config (DNN, DeepFM, DCN, DCN-V2, STAR, DFFM, PEPNet; schema defaults
    filled in), else (other models, or no config) FALLBACK_HIDDEN. The official code's [1024, 512, 256]
    is its towers' size (docs/methods.md §1.3)."""
    if hidden is not None:
        return list(hidden)
    towers = None if backbone is None else backbone_config(backbone).get("hidden")
    return list(towers if towers is not None else FALLBACK_HIDDEN)


class Selector(nn.Module):
    """Scores m(x) [B] from flattened instance embeddings [B, F*D] and scenario ids [B]."""

    def __init__(
        self, in_dim: int, hidden: Sequence[int], num_scenarios: int, shared_head: bool = False, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.mlp = MLP(in_dim, hidden, dropout=dropout)
        self.heads = nn.Linear(self.mlp.output_dim, 1 if shared_head else num_scenarios)

    def forward(self, embedding: torch.Tensor, scenario: torch.Tensor) -> torch.Tensor:
        scores = self.heads(self.mlp(embedding))
        if scores.shape[1] == 1:
            return scores.squeeze(1)
        return scores.gather(1, scenario.unsqueeze(1)).squeeze(1)


class FrozenSelector(nn.Module):
    """The retrain-phase selector: the search's selector on a frozen copy of the search embedding.

    Nothing here is trained: parameters have requires_grad False and scoring runs without autograd.
    """

    def __init__(self, embedding: FeatureEmbedding, selector: Selector) -> None:
        super().__init__()
        self.embedding = embedding
        self.selector = selector
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> FrozenSelector:
        return super().train(False)

    @torch.no_grad()
    def forward(self, batch: Batch) -> torch.Tensor:
        return self.selector(self.embedding(batch).flatten(1), batch.scenario)


class _SignSTE(torch.autograd.Function):
    """sign(x) forward; the incoming gradient, clamped to [-1, 1], backward (straight-through)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return torch.sign(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad.clamp(-1.0, 1.0)


def hard_gate(p: torch.Tensor, epsilon: float) -> torch.Tensor:
    """g = STE(relu(p − ε)): exactly 1 where p > ε, else 0; rows with p < ε get no gradient."""
    return _SignSTE.apply(torch.relu(p - epsilon))


def temperature(step: int, total_steps: int, final: float) -> float:
    """τ at `step` (0-based): 1 at the first step, multiplied by final^(1/(N−1)) each step, `final` at the last."""
    if total_steps <= 1:
        return final
    return math.exp(math.log(final) * min(step, total_steps - 1) / (total_steps - 1))


def top_ratio_gate(scores: torch.Tensor, ratio: float) -> torch.Tensor:
    """1.0 for the ⌊ratio·B⌋ highest scores of the batch, else 0.0."""
    gate = torch.zeros_like(scores)
    count = math.floor(ratio * scores.shape[0])
    if count:
        gate[torch.topk(scores, count).indices] = 1.0
    return gate
