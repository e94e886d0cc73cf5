"""Which rows a retrain shares: the `ssim/selection` group (conf/ssim/selection/), each option a class
whose `gate` gives the retrain's gate g [B] of each batch (docs/methods.md §1.3, §1.6, §1.7).

batch_topk  BatchTopRatio   the official code's retrain: the top ⌊r·B⌋ rows of each batch by the frozen m
global      GlobalTopRatio  the global top r of every train row's m, saved by the search
soft        SoftWeights     SSIM-P: continuous weights p = sigmoid(τ_final·m) from the frozen selector
random      RandomRows      SSIM-R: ⌊r·B⌋ rows of each batch at random (seeded); needs no search
planted     PlantedTruth    the oracle on planted data: the rows of the planted truth column; needs no search
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol

import torch

from ssimctr.data.batch import Batch
from ssimctr.data.datasplit import DataSplit
from ssimctr.errors import UserError
from ssimctr.features.feature_map import FeatureMap
from ssimctr.ssim import artifacts
from ssimctr.ssim.selector import FrozenSelector, top_ratio_gate
from ssimctr.utils.seed import GeneratorState

Gate = Callable[[Batch], torch.Tensor]


@dataclass(frozen=True)
class Given:
    """What a selection may read: the ratio r (ssim.ratio), the seed of random draws, the data, the
    training device, and the search folder with its summary (None and {} without a search)."""

    ratio: float
    seed: int
    feature_map: FeatureMap
    train: DataSplit
    device: torch.device
    search: Path | None
    summary: dict


class Selection(Protocol):
    """An option of the `ssim/selection` group."""

    needs_search: ClassVar[bool]  # False: ssim=retrain runs without ssim.from_run / from_path

    def gate(self, given: Given) -> tuple[Gate, str]:
        """The retrain's gate and a description of it (the run's tag `ssim.selection`)."""


def _frozen(given: Given) -> FrozenSelector:
    return artifacts.load_frozen_selector(given.search, given.feature_map, given.device)


class BatchTopRatio:
    """The official code's retrain: the top ⌊r·B⌋ rows of each batch by m are shared."""

    needs_search = True

    def gate(self, given: Given) -> tuple[Gate, str]:
        frozen = _frozen(given)
        return lambda batch: top_ratio_gate(frozen(batch), given.ratio), f"batch top r={given.ratio}"


class GlobalTopRatio:
    """The selection saved by search: the global top r of the train rows' scores, by row id."""

    needs_search = True

    def gate(self, given: Given) -> tuple[Gate, str]:
        shared = artifacts.shared_by_row(given.search, given.ratio, given.device)
        return by_row_id(shared), f"global top r={given.ratio}"


class SoftWeights:
    """SSIM-P: the selector's final soft gate p = sigmoid(τ_final·m) as a continuous sharing weight.

    Reading (docs/methods.md §1.7): SSIM-P replaces the hard gate by its soft version, so the
    retrain uses p at the temperature the search ended with; sigmoid(m) alone would give every row
    about 0.5 after a search that ends at τ = 1000 (m is then of order 1/τ)."""

    needs_search = True

    def gate(self, given: Given) -> tuple[Gate, str]:
        if "final_temperature" not in given.summary:
            raise UserError(
                f"ssim/selection=soft weighs rows by sigmoid(τ·m) at the search's final temperature, but the "
                f"search in {given.search} has none (an ssim/criterion=excess search): use ssim/selection=batch_topk"
            )
        final = given.summary["final_temperature"]
        return soft_weights(_frozen(given), final), f"soft sigmoid({final:g}·m)"


class RandomRows:
    """SSIM-R: ⌊r·B⌋ rows of each batch chosen uniformly at random (seeded)."""

    needs_search = False

    def gate(self, given: Given) -> tuple[Gate, str]:
        return RandomSelection(given.ratio, given.seed), f"random r={given.ratio}"


class PlantedTruth:
    """The oracle on planted data: the rows whose planted truth (dataset.truth) is 1 are shared."""

    needs_search = False

    def gate(self, given: Given) -> tuple[Gate, str]:
        truth = artifacts.planted_truth(given.train)
        if truth is None:
            raise UserError(
                "ssim/selection=planted shares the rows of the data's planted truth column, but the prepared "
                "train split has none: use data with one (dataset.shareable=0.5 dataset.truth=shareable on the "
                "synthetic data, or experiment=ssim_planted)"
            )
        row_ids = truth["row_id"].to_torch().to(given.device)
        shared = torch.zeros(int(row_ids.max()) + 1, dtype=torch.bool, device=given.device)
        shared[row_ids] = torch.from_numpy(truth["truth"].to_numpy() != 0).to(given.device)
        return by_row_id(shared), "planted truth"


def soft_weights(selector: Callable[[Batch], torch.Tensor], temperature: float) -> Gate:
    """sigmoid(τ·m) of the frozen selector's score m, each batch."""
    return lambda batch: torch.sigmoid(temperature * selector(batch))


def by_row_id(shared_by_row: torch.Tensor) -> Gate:
    """A fixed selection: shared_by_row[row_id] (a bool tensor indexed by row id) as 0/1 gates."""
    return lambda batch: shared_by_row[batch.row_id].float()


class RandomSelection(GeneratorState):
    """SSIM-R's gate: ⌊r·B⌋ random rows of each batch; its generator's state is what a checkpoint keeps."""

    def __init__(self, ratio: float, seed: int) -> None:
        self.ratio = ratio
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, batch: Batch) -> torch.Tensor:
        scores = torch.rand(len(batch), generator=self.generator).to(batch.label.device)
        return top_ratio_gate(scores, self.ratio)
