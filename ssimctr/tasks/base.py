"""What a task gets and what it returns.

A task is a study (multi-scenario, cold-start, multi-modal): `conf/task/<name>.yaml` names its class
with `_target_` (the YAML's other keys are its options), and the runner calls `task.run(job)` on the
prepared data. A task owns its procedure; the runner logs and prints what it returns.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import torch
from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from ssimctr.config.schema import TrainerConfig
from ssimctr.data.prepare import PreparedDataset
from ssimctr.features.feature_map import FeatureMap
from ssimctr.models.base import MultiScenarioModel
from ssimctr.tracking import Tracker
from ssimctr.train.loop import Outcome
from ssimctr.train.regimes import Regime, Splits
from ssimctr.utils.instantiate import instantiate


def build_model(
    backbone: DictConfig, feature_map: FeatureMap, num_towers: int, scenario_feature: bool
) -> MultiScenarioModel:
    """The model of `backbone._target_` with `num_towers` towers (1: one tower for every scenario): the
    only place where models meet config (ssimctr.models never imports it)."""
    return instantiate(backbone, feature_map=feature_map, num_towers=num_towers, scenario_feature=scenario_feature)


@dataclass(frozen=True)
class ModelFactory:
    """Builds the job's models: a backbone config made for a regime, on the training device."""

    backbone: DictConfig
    feature_map: FeatureMap
    device: torch.device

    def build(self, regime: Regime, backbone: DictConfig | None = None) -> MultiScenarioModel:
        """A fresh model of `backbone` (default: the job's) with the regime's towers."""
        model = build_model(
            self.backbone if backbone is None else backbone,
            self.feature_map,
            regime.num_towers(self.feature_map.num_scenarios),
            regime.scenario_feature,
        )
        return model.to(self.device)

    def with_options(self, **options: Any) -> ModelFactory:
        """The same factory with some backbone options replaced (e.g. dropout=0.3)."""
        return replace(self, backbone=OmegaConf.merge(self.backbone, options))

    @property
    def backbone_name(self) -> str:
        """The backbone's class name, e.g. DNN."""
        return str(self.backbone._target_).rsplit(".", 1)[-1]


@dataclass
class Job:
    """Everything a task needs: the composed config (for the groups a task reads, e.g. regime and
    ssim), the prepared data and its opened splits, the model factory, the trainer settings, the
    tracker, the job's output folder and the console it prints to."""

    config: DictConfig
    data: PreparedDataset
    splits: Splits
    models: ModelFactory
    settings: TrainerConfig
    tracker: Tracker
    folder: Path
    console: Console

    @property
    def scenario_names(self) -> tuple[str, ...]:
        """The scenarios, in index order."""
        return tuple(self.data.feature_map.scenario_names)


class Task(Protocol):
    """A study: runs on a job and returns the metrics of its selected model(s)."""

    def run(self, job: Job) -> Outcome:
        """Train and evaluate; return the selected model(s)' validation and test metrics."""
