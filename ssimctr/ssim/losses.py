"""Loss callables for the SSIM phases (docs/methods.md §1.3–§1.4, §1.10).

Search (SSIM, SearchLoss):
         L = mean_i[w_i · BCE(own tower) + g_i · mean_k BCE(tower k)] + λ · e · (1 − mean g),
         p = sigmoid(τ m), τ annealed 1 → final over the search steps, (g, w) from the criterion's gate:
         hard g = STE(relu(p − ε)) with the gradient-free w = 1(g = 0), as in the official code, so a
         shared row's selector gradient is (1/B)[mean_k BCE_k − λe]; soft (SSIM-P) g = p, w = 1 − p.
Search (excess loss, ExcessSearchLoss):
         L = MT-Backbone's loss + mean_i (m_i − t_i)²,  t_i = sg(−(mean_k BCE_ik − BCE_i,own)),
         the selector reading sg(e(x)): the towers train as MT, the selector learns the loss sharing adds.
Retrain: the sharing loss without the KL term, g from a frozen selection (ssimctr.ssim.selection).
`reduction` (regime.loss_reduction) normalises the sharing part per row (above) or per scenario
(ssimctr.train.sharing); the KL term and the selector's regression are the same in both.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Protocol

import torch
import torch.nn.functional as F

from ssimctr.data.batch import Batch
from ssimctr.models.base import MultiScenarioModel, own_scenario
from ssimctr.ssim.selection import Gate
from ssimctr.ssim.selector import Selector, temperature
from ssimctr.train.checkpoint import load_state_into, state_of
from ssimctr.train.loop import Logger
from ssimctr.train.sharing import sharing_loss


class SearchGate(Protocol):
    """A search's gate: from p = sigmoid(τ m) [B], the sharing weights g [B] and the own-tower weights w [B]."""

    def gates(self, p: torch.Tensor, epsilon: float) -> tuple[torch.Tensor, torch.Tensor]: ...


class _SelectorSearch:
    """What both search losses share: the selector, the regime's loss reduction, the step count, and
    statistics every `log_every` steps."""

    def __init__(
        self,
        selector: Selector,
        *,
        total_steps: int,
        scenario_names: Sequence[str],
        log: Logger,
        log_every: int,
        reduction: str = "row",
    ) -> None:
        self.selector, self.reduction, self.total_steps = selector, reduction, total_steps
        self.names, self.log, self.log_every = list(scenario_names), log, log_every
        self.step = 0

    def state_dict(self) -> dict:
        """The selector's weights and the step (the temperature's schedule): what a checkpoint keeps."""
        return {"selector": self.selector.state_dict(), "step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self.selector.load_state_dict(state["selector"])
        self.step = state["step"]

    def _advance(self, stats: Callable[[], dict[str, float]]) -> None:
        """Log `stats()` on every `log_every`-th step and the last one; count the step."""
        if self.step % self.log_every == 0 or self.step == self.total_steps - 1:
            self.log(stats(), self.step)
        self.step += 1

    def _by_scenario(self, key: str, values: torch.Tensor, scenario: torch.Tensor) -> dict[str, float]:
        """`ssim/search/<key>/<scenario>`: the mean of `values` [B] over each scenario's rows (0 without rows)."""
        k = len(self.names)
        total = torch.zeros(k, device=values.device).index_add_(0, scenario, values)
        means = (total / torch.bincount(scenario, minlength=k).clamp(min=1)).tolist()
        return {f"ssim/search/{key}/{name}": value for name, value in zip(self.names, means)}


class SearchLoss(_SelectorSearch):
    """SSIM's search: backbone and selector trained jointly; the selector reads the backbone's live embedding."""

    def __init__(
        self,
        selector: Selector,
        *,
        gate: SearchGate,
        epsilon: float,
        lambda_kl: float,
        final_temperature: float,
        total_steps: int,
        scenario_names: Sequence[str],
        log: Logger,
        log_every: int,
        reduction: str = "row",
    ) -> None:
        super().__init__(
            selector,
            total_steps=total_steps,
            scenario_names=scenario_names,
            log=log,
            log_every=log_every,
            reduction=reduction,
        )
        self.gate, self.epsilon, self.lambda_kl, self.final_temperature = gate, epsilon, lambda_kl, final_temperature

    @property
    def temperature(self) -> float:
        return temperature(self.step, self.total_steps, self.final_temperature)

    def summary(self) -> dict:
        """What the search's summary.json records about this loss (SSIM-P's retrain reads the final τ)."""
        return {"final_temperature": self.temperature, "epsilon": self.epsilon, "lambda_kl": self.lambda_kl}

    def __call__(self, model: MultiScenarioModel, batch: Batch) -> torch.Tensor:
        scores = self.selector(model.embedding(batch).flatten(1), batch.scenario)
        p = torch.sigmoid(self.temperature * scores)
        g, own_weight = self.gate.gates(p, self.epsilon)
        loss = sharing_loss(
            model.towers(batch), batch.label, batch.scenario, g, own_weight=own_weight, reduction=self.reduction
        )
        loss = loss + self.lambda_kl * math.e * (1 - g.mean())
        self._advance(lambda: self._stats(g.detach(), batch.scenario))
        return loss

    def _stats(self, g: torch.Tensor, scenario: torch.Tensor) -> dict[str, float]:
        stats = self._by_scenario("shared", g, scenario)
        stats.update({"ssim/search/gate_mean": g.mean().item(), "ssim/search/temperature": self.temperature})
        return stats


class ExcessSearchLoss(_SelectorSearch):
    """The excess-loss search (docs/methods.md §1.10): the towers train as MT-Backbone (each row its own
    tower, the regime's reduction), and the selector, reading the embedding without passing gradient to
    it, regresses t_i = −(ℓ_sh(i) − ℓ_own(i)) of the current towers, ℓ_sh(i) = mean_k BCE_ik: its score m
    estimates minus the loss that sharing a row like x adds."""

    def summary(self) -> dict:
        """What the search's summary.json records about this loss: nothing beyond the criterion."""
        return {}

    def __call__(self, model: MultiScenarioModel, batch: Batch) -> torch.Tensor:
        towers = model.towers(batch)
        every = F.binary_cross_entropy_with_logits(towers, batch.label.unsqueeze(1).expand_as(towers), reduction="none")
        excess = (every.mean(1) - own_scenario(every, batch.scenario)).detach()
        scores = self.selector(model.embedding(batch).flatten(1).detach(), batch.scenario)
        error = F.mse_loss(scores, -excess)
        self._advance(
            lambda: {**self._by_scenario("excess", excess, batch.scenario), "ssim/search/score_error": error.item()}
        )
        return sharing_loss(towers, batch.label, batch.scenario, 0.0, reduction=self.reduction) + error


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
