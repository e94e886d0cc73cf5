"""Schemas of the cold-start task (`task=cold_start`) and of its methods (the `coldstart` group).

Every method's defaults live here once; conf/coldstart/<name>.yaml holds its comments. The
reference defaults and the equations are in docs/methods.md §3.8.
"""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING


@dataclass
class ColdStartTaskConfig:
    """task=cold_start: which entity is cold, how cold entities are chosen, how many shots and rounds."""

    _target_: str = "ssimctr.tasks.cold_start.ColdStartTask"
    entity: str = "user"  # user | item (needs dataset.user / dataset.item)
    holdout: float | None = None  # null: cold = no train row (time split); f: a seeded fraction of entities held out
    holdout_seed: int = 2020  # which entities are held out (independent of the training seed)
    shots: int = 0  # 0: zero-shot (cold phase only, every cold row); K: rows per warm-up round
    warmup_rounds: int = 3  # with shots = K: rounds warm-a, warm-b, ... of K rows each; the rest are the query rows
    meta_shots: int = 5  # support rows of the warm entities' meta-training tasks


@dataclass
class ColdStartMethodConfig:
    _target_: str = MISSING


@dataclass
class WarmupConfig(ColdStartMethodConfig):
    """The warm-up rule of the methods that adapt a cold entity's id embedding (ssimctr.coldstart.warmup)."""

    warmup_lr: float = 1e-3  # Adam's learning rate on the cold entities' vectors (the reference code's lr)
    # Adam steps per warm-up round, each on all of the round's rows of the entity: the reference code's one
    # pass over a round's rows in batches of 2048 gives an entity whose rows spread over ~10 batches ~10 steps
    warmup_steps: int = 10


@dataclass
class PlainConfig(WarmupConfig):
    _target_: str = "ssimctr.coldstart.plain.PlainModel"


@dataclass
class DropoutNetConfig(WarmupConfig):
    """Volkovs et al., NeurIPS 2017, for CTR: ids dropped to a 'missing' vector in training."""

    _target_: str = "ssimctr.coldstart.dropoutnet.DropoutNet"
    tau: float = 0.5  # share of training rows whose id is dropped (per dropped field)
    drop: str = "entity"  # entity: the studied side's id | both: the user and the item id (the paper)
    missing: str = "learned"  # learned: the OOV row trains as the missing vector | zeros: fed zeros (the paper)


@dataclass
class MetaLearningConfig(ColdStartMethodConfig):
    """What MAML and MeLU share: per-entity tasks, inner steps on the support set, outer step on the query set."""

    inner_lr: float = 1e-3  # α; MeLU's paper uses 5e-6 for rating regression
    meta_lr: float = 1e-3  # β; MeLU's paper uses 5e-5
    inner_steps: int = 1  # per task and warm-up round
    first_order: bool = False  # first-order MAML: no second derivatives through the inner step
    tasks_per_batch: int = 32
    query_rows: int = 16  # query rows sampled per task and meta-batch (fixed, so tasks run batched)
    meta_epochs: int = 1  # passes over the meta tasks after the base training
    # the validation metric a meta epoch must improve on the base model's to be kept (and its early stopping):
    # the cold entities' val rows, what the method is for; trainer.monitor where the val split has no cold row
    meta_monitor: str = "val/cold/auc/mean"


@dataclass
class MamlConfig(MetaLearningConfig):
    _target_: str = "ssimctr.coldstart.maml.Maml"


@dataclass
class MeluConfig(MetaLearningConfig):
    _target_: str = "ssimctr.coldstart.maml.Melu"


@dataclass
class MetaEmbConfig(WarmupConfig):
    """Pan et al., SIGIR 2019: a generator of cold ids' embeddings from the entity's own attributes."""

    _target_: str = "ssimctr.coldstart.metaemb.MetaEmb"
    alpha: float = 0.1  # weight of the cold loss L_a against the warm loss L_b
    cold_lr: float = 1e-3  # η: the step on the generated embedding inside the meta objective
    generator_lr: float = 1e-3
    generator_hidden: int = 0  # 0: one bias-free dense layer (the authors' code); h: an MLP with one hidden layer
    tasks_per_batch: int = 200
    meta_epochs: int = 1


@dataclass
class CvarConfig(WarmupConfig):
    """Zhao et al., SIGIR 2022: a conditional VAE from id embeddings and attributes to warmed-up id embeddings."""

    _target_: str = "ssimctr.coldstart.cvar.Cvar"
    latent_dim: int = 8  # z (the authors' code: 8 for 16-dimensional embeddings)
    hidden: int = 16  # the width of the encoder's, the prior's and the decoder's hidden layer
    cvar_lr: float = 1e-3
    cvar_epochs: int = 10  # passes over the warm entities (the authors' code: 1 pass over the warm rows)
    tasks_per_batch: int = 256  # warm entities per step
    recon_weight: float = 1.0  # weight of ‖ê − e‖²
    reg_weight: float = 1.0  # weight of the Wasserstein distance between the posterior and the prior


COLDSTART_SCHEMAS: dict[str, type] = {
    "none": PlainConfig,
    "dropoutnet": DropoutNetConfig,
    "maml": MamlConfig,
    "melu": MeluConfig,
    "metaemb": MetaEmbConfig,
    "cvar": CvarConfig,
}
