"""What an SSIM search trains its selector by: the `ssim/criterion` group (conf/ssim/criterion/).

hard    SSIM (the default): g = STE(relu(p − ε)), own-tower weight 1(g = 0) without gradient, the KL
        term (docs/methods.md §1.3–§1.4)
soft    SSIM-P: g = p, own-tower weight 1 − p (docs/methods.md §1.7)
excess  the excess loss: the towers train as MT-Backbone and the selector learns the loss that sharing
        a row adds (docs/methods.md §1.10)

Each criterion makes the search's loss for a selector (`search_loss`); the search saves the same
artifacts whichever made them, so every selection (ssimctr.ssim.selection) retrains on any of them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from ssimctr.config.schema import SsimConfig
from ssimctr.data.batch import Batch
from ssimctr.models.base import MultiScenarioModel
from ssimctr.ssim.losses import ExcessSearchLoss, SearchLoss
from ssimctr.ssim.selector import Selector, hard_gate
from ssimctr.train.loop import Logger


class SearchObjective(Protocol):
    """A search's loss: a `fit` loss with checkpoint state and what summary.json records about it."""

    def __call__(self, model: MultiScenarioModel, batch: Batch) -> torch.Tensor: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...

    def summary(self) -> dict: ...


@dataclass(frozen=True)
class SearchRun:
    """What a search loss gets from the search besides the ssim options: its number of steps, the
    scenarios, where statistics go and the regime's loss reduction (row | scenario)."""

    total_steps: int
    scenario_names: Sequence[str]
    log: Logger
    reduction: str


class Criterion(Protocol):
    """An option of the `ssim/criterion` group."""

    def search_loss(self, selector: Selector, ssim: SsimConfig, run: SearchRun) -> SearchObjective:
        """The search's loss for `selector`, with the ssim options it reads."""


class _SsimGate(ABC):
    """SSIM's objective (SearchLoss) with the gate of the subclass."""

    @abstractmethod
    def gates(self, p: torch.Tensor, epsilon: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(g, own-tower weight) [B] each, from p = sigmoid(τ m) [B]."""

    def search_loss(self, selector: Selector, ssim: SsimConfig, run: SearchRun) -> SearchLoss:
        return SearchLoss(
            selector,
            gate=self,
            epsilon=ssim.epsilon,
            lambda_kl=ssim.lambda_kl,
            final_temperature=ssim.final_temperature,
            **_common(ssim, run),
        )


class HardGate(_SsimGate):
    """SSIM: g = STE(relu(p − ε)) ∈ {0, 1}; the own tower's weight is the gradient-free mask 1(g = 0)."""

    def gates(self, p: torch.Tensor, epsilon: float) -> tuple[torch.Tensor, torch.Tensor]:
        g = hard_gate(p, epsilon)
        return g, (g == 0).float()


class SoftGate(_SsimGate):
    """SSIM-P: g = p, continuous, no threshold; the own tower's weight 1 − p carries gradient."""

    def gates(self, p: torch.Tensor, epsilon: float) -> tuple[torch.Tensor, torch.Tensor]:
        return p, 1 - p


class ExcessLoss:
    """The excess loss: MT-Backbone's towers, and a selector that regresses −(ℓ_sh − ℓ_own)."""

    def search_loss(self, selector: Selector, ssim: SsimConfig, run: SearchRun) -> ExcessSearchLoss:
        return ExcessSearchLoss(selector, **_common(ssim, run))


def _common(ssim: SsimConfig, run: SearchRun) -> dict:
    """The keyword arguments every search loss takes."""
    return {
        "total_steps": run.total_steps,
        "scenario_names": run.scenario_names,
        "log": run.log,
        "log_every": ssim.log_every,
        "reduction": run.reduction,
    }
