"""Loss callables for the two SSIM phases (docs/methods.md §1.3–§1.4).

Search:  L = mean_i[1(g_i = 0) · BCE(own tower) + g_i · mean_k BCE(tower k)] + λ · e · (1 − mean g),
         g = STE(relu(sigmoid(τ m) − ε)), τ annealed 1 → final over the search steps.
         The own-tower mask 1(g = 0) carries no gradient (as in the official code), so a shared row's
         selector gradient is (1/B)[mean_k BCE_k − λe]: rows that are hard for the other scenarios
         drop out of sharing. gate="soft" (SSIM-P): g = p, continuous, no threshold.
Retrain: the same loss without the KL term, g from a frozen selection (ssimctr.ssim.selection).
`reduction` (regime.loss_reduction) normalises the sharing part per row (above) or per scenario
(ssimctr.train.sharing); the KL term is the same in both.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ssimctr.data.batch import Batch
from ssimctr.models.base import MultiScenarioModel
from ssimctr.ssim.selection import Gate
from ssimctr.ssim.selector import Selector, hard_gate, temperature
from ssimctr.train.checkpoint import load_state_into, state_of
from ssimctr.train.loop import Logger
from ssimctr.train.sharing import sharing_loss


class SearchLoss:
    """Joint training of backbone and selector; the selector reads the backbone's live embedding."""

    def __init__(
        self,
        selector: Selector,
        *,
        epsilon: float,
        lambda_kl: float,
        final_temperature: float,
        total_steps: int,
        gate: str,
        scenario_names: Sequence[str],
        log: Logger,
        log_every: int,
        reduction: str = "row",
    ) -> None:
        if gate not in ("hard", "soft"):
            raise ValueError(f"gate must be hard or soft, got {gate}")
        self.selector = selector
        self.epsilon, self.lambda_kl, self.gate = epsilon, lambda_kl, gate
        self.final_temperature, self.total_steps = final_temperature, total_steps
        self.names, self.log, self.log_every = list(scenario_names), log, log_every
        self.reduction = reduction
        self.step = 0

    @property
    def temperature(self) -> float:
        return temperature(self.step, self.total_steps, self.final_temperature)

    def state_dict(self) -> dict:
        """The selector's weights and the step (the temperature's schedule): what a checkpoint keeps."""
        return {"selector": self.selector.state_dict(), "step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self.selector.load_state_dict(state["selector"])
        self.step = state["step"]

    def __call__(self, model: MultiScenarioModel, batch: Batch) -> torch.Tensor:
        scores = self.selector(model.embedding(batch).flatten(1), batch.scenario)
        p = torch.sigmoid(self.temperature * scores)
        if self.gate == "hard":
            g = hard_gate(p, self.epsilon)
            own_weight = (g == 0).float()
        else:
            g = p
            own_weight = 1 - g
        loss = sharing_loss(
            model.towers(batch), batch.label, batch.scenario, g, own_weight=own_weight, reduction=self.reduction
        )
        loss = loss + self.lambda_kl * math.e * (1 - g.mean())
        if self.step % self.log_every == 0 or self.step == self.total_steps - 1:
            self.log(self._stats(g.detach(), batch.scenario), self.step)
        self.step += 1
        return loss

    def _stats(self, g: torch.Tensor, scenario: torch.Tensor) -> dict[str, float]:
        k = len(self.names)
        shared = torch.zeros(k, device=g.device).index_add_(0, scenario, g)
        rows = torch.bincount(scenario, minlength=k).clamp(min=1)
        values = (shared / rows).tolist()
        stats = {f"ssim/search/shared/{name}": value for name, value in zip(self.names, values)}
        stats.update({"ssim/search/gate_mean": g.mean().item(), "ssim/search/temperature": self.temperature})
        return stats


class RetrainLoss:
    """Retraining with a fixed selection: `gate_of(batch)` gives g [B]; no KL term."""

    def __init__(self, gate_of: Gate, reduction: str = "row") -> None:
        self.gate_of = gate_of
        self.reduction = reduction

    def state_dict(self) -> dict | None:
        """The gate's state when it has one (SSIM-R's generator): what a checkpoint keeps."""
        return state_of(self.gate_of)

    def load_state_dict(self, state: dict | None) -> None:
        load_state_into(self.gate_of, state)

    def __call__(self, model: MultiScenarioModel, batch: Batch) -> torch.Tensor:
        towers = model.towers(batch)
        return sharing_loss(towers, batch.label, batch.scenario, self.gate_of(batch), reduction=self.reduction)
