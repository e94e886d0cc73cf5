"""Schemas of the backbone group (conf/backbone/<name>.yaml: `defaults: [schema_<name>, _self_]`).

Every backbone takes `feature_map`, `num_towers` and `scenario_feature` at build time
(ssimctr.models.build); the keys here are its hyper-parameters.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING


@dataclass
class BackboneConfig:
    _target_: str = MISSING
    embedding_dim: int = 16


@dataclass
class DNNConfig(BackboneConfig):
    hidden: list[int] = field(default_factory=lambda: [256, 128, 64])
    dropout: float = 0.0
    batch_norm: bool = False


@dataclass
class DeepFMConfig(DNNConfig):
    first_order: bool = False


@dataclass
class DCNConfig(DNNConfig):
    cross_layers: int = 3


@dataclass
class DCNv2Config(DCNConfig):
    structure: str = "parallel"
    rank: int | None = None


BACKBONE_SCHEMAS: dict[str, type] = {"dnn": DNNConfig, "deepfm": DeepFMConfig,
                                     "dcn": DCNConfig, "dcnv2": DCNv2Config}
