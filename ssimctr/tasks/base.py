"""What a task gets and what it returns.

A task is a study (multi-scenario, cold-start, multi-modal): `conf/task/<name>.yaml` names its class
with `_target_` (the YAML's other keys are its options), and the runner calls `task.run(job)` on the
prepared data. A task owns its procedure; the runner logs and prints what it returns.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, Protocol

import polars as pl
import torch
from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from ssimctr.coldstart.base import ColdStartMethod, Entity
from ssimctr.config.datasets import DatasetConfig
from ssimctr.config.schema import ScenarioConfig, SplitConfig, SsimConfig, TrainerConfig
from ssimctr.data.prepare import PreparedDataset
from ssimctr.data.sources.base import SPLITS
from ssimctr.errors import UserError
from ssimctr.features.feature_map import FeatureMap
from ssimctr.models.base import MultiScenarioModel
from ssimctr.tasks.outcome import Outcome
from ssimctr.text.build import TextEncoder
from ssimctr.tracking import Tracker
from ssimctr.train.regimes import Regime, Splits
from ssimctr.utils.instantiate import instantiate
from ssimctr.utils.lazy import LazyMapping


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


@dataclass(frozen=True)
class DataRecipe:
    """How the job's data was made: its dataset, scenario and split options, the cache root and the
    text encoder (to prepare the data again, e.g. without held-out entities)."""

    dataset: DatasetConfig
    scenario: ScenarioConfig
    split: SplitConfig
    cache: Path
    text_encoder: TextEncoder


@dataclass
class Job:
    """Everything a task needs, built once by the runner: the prepared data, its splits (each opened on
    first use) and frames (`frames`), the model factory, the trainer settings, the regime, the SSIM
    options, the cold-start method (made with the studied entity: the `coldstart` group), how the data
    was made, the seed, the tracker, the job's output folder and the console it prints to. A task never
    reads the composed config."""

    data: PreparedDataset
    splits: Splits
    models: ModelFactory
    settings: TrainerConfig
    regime: Regime
    ssim: SsimConfig
    coldstart: Callable[[Entity], ColdStartMethod]
    recipe: DataRecipe
    seed: int
    tracker: Tracker
    folder: Path
    console: Console

    @property
    def scenario_names(self) -> tuple[str, ...]:
        """The scenarios, in index order."""
        return tuple(self.data.feature_map.scenario_names)

    @cached_property
    def frames(self) -> Mapping[str, pl.DataFrame]:
        """The prepared splits as polars frames (every column, the entity keys too), each read on first use."""
        return split_frames(self.data)


def split_frames(data: PreparedDataset) -> Mapping[str, pl.DataFrame]:
    """`data`'s splits as polars frames, each read from its parquet shards once, on first use."""
    return LazyMapping(SPLITS, lambda name: pl.read_parquet(data.split_path(name)))


RegimeRule = Mapping[str, tuple[str, ...]]  # a regime's attribute -> the values allowed ({}: any regime)
OPTIONAL_GROUPS = {"coldstart": "none"}  # groups only some tasks read -> the option that leaves them off


@dataclass(frozen=True)
class Supports:
    """What a task reads and runs, declared by its class (`Task.supports`); `refuse_unsupported` refuses
    everything else in one line, before any data is prepared or any run logged.

    groups: the optional groups it reads (OPTIONAL_GROUPS; any other choice than the off option of a
    group it does not read would be ignored); regimes: the regimes it trains with; ssim_phases: the SSIM
    phases it runs (none: it does not read the ssim group) and ssim_regimes the regime they need;
    ddp_regimes: the regimes it trains data-parallel (trainer=ddp; None: it runs in one process only,
    and never with an SSIM phase); resume: whether a stopped job continues from its checkpoints.
    Every task reads text_encoder: encoded text fields are model inputs whatever the study."""

    groups: tuple[str, ...] = ()
    regimes: RegimeRule = field(default_factory=dict)
    ssim_phases: tuple[str, ...] = ()
    ssim_regimes: RegimeRule = field(default_factory=dict)
    ddp_regimes: RegimeRule | None = None
    resume: bool = True


class Task(Protocol):
    """A study: runs on a job and returns the metrics of its selected model(s)."""

    supports: ClassVar[Supports]

    def run(self, job: Job) -> Outcome:
        """Train and evaluate; return the selected model(s)' validation and test metrics."""


def refuse_unsupported(
    task: str,
    supports: Supports,
    choices: Mapping[str, str],
    regime: Regime,
    ssim_phase: str,
    ddp: bool,
    resume: bool,
    regime_options: Mapping[str, Regime] | None = None,
) -> None:
    """One line (UserError) for the first thing of the job that task `task` (its option name) does not
    read or run: a group it does not read set away from its off option, a regime, an SSIM phase,
    trainer=ddp or resume. `regime_options` (conf/regime's options by name) name the regimes that would do."""
    for group, off in OPTIONAL_GROUPS.items():
        chosen = choices.get(group, off)
        if group not in supports.groups and chosen != off:
            raise UserError(
                f"task={task} does not read the {group} group: {group}={chosen} would be ignored; "
                f"drop {group}={chosen} (or choose a task that reads it)"
            )
    _check_regime(f"task={task}", supports.regimes, regime, regime_options)
    if ssim_phase != "disabled":
        if ssim_phase not in supports.ssim_phases:
            raise UserError(
                f"task={task} runs no SSIM phase: ssim={ssim_phase} would be ignored; drop it (ssim=disabled)"
            )
        _check_regime(f"ssim={ssim_phase}", supports.ssim_regimes, regime, regime_options)
    if ddp:
        refused = "trainer=ddp does not support {}; run it without trainer=ddp"
        if supports.ddp_regimes is None:
            raise UserError(refused.format(f"task={task} (it runs in one process)"))
        if ssim_phase != "disabled":
            raise UserError(refused.format(f"ssim={ssim_phase} (SSIM phases run in one process: ssim=disabled)"))
        if resume:
            raise UserError(refused.format("resume (start the job again)"))
        _check_regime("trainer=ddp", supports.ddp_regimes, regime, regime_options)
    if resume and not supports.resume:
        raise UserError(f"task={task} cannot resume a stopped job: start it again")


def _check_regime(who: str, rule: RegimeRule, regime: Regime, options: Mapping[str, Regime] | None) -> None:
    """UserError when `regime` breaks `rule`: names the regime, the key, what is needed and the regimes that fit.
    The rule's `training` is the regime class's procedure (Regime.training), the other keys its options."""
    broken = [(key, getattr(regime, key)) for key, allowed in rule.items() if getattr(regime, key) not in allowed]
    if not broken:
        return
    key, value = broken[0]
    needs = ", ".join(_described(k, "|".join(v)) for k, v in rule.items())
    fitting = [
        name for name, option in (options or {}).items() if all(getattr(option, k) in v for k, v in rule.items())
    ]
    fix = " or ".join(f"regime={name}" for name in fitting) or "a regime that has them"
    raise UserError(
        f"{who} does not support regime={regime.name} ({_described(key, value)}; it needs {needs}): use {fix}"
    )


def _described(key: str, value: str) -> str:
    """A regime's attribute in words: `regime.share=own`, or `joint training` for its procedure."""
    return f"{value} training" if key == "training" else f"regime.{key}={value}"
