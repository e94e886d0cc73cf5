"""Schemas of SSIM's two choices, each a class named by `_target_` (docs/methods.md §1):

ssim/criterion  what a search trains the selector by (ssimctr.ssim.criteria): hard, soft, excess
ssim/selection  which rows a retrain shares (ssimctr.ssim.selection): batch_topk, global, soft, random, planted

conf/ssim/<criterion|selection>/<name>.yaml is `defaults: [/schema_ssim_<group>_<name>@_here_, _self_]`
plus comments; a new criterion or selection is one class, one dataclass here and one YAML. The classes
get what a job knows (the ssim options, the search folder, the data) when they are used, not as config.
"""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING


@dataclass
class CriterionConfig:
    _target_: str = MISSING


@dataclass
class HardGateConfig(CriterionConfig):
    """SSIM: the annealed hard gate and the KL term (docs/methods.md §1.3–§1.4)."""

    _target_: str = "ssimctr.ssim.criteria.HardGate"


@dataclass
class SoftGateConfig(CriterionConfig):
    """SSIM-P: the selector's probability as the sharing weight (docs/methods.md §1.7)."""

    _target_: str = "ssimctr.ssim.criteria.SoftGate"


@dataclass
class ExcessLossConfig(CriterionConfig):
    """The excess loss: the selector learns the loss that sharing a row adds (docs/methods.md §1.10)."""

    _target_: str = "ssimctr.ssim.criteria.ExcessLoss"


@dataclass
class SelectionConfig:
    _target_: str = MISSING


@dataclass
class BatchTopRatioConfig(SelectionConfig):
    """The official retrain: the top ⌊r·B⌋ rows of each batch by the frozen selector's score."""

    _target_: str = "ssimctr.ssim.selection.BatchTopRatio"


@dataclass
class GlobalTopRatioConfig(SelectionConfig):
    """The global top r of every train row's score, as the search saved it."""

    _target_: str = "ssimctr.ssim.selection.GlobalTopRatio"


@dataclass
class SoftWeightsConfig(SelectionConfig):
    """SSIM-P: sigmoid(τ_final·m) of the frozen selector as a continuous sharing weight."""

    _target_: str = "ssimctr.ssim.selection.SoftWeights"


@dataclass
class RandomRowsConfig(SelectionConfig):
    """SSIM-R: ⌊r·B⌋ random rows of each batch (seeded); needs no search."""

    _target_: str = "ssimctr.ssim.selection.RandomRows"


@dataclass
class PlantedTruthConfig(SelectionConfig):
    """The oracle on planted data: exactly the rows of the planted truth column (dataset.truth)."""

    _target_: str = "ssimctr.ssim.selection.PlantedTruth"


SSIM_CRITERION_SCHEMAS: dict[str, type] = {
    "hard": HardGateConfig,
    "soft": SoftGateConfig,
    "excess": ExcessLossConfig,
}
SSIM_SELECTION_SCHEMAS: dict[str, type] = {
    "batch_topk": BatchTopRatioConfig,
    "global": GlobalTopRatioConfig,
    "soft": SoftWeightsConfig,
    "random": RandomRowsConfig,
    "planted": PlantedTruthConfig,
}
