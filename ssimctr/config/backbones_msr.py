"""Schemas of the multi-scenario models in the backbone group (see ssimctr.config.backbones)."""
from __future__ import annotations

from dataclasses import dataclass, field

from ssimctr.config.backbones import BackboneConfig

MSR_SCHEMAS: dict[str, type] = {}


# --- Shared-Bottom, MMoE, PLE, HMoE (methods.md §3.4, §3.6) ---
@dataclass
class SharedBottomConfig(BackboneConfig):
    bottom: list[int] = field(default_factory=lambda: [256])
    tower: list[int] = field(default_factory=lambda: [128, 64])
    dropout: float = 0.0
    batch_norm: bool = False


@dataclass
class GatedExpertsConfig(BackboneConfig):
    """What MMoE and PLE share: expert and tower sizes, gate bias, dropout, batch norm."""

    expert: list[int] = field(default_factory=lambda: [256, 128])
    tower: list[int] = field(default_factory=lambda: [64])
    gate_bias: bool = False
    dropout: float = 0.0
    batch_norm: bool = False


@dataclass
class MMoEConfig(GatedExpertsConfig):
    num_experts: int = 4


@dataclass
class PLEConfig(GatedExpertsConfig):
    num_levels: int = 1
    specific_experts: int = 2
    shared_experts: int = 1


@dataclass
class HMoEConfig(BackboneConfig):
    bottom: list[int] = field(default_factory=lambda: [128])
    num_experts: int = 8
    expert: list[int] = field(default_factory=lambda: [64])
    tower: list[int] = field(default_factory=lambda: [32])
    dropout: float = 0.0
    batch_norm: bool = False


MSR_SCHEMAS.update(shared_bottom=SharedBottomConfig, mmoe=MMoEConfig, ple=PLEConfig,
                   hmoe=HMoEConfig)
# --- end Shared-Bottom, MMoE, PLE, HMoE ---


# --- STAR, DFFM, PEPNet, M2M (methods.md §3.5, §3.7; PEPNet and M2M from their papers) ---
@dataclass
class StarConfig(BackboneConfig):
    hidden: list[int] = field(default_factory=lambda: [128, 64, 32])
    aux_hidden: list[int] = field(default_factory=lambda: [16])
    dropout: float = 0.0


@dataclass
class DFFMConfig(BackboneConfig):
    hidden: list[int] = field(default_factory=lambda: [256, 128, 64])
    interaction_hidden: int = 32
    dropout: float = 0.0


@dataclass
class PEPNetConfig(BackboneConfig):
    hidden: list[int] = field(default_factory=lambda: [256, 128, 64])
    gate_hidden: int = 64
    gate_scale: float = 2.0
    dropout: float = 0.0


@dataclass
class M2MConfig(BackboneConfig):
    num_experts: int = 4
    expert_hidden: list[int] = field(default_factory=lambda: [256, 64])
    scenario_dim: int = 32
    attention_dim: int = 32
    meta_layers: int = 2
    dropout: float = 0.0


MSR_SCHEMAS.update(star=StarConfig, dffm=DFFMConfig, pepnet=PEPNetConfig,
                   m2m=M2MConfig)
# --- end STAR, DFFM, PEPNet, M2M ---
