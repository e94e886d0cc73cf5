"""Which rows a retrain shares: the gate g [B] of each batch (docs/methods.md §1.3, §1.6).

batch_top_ratio   the official code's retrain: the top ⌊r·B⌋ rows of each batch by the frozen m
global_selection  the global top r of every train row's m, saved by the search
random_selection  SSIM-R: ⌊r·B⌋ rows of each batch at random (seeded)
soft_weights      SSIM-P: continuous weights p = sigmoid(τ_final·m) from the frozen selector
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ssimctr.data.batch import Batch
from ssimctr.ssim.selector import FrozenSelector, top_ratio_gate
from ssimctr.utils.seed import GeneratorState

Gate = Callable[[Batch], torch.Tensor]


def batch_top_ratio(selector: FrozenSelector, ratio: float) -> Gate:
    """The official code's retrain: the top ⌊r·B⌋ rows of each batch by m are shared."""
    return lambda batch: top_ratio_gate(selector(batch), ratio)


def soft_weights(selector: FrozenSelector, temperature: float) -> Gate:
    """SSIM-P: the selector's final soft gate p = sigmoid(τ_final·m) as a continuous sharing weight.

    Reading (docs/methods.md §1.7): SSIM-P replaces the hard gate by its soft version, so the
    retrain uses p at the temperature the search ended with; sigmoid(m) alone would give every row
    about 0.5 after a search that ends at τ = 1000 (m is then of order 1/τ)."""
    return lambda batch: torch.sigmoid(temperature * selector(batch))


def global_selection(shared_by_row: torch.Tensor) -> Gate:
    """The selection saved by search: shared_by_row[row_id] (a bool tensor indexed by row id) as 0/1 gates."""
    return lambda batch: shared_by_row[batch.row_id].float()


def random_selection(ratio: float, seed: int) -> Gate:
    """SSIM-R: ⌊r·B⌋ rows of each batch chosen uniformly at random (seeded)."""
    return RandomSelection(ratio, seed)


class RandomSelection(GeneratorState):
    """The gate of `random_selection`; its generator's state is what a checkpoint keeps."""

    def __init__(self, ratio: float, seed: int) -> None:
        self.ratio = ratio
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, batch: Batch) -> torch.Tensor:
        scores = torch.rand(len(batch), generator=self.generator).to(batch.label.device)
        return top_ratio_gate(scores, self.ratio)
