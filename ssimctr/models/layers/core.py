"""Building blocks shared by every model: field embeddings, MLPs, parallel towers."""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from ssimctr.data.loaders import Batch
from ssimctr.features.feature_map import FeatureMap


class FeatureEmbedding(nn.Module):
    """Turns a Batch into field embeddings [B, F, D].

    Fields, in order: every categorical field (one table with per-field offsets, id 0 of each
    field is its OOV row), every numeric field (value times a learned vector), and, when
    `scenario_feature`, the scenario id as one more categorical field.
    """

    def __init__(self, feature_map: FeatureMap, dim: int, scenario_feature: bool = True) -> None:
        super().__init__()
        sizes = [f.vocab_size for f in feature_map.categorical]
        if scenario_feature:
            sizes.append(feature_map.num_scenarios)
        self.scenario_feature = scenario_feature
        self.register_buffer("offsets", torch.tensor([0, *sizes[:-1]]).cumsum(0), persistent=False)
        self.table = nn.Embedding(sum(sizes), dim)
        self.numeric = nn.Parameter(torch.empty(len(feature_map.numeric), dim))
        self.dim = dim
        self.num_fields = len(sizes) + len(feature_map.numeric)
        nn.init.xavier_uniform_(self.table.weight)
        if feature_map.numeric:
            nn.init.xavier_uniform_(self.numeric)

    @property
    def output_dim(self) -> int:
        """Size of the flattened embedding, F * D."""
        return self.num_fields * self.dim

    def forward(self, batch: Batch) -> torch.Tensor:
        ids = batch.cat
        if self.scenario_feature:
            ids = torch.cat([ids, batch.scenario.unsqueeze(1)], dim=1)
        fields = self.table(ids + self.offsets)
        if self.numeric.shape[0]:
            fields = torch.cat([fields, batch.num.unsqueeze(2) * self.numeric], dim=1)
        return fields


class MLP(nn.Sequential):
    """Linear -> [BatchNorm] -> ReLU -> [Dropout] per hidden size, then an optional output layer."""

    def __init__(self, in_dim: int, hidden: Sequence[int], dropout: float = 0.0,
                 batch_norm: bool = False, output_dim: int | None = None) -> None:
        layers: list[nn.Module] = []
        for width in hidden:
            layers.append(nn.Linear(in_dim, width))
            if batch_norm:
                layers.append(nn.BatchNorm1d(width))
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            in_dim = width
        if output_dim is not None:
            layers.append(nn.Linear(in_dim, output_dim))
        super().__init__(*layers)
        self.output_dim = output_dim if output_dim is not None else in_dim


class ParallelTowers(nn.Module):
    """K independent MLP towers applied to the same input, computed together: [B, H] -> [B, K].

    The first layer of all towers is one wide matrix product; deeper layers are one batched
    matrix product over towers. Tower k's parameters are slice k of each weight, so a row
    whose loss uses only tower k leaves the other towers' gradients at exactly zero.
    """

    def __init__(self, in_dim: int, hidden: Sequence[int], num_towers: int,
                 dropout: float = 0.0, batch_norm: bool = False) -> None:
        super().__init__()
        self.num_towers = num_towers
        widths = [in_dim, *hidden, 1]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in zip(widths[:-1], widths[1:]):
            bound = 1.0 / math.sqrt(fan_in)
            self.weights.append(nn.Parameter(torch.empty(num_towers, fan_in, fan_out).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(num_towers, 1, fan_out).uniform_(-bound, bound)))
        self.norms = nn.ModuleList(nn.BatchNorm1d(num_towers * w) for w in hidden) if batch_norm else None
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        k = self.num_towers
        first = self.weights[0]
        h = (x @ first.permute(1, 0, 2).reshape(first.shape[1], -1)).view(batch, k, -1).transpose(0, 1)
        h = h + self.biases[0]
        for i in range(1, len(self.weights)):
            h = self._activate(h, i - 1)
            h = torch.baddbmm(self.biases[i], h, self.weights[i])
        return h.squeeze(2).transpose(0, 1)

    def _activate(self, h: torch.Tensor, layer: int) -> torch.Tensor:
        if self.norms is not None:
            k, batch, width = h.shape
            h = self.norms[layer](h.transpose(0, 1).reshape(batch, k * width))
            h = h.view(batch, k, width).transpose(0, 1)
        return self.dropout(torch.relu(h))
