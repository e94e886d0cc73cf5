"""The multi-scenario study: one model for all scenarios (or one per scenario) under a regime, or
SSIM's search / retrain, evaluated per scenario (docs/methods.md §1.7 for the regimes)."""

from __future__ import annotations

import logging

from rich.text import Text

from ssimctr.config.schema import SSIM_PHASES
from ssimctr.tasks import ssim_phases
from ssimctr.tasks.base import Job, Supports
from ssimctr.tasks.outcome import Outcome

logger = logging.getLogger(__name__)  # the job's main.log (Hydra's job log)


class MultiScenarioTask:
    """`task=multi_scenario` (and `task=multi_modal`): trains with the job's regime, or runs its SSIM phase."""

    supports = Supports(
        ssim_phases=tuple(phase for phase in SSIM_PHASES if phase != "disabled"),
        ssim_regimes={"training": ("joint",), "towers": ("per_scenario",)},  # one model, a tower per scenario
        ddp_regimes={"training": ("joint",)},  # one model on all rows (not a model per scenario)
    )

    def run(self, job: Job) -> Outcome:
        """Train under the regime (or run the SSIM phase) and evaluate on val and test."""
        regime, ssim = job.regime, job.ssim
        model = job.models.build(regime)
        phase = "" if ssim.phase == "disabled" else f" / ssim {ssim.phase}"
        line = (
            f"[bold]{job.models.backbone_name}[/] / regime {regime.name}{phase}: "
            f"{sum(p.numel() for p in model.parameters()):,} parameters on {job.models.device}"
        )
        job.console.print(line)
        logger.info(Text.from_markup(line).plain)
        if ssim.phase != "disabled":
            outcome = ssim_phases.run_phase(ssim, regime, model, job)
        else:
            build = lambda: job.models.build(regime)  # noqa: E731
            trained = regime.train(model, build, job.splits, job.scenario_names, job.settings, job.tracker.log_metrics)
            outcome = Outcome.of(trained)
        outcome.description = f"regime {regime.name}{phase}"
        return outcome
