"""Schemas of the cold-start task (`task=cold_start`) and of its methods (the `coldstart` group).

Every method's defaults live here once; conf/coldstart/<name>.yaml holds its comments. The
reference defaults and the equations are in docs/methods.md §3.8.
"""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING


@dataclass
class ColdStartTaskConfig:
    """task=cold_start: which entity is cold, how cold entities are chosen, how many shots."""

    _target_: str = "ssimctr.tasks.cold_start.ColdStartTask"
    entity: str = "user"  # user | item (needs dataset.user / dataset.item)
    holdout: float | None = None  # null: cold = no train row (time split); f: a seeded fraction of entities held out
    holdout_seed: int = 2020  # which entities are held out (independent of the training seed)
    shots: int = 0  # 0: zero-shot; K: each cold entity's first K rows (in time) adapt, the rest evaluate
    meta_shots: int = 5  # support rows of the warm entities' meta-training tasks


@dataclass
class ColdStartMethodConfig:
    _target_: str = MISSING


@dataclass
class PlainConfig(ColdStartMethodConfig):
    _target_: str = "ssimctr.coldstart.plain.PlainModel"


@dataclass
class DropoutNetConfig(ColdStartMethodConfig):
    """Volkovs et al., NeurIPS 2017, for CTR: the id is replaced by the 'missing' (OOV) vector."""

    _target_: str = "ssimctr.coldstart.dropoutnet.DropoutNet"
    tau: float = 0.5  # share of training rows whose entity id is dropped


@dataclass
class MetaLearningConfig(ColdStartMethodConfig):
    """What MAML and MeLU share: per-entity tasks, inner steps on the support set, outer step on the query set."""

    inner_lr: float = 1e-3  # α; MeLU's paper uses 5e-6 for rating regression
    meta_lr: float = 1e-3  # β; MeLU's paper uses 5e-5
    inner_steps: int = 1
    first_order: bool = False  # first-order MAML: no second derivatives through the inner step
    tasks_per_batch: int = 32
    query_rows: int = 16  # query rows sampled per task and meta-batch (fixed, so tasks run batched)
    meta_epochs: int = 1  # passes over the meta tasks after the base training


@dataclass
class MamlConfig(MetaLearningConfig):
    _target_: str = "ssimctr.coldstart.maml.Maml"


@dataclass
class MeluConfig(MetaLearningConfig):
    _target_: str = "ssimctr.coldstart.maml.Melu"


@dataclass
class MetaEmbConfig(ColdStartMethodConfig):
    """Pan et al., SIGIR 2019: a generator of cold ids' embeddings from their other features."""

    _target_: str = "ssimctr.coldstart.metaemb.MetaEmb"
    alpha: float = 0.1  # weight of the cold loss L_a against the warm loss L_b
    cold_lr: float = 1e-3  # η: the step on the generated embedding (and the few-shot warm-up step)
    generator_lr: float = 1e-3
    generator_hidden: int = 64
    tasks_per_batch: int = 200
    meta_epochs: int = 1
    warmup_steps: int = 1  # few-shot: gradient steps of each cold embedding on its support rows


COLDSTART_SCHEMAS: dict[str, type] = {
    "none": PlainConfig,
    "dropoutnet": DropoutNetConfig,
    "maml": MamlConfig,
    "melu": MeluConfig,
    "metaemb": MetaEmbConfig,
}
