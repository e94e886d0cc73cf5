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


BACKBONE_SCHEMAS: dict[str, type] = {"schema_dnn": DNNConfig}
