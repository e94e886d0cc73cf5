"""Structured-config schemas: a misspelt key or a value of the wrong type fails at compose time.

Each YAML option under conf/<group>/ starts with `defaults: [/schema_<group>[_<kind>]@_here_, _self_]`,
so its keys are checked against the dataclass here. `register()` stores every schema in Hydra's
ConfigStore; the CLI calls it before Hydra composes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import II, MISSING

from ssimctr.config.coldstart import COLDSTART_SCHEMAS, ColdStartTaskConfig
from ssimctr.config.datasets import DATASET_SCHEMAS
from ssimctr.config.models import MODEL_SCHEMAS
from ssimctr.config.optim import OPTIM_SCHEMAS, AdamConfig, ConstantLrConfig, LazyAdamConfig
from ssimctr.config.ssim import SSIM_CRITERION_SCHEMAS, SSIM_SELECTION_SCHEMAS
from ssimctr.config.text import TEXT_ENCODER_SCHEMAS
from ssimctr.errors import UserError


@dataclass
class PathsConfig:
    outputs: str = "outputs"
    cache: str = "${paths.outputs}/cache"


SCENARIO_KINDS = ("column", "mapping", "bins", "top_k")
SCENARIO_OPTIONS_OF_KIND = {"mapping": ("mapping",), "bins": ("bins", "names"), "top_k": ("top_k",)}  # default None
SPLIT_KINDS = ("time", "random", "given")


@dataclass
class ScenarioConfig:
    """How rows map to scenarios.

    kind: column (each distinct value is a scenario), mapping (value -> scenario name),
    bins (numeric column cut at `bins`), top_k (k most frequent values, the rest merged or dropped).
    """

    kind: str = MISSING  # column | mapping | bins | top_k
    column: str | None = None
    mapping: Any = None  # {value: name}; typed Any so a CLI dict replaces it
    unmapped: str = "drop"  # mapping only: drop | error
    bins: list[float] | None = None
    names: list[str] | None = None  # bins only: one name per bin (len(bins) + 1)
    top_k: int | None = None
    rest: str = "merge"  # top_k only: merge (into "other") | drop

    def __post_init__(self) -> None:
        """Refuse options that do not fit the kind, before any data is read (the column's values are
        checked when the data is prepared: ssimctr.data.scenarios)."""
        if self.kind == MISSING:
            return
        if self.kind not in SCENARIO_KINDS:
            raise UserError(f"scenario.kind={self.kind} is not known: use one of {', '.join(SCENARIO_KINDS)}")
        for kind, keys in SCENARIO_OPTIONS_OF_KIND.items():  # an option of another kind would be silently ignored
            for key in keys:
                if kind != self.kind and getattr(self, key) is not None:
                    raise UserError(
                        f"scenario.{key} belongs to scenario={kind}, but scenario={self.kind} is chosen: "
                        f"add scenario={kind} to use it, or leave scenario.{key} out"
                    )
        if self.kind == "mapping" and not self.mapping:
            raise UserError("scenario=mapping needs scenario.mapping={value: name, ...}")
        if self.unmapped not in ("drop", "error"):
            raise UserError(f"scenario.unmapped={self.unmapped}: use drop or error")
        if self.kind == "bins":
            bins = list(self.bins or [])
            if not bins or bins != sorted(set(bins)):
                raise UserError(f"scenario.bins must be a non-empty increasing list of edges, got {self.bins}")
            if self.names is not None and len(self.names) != len(bins) + 1:
                raise UserError(
                    f"scenario.names needs len(scenario.bins) + 1 = {len(bins) + 1} names, got {len(self.names)}"
                )
        if self.kind == "top_k" and (not self.top_k or self.top_k < 1):
            raise UserError(f"scenario=top_k needs scenario.top_k >= 1, got {self.top_k}")
        if self.rest not in ("merge", "drop"):
            raise UserError(f"scenario.rest={self.rest}: use merge or drop")


@dataclass
class SplitConfig:
    """time: by the time column (fractions of rows in time order, or cutoffs);
    random: seeded fractions; given: the dataset's own train/val/test files."""

    kind: str = MISSING  # time | random | given
    fractions: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])
    cutoffs: list[str] | None = None  # time only: [val_start, test_start]
    seed: int = 2020

    def __post_init__(self) -> None:
        """Refuse a split no data can have, before any data is read (cutoffs are parsed, and checked
        for order, when the data is prepared: ssimctr.data.split_assignment)."""
        if self.kind != MISSING and self.kind not in SPLIT_KINDS:
            raise UserError(f"split={self.kind} is not known: use one of {', '.join(SPLIT_KINDS)}")
        values = list(self.fractions)
        if len(values) != 3 or any(not f >= 0 for f in values) or abs(sum(values) - 1) > 1e-6 or values[0] == 0:
            raise UserError(
                "split.fractions must be three numbers [train, val, test] >= 0 summing to 1 with train > 0, "
                f"got {values}"
            )
        if self.cutoffs is not None and len(self.cutoffs) != 2:
            raise UserError(f"split.cutoffs needs two values [val_start, test_start], got {list(self.cutoffs)}")


REGIME_CHOICES = {"towers": ("per_scenario", "single"), "share": ("own", "all"), "loss_reduction": ("row", "scenario")}


@dataclass
class RegimeConfig:
    """How a model meets the scenarios. `_target_` names the training procedure, a class of
    ssimctr.train.regimes that subclasses this schema: Joint (one model, all rows), Separate (one
    model per scenario) or Finetune (joint, then a copy per scenario fine-tuned on its rows, at
    finetune_lr). towers: per_scenario (K towers) | single; share: own (each row trains
    its own tower) | all (every row trains every tower); scenario_feature: scenario id as an input
    field; loss_reduction: row (mean over the batch's rows) | scenario (sum over scenarios of each
    tower's mean loss, the official STAR/HMoE form; ssimctr.train.sharing)."""

    _target_: str = MISSING
    name: str = MISSING
    towers: str = MISSING
    share: str = MISSING
    scenario_feature: bool = True
    finetune_lr: float | None = None  # regime=finetune only: the fine-tuning stage's (null: trainer.optimizer.lr)
    loss_reduction: str = "row"

    def __post_init__(self) -> None:
        """Refuse a value no regime knows (checked when the regime is built, before it trains; the
        regime's class refuses finetune_lr unless it fine-tunes)."""
        for key, allowed in REGIME_CHOICES.items():
            value = getattr(self, key)
            if value != MISSING and value not in allowed:
                raise UserError(f"regime.{key}={value} is not known: use one of {', '.join(allowed)}")
        if self.finetune_lr is not None and not self.finetune_lr >= 0:
            raise UserError(
                f"regime.finetune_lr={self.finetune_lr}: must be 0 or positive (null: trainer.optimizer.lr)"
            )


@dataclass
class TaskConfig:
    """The study a job runs: `_target_` names the task class (ssimctr.tasks), the rest are its options."""

    _target_: str = MISSING


SSIM_PHASES = ("disabled", "search", "retrain", "pipeline")
SSIM_CHOICES = {"heads": ("per_scenario", "shared")}


@dataclass
class SsimConfig:
    """SSIM (docs/methods.md §1). Defaults are the official code's AliCCP values; see
    conf/preset/ssim_*.yaml for both reference presets."""

    phase: str = MISSING  # disabled | search | retrain | pipeline (search, then retrain)
    epsilon: float = 0.55  # search: g = 1 where sigmoid(τ m) > ε
    lambda_kl: float = 0.4  # weight of e·(1 − mean g); 0 = SSIM-NK
    final_temperature: float = 1000.0  # τ goes 1 -> final over the search steps
    search_epochs: int = 1
    selector_hidden: list[int] | None = None  # null: the backbone's tower sizes (reference presets: [1024, 512, 256])
    selector_lr: float = 1e-5
    selector_dropout: float = 0.0
    heads: str = "per_scenario"  # per_scenario | shared (SSIM-ND)
    ratio: float = 0.95  # r: share of rows selected as shared
    # search: what trains the selector, the group ssim/criterion: hard (SSIM) | soft (SSIM-P) | excess
    criterion: Any = MISSING
    # retrain: which rows are shared, the group ssim/selection: batch_topk (top r of each batch, SSIM) |
    # global (saved top r) | soft (SSIM-P) | random (SSIM-R) | planted (the planted truth column)
    selection: Any = MISSING
    retrain_dropout: float | None = None  # retrain (also in pipeline): backbone.dropout override (AliMama: 0.3)
    search_backbone: Any = None  # pipeline: the backbone config to search with (null = the job's)
    reuse_search: bool = True  # pipeline: retrain on a finished search of the same key (ssimctr/ssim/cache.py)
    from_run: str | None = None  # retrain: MLflow run id of a search run
    from_path: str | None = None  # retrain: or its ssim/ artifact folder on disk
    log_every: int = 10  # search: steps between gate statistics

    def __post_init__(self) -> None:
        """Refuse values no SSIM phase can run with (checked when the runner reads the config, before
        any data is prepared or any run is logged)."""
        if self.phase != MISSING and self.phase not in SSIM_PHASES:
            raise UserError(f"ssim.phase={self.phase} is not known: use one of {', '.join(SSIM_PHASES)}")
        for key, allowed in SSIM_CHOICES.items():
            if getattr(self, key) not in allowed:
                raise UserError(f"ssim.{key}={getattr(self, key)} is not known: use one of {', '.join(allowed)}")
        ranges = {  # key: (holds, the range in words)
            "ratio": (0.0 <= self.ratio <= 1.0, "must be in [0, 1] (the share of rows selected as shared)"),
            "epsilon": (0.0 < self.epsilon < 1.0, "must be in (0, 1) (the gate's threshold on sigmoid(τ m))"),
            "lambda_kl": (self.lambda_kl >= 0.0, "must be 0 or positive (0 = no KL term, SSIM-NK)"),
            "final_temperature": (self.final_temperature > 0.0, "must be positive (e.g. ssim.final_temperature=1000)"),
            "search_epochs": (self.search_epochs >= 1, "must be at least 1"),
            "selector_lr": (self.selector_lr >= 0.0, "must be 0 or positive (e.g. ssim.selector_lr=1e-5)"),
            "selector_dropout": (0.0 <= self.selector_dropout < 1.0, "must be in [0, 1)"),
            "retrain_dropout": (self.retrain_dropout is None or 0.0 <= self.retrain_dropout < 1.0, "must be in [0, 1)"),
            "log_every": (self.log_every >= 1, "must be at least 1"),
            "selector_hidden": (
                self.selector_hidden is None or all(size >= 1 for size in self.selector_hidden),
                "must be layer sizes of at least 1 (or null: the backbone's tower sizes)",
            ),
        }
        for key, (holds, rule) in ranges.items():
            if not holds:
                raise UserError(f"ssim.{key}={getattr(self, key)}: {rule}")
        if self.from_run and self.from_path:
            raise UserError("set one of ssim.from_run and ssim.from_path, not both")
        for key, options in (("criterion", SSIM_CRITERION_SCHEMAS), ("selection", SSIM_SELECTION_SCHEMAS)):
            value = getattr(self, key)
            if isinstance(value, str) and value != MISSING:  # a value where a group's option belongs
                raise UserError(f"ssim.{key}={value}: choose it with ssim/{key}=<{' | '.join(options)}>")


@dataclass
class TrainerConfig:
    """How models are trained and evaluated; every regime, task and SSIM phase reads it as is."""

    epochs: int = 10
    batch_size: int = 2048
    eval_batch_size: int = 16384
    # the nested groups (conf/trainer/<group>/; schemas and defaults: ssimctr.config.optim): the dense
    # weights' torch optimizer, the id tables' row rule, the schedule over epochs, the regularizers. A
    # TrainerConfig made in code without them trains plainly: Adam, lazy Adam rows, a constant rate and
    # no regularizer (the schemas' defaults); conf/trainer/default.yaml chooses the experiments' defaults.
    optimizer: Any = None  # trainer/optimizer: adam
    embedding_optimizer: Any = None  # trainer/embedding_optimizer: sparse_adam | rowwise_adagrad | adam
    lr_schedule: Any = None  # trainer/lr_schedule: plateau | constant
    regularizer: dict[str, Any] = field(default_factory=dict)  # trainer/regularizer: [embedding_l2, id_dropout]
    # fp32 | bf16: the training forward and loss under torch.autocast(bfloat16) (the backward follows it;
    # weights, optimizer and evaluation stay float32). Faster where the CPU has bf16 instructions
    # (AVX512-BF16, AMX) or on a GPU; docs/methods.md §3.11 has the measured speed and AUC.
    precision: str = "fp32"
    patience: int = 2
    monitor: str = "val/auc/mean"
    monitor_mode: str = "max"  # max | min
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int | None = None  # torch intra-op threads; null = torch's default
    limit_train_batches: int | None = None
    progress: bool = True
    in_memory: bool | None = None  # false: stream every split from its parquet shards; null: auto
    checkpoints: bool = True  # each epoch to <run folder>/checkpoints/ (ssimctr resume=...); false: none
    stream_above_rows: int = 50_000_000  # auto: stream a split that has more rows
    stream_buffer_rows: int = 1_000_000  # streaming: rows shuffled together
    seed: int = II("seed")  # shuffling and random selections: the job's seed
    distributed: str = "none"  # none | ddp: data-parallel over torchrun's processes (conf/trainer/ddp.yaml)

    def __post_init__(self) -> None:
        """Refuse values no training can run with (checked when the runner reads the config, before
        any data is prepared or any run is logged)."""
        for key in ("epochs", "batch_size", "eval_batch_size", "patience"):
            if getattr(self, key) < 1:
                raise UserError(f"trainer.{key}={getattr(self, key)}: must be at least 1")
        self.optimizer = AdamConfig() if self.optimizer is None else self.optimizer
        self.embedding_optimizer = LazyAdamConfig() if self.embedding_optimizer is None else self.embedding_optimizer
        self.lr_schedule = ConstantLrConfig() if self.lr_schedule is None else self.lr_schedule
        if self.precision not in ("fp32", "bf16"):
            raise UserError(f"trainer.precision={self.precision}: use fp32 or bf16")
        if self.distributed not in ("none", "ddp"):
            raise UserError(f"trainer.distributed={self.distributed}: use none or ddp (trainer=ddp, under torchrun)")


@dataclass
class TrackingConfig:
    """`_target_` names the tracker class (conf/tracking/<name>.yaml: ssimctr.tracking.mlflow_tracker.MlflowTracker
    or ssimctr.tracking.base.NullTracker), built with the other keys: the MLflow store and experiment the
    job's run logs to (the NullTracker, which records nothing, takes and ignores them)."""

    _target_: str = MISSING
    uri: str = "sqlite:///outputs/mlflow.db"
    experiment: str = "ssimctr"
    artifact_location: str | None = None
    run_name: str | None = None
    log_model: bool = True  # the selected model as an MLflow logged model (ssimctr-predict / ssimctr-evaluate read it)


@dataclass
class Config:
    seed: int = 2022
    optimized_metric: str = "val/auc/mean"
    resume: str | None = None  # a stopped run's folder or MLflow run id: continue it from its checkpoints
    paths: PathsConfig = field(default_factory=PathsConfig)
    dataset: Any = MISSING
    scenario: ScenarioConfig = field(default_factory=ScenarioConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    backbone: Any = MISSING
    regime: RegimeConfig = field(default_factory=RegimeConfig)
    task: Any = MISSING
    coldstart: Any = MISSING
    text_encoder: Any = MISSING
    ssim: SsimConfig = field(default_factory=SsimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


SCHEMAS: dict[str, dict[str, type]] = {
    "dataset": DATASET_SCHEMAS,
    "scenario": {"": ScenarioConfig},
    "split": {"": SplitConfig},
    "backbone": MODEL_SCHEMAS,
    "regime": {"": RegimeConfig},
    "task": {"": TaskConfig, "cold_start": ColdStartTaskConfig},
    "coldstart": COLDSTART_SCHEMAS,
    "text_encoder": TEXT_ENCODER_SCHEMAS,
    "ssim": {"": SsimConfig},
    "ssim_criterion": SSIM_CRITERION_SCHEMAS,  # the groups ssim/criterion and ssim/selection
    "ssim_selection": SSIM_SELECTION_SCHEMAS,
    "trainer": {"": TrainerConfig},
    **OPTIM_SCHEMAS,
    "tracking": {"": TrackingConfig},
}


def schema_name(group: str, kind: str = "") -> str:
    """The ConfigStore name of a group's schema: `schema_<group>` or `schema_<group>_<kind>`.

    Schemas are stored at the root, not inside their group, so they are not options of the group:
    `ssimctr --help` and Hydra's "did you mean" lists show only the YAML options. A YAML option
    names its schema first in its defaults list: `- /schema_backbone_dnn@_here_`.
    """
    return f"schema_{group}_{kind}" if kind else f"schema_{group}"


def register() -> None:
    """Store the top-level schema and every group schema in Hydra's ConfigStore."""
    store = ConfigStore.instance()
    store.store(name="schema_config", node=Config)
    for group, schemas in SCHEMAS.items():
        for kind, node in schemas.items():
            store.store(name=schema_name(group, kind), node=node)
