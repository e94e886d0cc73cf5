"""Schemas of the models (the backbone group), and the one place of their defaults.

Each dataclass holds its model's `_target_` and the default of every hyper-parameter;
conf/backbone/<name>.yaml is `defaults: [/schema_backbone_<name>@_here_, _self_]` plus comments
(reference values from the papers), and the model classes take these keys as keyword arguments
without defaults. `feature_map`, `num_towers` and `scenario_feature` are given at build time
(ssimctr.tasks.base.build_model).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf


@dataclass
class ModelConfig:
    _target_: str = MISSING
    embedding_dim: int = 16


@dataclass
class DNNConfig(ModelConfig):
    _target_: str = "ssimctr.models.backbones.dnn.DNN"
    hidden: list[int] = field(default_factory=lambda: [256, 128, 64])
    dropout: float = 0.0
    batch_norm: bool = False


@dataclass
class DeepFMConfig(DNNConfig):
    _target_: str = "ssimctr.models.backbones.deepfm.DeepFM"
    first_order: bool = False


@dataclass
class DCNConfig(DNNConfig):
    _target_: str = "ssimctr.models.backbones.dcn.DCN"
    cross_layers: int = 3


@dataclass
class DCNv2Config(DCNConfig):
    _target_: str = "ssimctr.models.backbones.dcnv2.DCNv2"
    structure: str = "parallel"  # parallel (cross ∥ MLP) | stacked (cross -> MLP)
    rank: int | None = None  # null: full-rank W_l; r: low-rank U_l V_lᵀ


@dataclass
class SharedBottomConfig(ModelConfig):
    _target_: str = "ssimctr.models.msr.shared_bottom.SharedBottom"
    bottom: list[int] = field(default_factory=lambda: [256])
    tower: list[int] = field(default_factory=lambda: [128, 64])
    dropout: float = 0.0
    batch_norm: bool = False


@dataclass
class GatedExpertsConfig(ModelConfig):
    """What MMoE and PLE share: expert and tower sizes, gate bias, dropout, batch norm."""

    expert: list[int] = field(default_factory=lambda: [256, 128])
    tower: list[int] = field(default_factory=lambda: [64])
    gate_bias: bool = False
    dropout: float = 0.0
    batch_norm: bool = False


@dataclass
class MMoEConfig(GatedExpertsConfig):
    _target_: str = "ssimctr.models.msr.mmoe.MMoE"
    num_experts: int = 4


@dataclass
class PLEConfig(GatedExpertsConfig):
    _target_: str = "ssimctr.models.msr.ple.PLE"
    num_levels: int = 1
    specific_experts: int = 2
    shared_experts: int = 1


@dataclass
class HMoEConfig(ModelConfig):
    _target_: str = "ssimctr.models.msr.hmoe.HMoE"
    bottom: list[int] = field(default_factory=lambda: [128])
    num_experts: int = 8
    expert: list[int] = field(default_factory=lambda: [64])
    tower: list[int] = field(default_factory=lambda: [32])
    dropout: float = 0.0
    batch_norm: bool = False


@dataclass
class StarConfig(ModelConfig):
    _target_: str = "ssimctr.models.msr.star.STAR"
    hidden: list[int] = field(default_factory=lambda: [128, 64, 32])
    aux_hidden: list[int] = field(default_factory=lambda: [16])
    dropout: float = 0.0
    partition_init: str = "ones"  # ones (W ⊙ W_k starts as W) | like_shared (W_k drawn like W, as the reference)


@dataclass
class DFFMConfig(ModelConfig):
    _target_: str = "ssimctr.models.msr.dffm.DFFM"
    hidden: list[int] = field(default_factory=lambda: [256, 128, 64])
    interaction_hidden: int = 32  # hidden units of each generated field-pair MLP
    dropout: float = 0.0


@dataclass
class PEPNetConfig(ModelConfig):
    _target_: str = "ssimctr.models.msr.pepnet.PEPNet"
    hidden: list[int] = field(default_factory=lambda: [256, 128, 64])
    gate_hidden: int = 64
    gate_scale: float = 2.0  # γ in δ = γ·sigmoid(...)
    dropout: float = 0.0


@dataclass
class M2MConfig(ModelConfig):
    _target_: str = "ssimctr.models.msr.m2m.M2M"
    num_experts: int = 4
    expert_hidden: list[int] = field(default_factory=lambda: [256, 64])
    scenario_dim: int = 32  # width of the scenario knowledge representation S
    attention_dim: int = 32
    meta_layers: int = 2
    dropout: float = 0.0


MODEL_SCHEMAS: dict[str, type] = {
    "dnn": DNNConfig,
    "deepfm": DeepFMConfig,
    "dcn": DCNConfig,
    "dcnv2": DCNv2Config,
    "shared_bottom": SharedBottomConfig,
    "mmoe": MMoEConfig,
    "ple": PLEConfig,
    "hmoe": HMoEConfig,
    "star": StarConfig,
    "dffm": DFFMConfig,
    "pepnet": PEPNetConfig,
    "m2m": M2MConfig,
}


def backbone_config(model: Any) -> DictConfig:
    """A model config that does not come from conf/backbone (e.g. `ssim.search_backbone`), completed
    with the defaults of the schema its `_target_` names and checked against it; a `_target_` that
    no schema names is returned as given."""
    node = OmegaConf.create(model)
    schema = next((s for s in MODEL_SCHEMAS.values() if s._target_ == node.get("_target_")), None)
    return node if schema is None else OmegaConf.merge(OmegaConf.structured(schema), node)
