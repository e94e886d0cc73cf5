"""One job: compose -> seed -> prepare -> task.run -> log -> print."""

from __future__ import annotations

import dataclasses
import logging
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from ssimctr.cli.config_errors import missing_values, unknown_key, unknown_keys
from ssimctr.cli.console import describe_data, print_results, results_rows, split_summary, write_results_csv
from ssimctr.cli.resume import RESULT_FREE
from ssimctr.config.coldstart import COLDSTART_SCHEMAS
from ssimctr.config.schema import SCHEMAS, TrainerConfig
from ssimctr.data.datasplit import DataSplit, open_split
from ssimctr.data.prepare import PreparedDataset, prepare
from ssimctr.data.sources.base import SPLITS
from ssimctr.errors import UserError
from ssimctr.tasks.base import DataRecipe, Job, ModelFactory, Task, refuse_unsupported
from ssimctr.tasks.outcome import Outcome
from ssimctr.text.build import with_encoded_fields
from ssimctr.tracking import NullTracker, Tracker, flatten_params, make_tracker, parent_run_id_from_env
from ssimctr.tracking.base import sweep_common_overrides_from_env
from ssimctr.train import distributed
from ssimctr.train.checkpoint import Checkpointer, checkpointing, read_run, resumable
from ssimctr.train.regimes import Regime, Splits
from ssimctr.utils.instantiate import factory, instantiate
from ssimctr.utils.lazy import LazyMapping
from ssimctr.utils.seed import configure_torch, resolve_device, seed_everything

logger = logging.getLogger(__name__)  # Hydra's job log, <run dir>/main.log: the key lines of the console

PACKAGE = Path(__file__).resolve().parents[1]
# conf/: shipped inside an installed wheel as ssimctr/conf (setup.py), else beside the package (the source tree,
# an editable install)
CONFIG_DIR = str(PACKAGE / "conf" if (PACKAGE / "conf").is_dir() else PACKAGE.parent / "conf")
CHECKED_GROUPS = ("dataset", "scenario", "split", "ssim")  # besides trainer: schemas that check their values
PARTS = "_parts/"  # conf/_parts/: groups that experiments and presets choose (table rows, reference sizes)


@dataclass
class JobInfo:
    """What Hydra knows about the job: chosen option per group, overrides, output folder."""

    choices: dict[str, str] = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)
    output_dir: Path = Path("outputs/runs/unnamed")


def run(
    cfg: DictConfig, info: JobInfo, console: Console | None = None, resume: bool = False, rerun: bool = False
) -> dict[str, float]:
    """Run one job in its own tracked run; return its results (val/* of the selected model, test/*).
        Every check of the config comes first (`check_job`), then the data is prepared: a mistake in either
        is one line (UserError) before any run is logged. Each training checkpoints into
        `<output_dir>/checkpoints/` (dropped when the run finishes); `resume`: continue the stopped job of
        `info.output_dir` from its checkpoints, in its run; `rerun`: run a job that stopped before its first
    checkpoint again from the start, in its run (a resumed multirun's). trainer=ddp (under torchrun): every rank trains
        and evaluates; rank 0 alone tracks, writes and prints."""
    console = console or Console()
    settings, task = check_job(cfg, info.choices, resume)
    if settings.distributed == "ddp":
        device = distributed.init(resolve_device(settings.device))
        settings = dataclasses.replace(settings, device=str(device))
        if not distributed.is_main():  # no run, no files, nothing printed
            console, settings = Console(quiet=True), dataclasses.replace(settings, progress=False)
    try:
        seed_everything(cfg.seed)
        configure_torch(settings.threads)
        tracking = cfg.tracking  # the store is opened (and checked) first; the run starts once the data is ready
        tracker = make_tracker(tracking) if distributed.is_main() else NullTracker()
        with distributed.main_first():  # rank 0 prepares (and caches) the data, the others then read the cache
            data = with_encoded_fields(_prepare(cfg, console), instantiate(cfg.text_encoder), console)
        return _tracked(cfg, info, settings, console, resume, rerun, task, data, tracker)
    finally:
        distributed.teardown()


def check_job(cfg: DictConfig, choices: dict[str, str], resume: bool = False) -> tuple[TrainerConfig, Task]:
    """Every check of the job's config, before any data is read or any run logged; UserError (one line)
    for the first problem: a mandatory value unset, a key nothing reads, a value out of its range (the
    schemas' __post_init__, the task's constructor), a group, regime, SSIM phase, trainer=ddp or resume
    that the task does not support (its `supports`), a text encoder with no text column to encode.
    Returns the trainer settings and the task."""
    missing = missing_values(cfg)
    if missing is not None:
        raise missing
    added = unknown_keys(cfg)
    if added:
        raise unknown_key(added[0], cfg)
    settings: TrainerConfig = OmegaConf.to_object(cfg.trainer)
    for group in CHECKED_GROUPS:  # their schemas' __post_init__
        OmegaConf.to_object(cfg[group])
    regime: Regime = instantiate(cfg.regime)  # its class, and its values checked by its schema
    task: Task = instantiate(cfg.task)  # its options
    text = OmegaConf.to_object(cfg.text_encoder)
    if text.kind != "none" and not list(cfg.dataset.get("text") or []):
        raise UserError(
            f"text_encoder={choices.get('text_encoder', text.kind)} encodes the columns of dataset.text, but "
            f"dataset={cfg.dataset.name} names none: set dataset.text=[<column>, ...], or text_encoder=none"
        )
    chosen = {"coldstart": _option_of(cfg.coldstart, COLDSTART_SCHEMAS), **choices}
    refuse_unsupported(
        choices.get("task") or _option_of(cfg.task, {k: v for k, v in SCHEMAS["task"].items() if k}),
        type(task).supports,
        chosen,
        regime,
        str(cfg.ssim.phase),
        settings.distributed == "ddp",
        resume,
        regime_options(),
    )
    return settings, task


def _option_of(node: DictConfig, schemas: dict[str, type]) -> str:
    """The option of a `_target_` group whose schema builds `node`'s target (when Hydra's choices are unknown)."""
    target = str(node.get("_target_", ""))
    named = (name for name, schema in schemas.items() if getattr(schema, "_target_", None) == target)
    return next(named, target.rsplit(".", 1)[-1])


def regime_options() -> dict[str, Regime]:
    """conf/regime's options by name, built (to name the regimes that fit in an error)."""
    options = {}
    for path in sorted((Path(CONFIG_DIR) / "regime").glob("*.yaml")):
        values = {key: value for key, value in OmegaConf.load(path).items() if key != "defaults"}
        options[path.stem] = instantiate(OmegaConf.create(values))
    return options


def _tracked(
    cfg: DictConfig,
    info: JobInfo,
    settings: TrainerConfig,
    console: Console,
    resume: bool,
    rerun: bool,
    task: Task,
    data: PreparedDataset,
    tracker: Tracker,
) -> dict[str, float]:
    """The job in its tracked run (rank 0's, under trainer=ddp; the other ranks track nothing)."""
    tracking = cfg.tracking
    if not distributed.is_main():
        return _run(cfg, info, settings, tracker, console, task, data, OmegaConf.to_yaml(cfg, resolve=True))
    checkpointer = Checkpointer(info.output_dir)
    config = OmegaConf.to_yaml(cfg, resolve=True)
    stopped = resumable(info.output_dir) if resume else read_run(info.output_dir) if rerun else {}
    checkpointer.begin(fresh=not resume, config=config, choices=info.choices, overrides=info.overrides)
    if stopped.get("run_id"):  # the stopped job's run, RUNNING again
        tracker.resume(stopped["run_id"])
    elif resume:
        tracker.resume(None)  # refused unless tracking=none
    else:
        tracker.start(
            run_name=_run_name(cfg.seed, info),  # unless tracking.run_name names it
            tags=_tags(cfg, info),
            parent_run_id=parent_run_id_from_env(),
        )
    checkpointer.record(
        run_id=tracker.run_id,
        tracking_uri=tracking.uri if tracker.run_id else None,
        parent_run_id=parent_run_id_from_env(),
    )
    try:
        with checkpointing(checkpointer if settings.checkpoints else None):
            if stopped.get("run_id"):  # params are logged once: a resume's own RESULT_FREE values go to a tag
                tracker.set_tags({"ssimctr.resumed_with": _result_free(cfg)})
            results = _run(cfg, info, settings, tracker, console, task, data, config, reopened=bool(stopped))
    except KeyboardInterrupt as stop:
        stop.checkpoint = checkpointer.newest() if settings.checkpoints else "off"  # the CLI's line names it
        tracker.end("KILLED", str(stop) or "interrupted")
        raise
    except UserError as error:
        tracker.end("FAILED", str(error))
        raise
    except Exception as error:
        tracker.end("FAILED", f"{type(error).__name__}: {error}")
        raise
    tracker.end("FINISHED")
    checkpointer.finish(optimized_metric=results.get(cfg.optimized_metric))
    return results


def _run(
    cfg: DictConfig,
    info: JobInfo,
    settings: TrainerConfig,
    tracker: Tracker,
    console: Console,
    task: Task,
    data: PreparedDataset,
    config: str,
    reopened: bool = False,
) -> dict[str, float]:
    device = resolve_device(settings.device)
    folder = info.output_dir
    main = distributed.is_main()
    if main:
        folder.mkdir(parents=True, exist_ok=True)
        _log_config(cfg, tracker, folder, config, reopened)
    where = f"MLflow run {tracker.run_id} in {cfg.tracking.uri}" if tracker.run_id else "tracking=none"
    logger.info("%s; outputs in %s; overrides: %s", where, folder, " ".join(info.overrides) or "none")
    tracker.log_artifact(data.path / "feature_map.json")
    tracker.log_artifact(data.path / "manifest.json")
    job = Job(
        data=data,
        splits=_open_splits(settings, data, device),
        models=ModelFactory(cfg.backbone, data.feature_map, device),
        settings=settings,
        regime=instantiate(cfg.regime),
        ssim=OmegaConf.to_object(cfg.ssim),
        coldstart=factory(cfg.coldstart),
        recipe=DataRecipe(
            *(OmegaConf.to_object(cfg[group]) for group in ("dataset", "scenario", "split")),
            Path(cfg.paths.cache),
            instantiate(cfg.text_encoder),
        ),
        seed=cfg.seed,
        tracker=tracker,
        folder=folder,
        console=console,
    )
    outcome = task.run(job)

    results = outcome.summary()
    if not main:
        return results
    tracker.log_metrics({k: v for k, v in results.items() if not (outcome.val_logged and k.startswith("val/"))})
    _log_model(cfg, outcome, data, tracker, folder, console)
    summaries = outcome.summaries or {"test": split_summary(data.manifest, data.feature_map.scenario_names, "test")}
    tables = {split: results_rows(results, summary, split=split) for split, summary in summaries.items()}
    for split, rows in tables.items():  # test_results.csv, test_warm_results.csv, ...
        csv_path = folder / f"{split.replace('/', '_')}_results.csv"
        write_results_csv(csv_path, rows)
        tracker.log_artifact(csv_path)
    if (folder / ".hydra").is_dir():  # Hydra's config.yaml, hydra.yaml, overrides.yaml as hydra/*, not hydra/.hydra/*
        for path in sorted((folder / ".hydra").iterdir()):
            if path.is_file():
                tracker.log_artifact(path, "hydra")
    footer = f"MLflow run {tracker.run_id} in {cfg.tracking.uri}" if tracker.run_id else "tracking=none"
    for split, rows in tables.items():
        print_results(
            console,
            rows,
            title=f"{split}: {outcome.description}; {outcome.best_epochs}",
            footer=footer if split == list(tables)[-1] else None,
        )
    if outcome.next_step:
        console.print(outcome.next_step, markup=False, soft_wrap=True)
    return results


def _log_model(
    cfg: DictConfig, outcome: Outcome, data: PreparedDataset, tracker: Tracker, folder: Path, console: Console
) -> None:
    """The selected model as the run's logged model `model` (tracking.log_model), with what scores new
    rows: config.yaml, feature_map.json and the vocabularies (ssimctr.serving)."""
    if not tracker.run_id:
        return
    if outcome.model is None:
        task = str(cfg.task._target_).rsplit(".", 1)[-1]
        console.print(f"no model logged: {task} keeps no model that scores rows alone (tracking.log_model)")
        return
    started = time.perf_counter()
    files = [folder / "config.yaml", data.path / "feature_map.json", data.path / "vocab"]
    model_id = tracker.log_model(outcome.model, files, name="model")
    seconds = time.perf_counter() - started
    if model_id is not None:  # None: a tracker that keeps no models (tracking.log_model=false)
        console.print(
            f"logged model models:/{model_id} (runs:/{tracker.run_id}/model) in {seconds:.1f}s", soft_wrap=True
        )


def _log_config(cfg: DictConfig, tracker: Tracker, folder: Path, config: str, reopened: bool = False) -> None:
    """The resolved config as params (flattened) and as config.yaml (`config`, its YAML). `reopened`: the
    run of a stopped job, whose params were logged (a resume may change only RESULT_FREE ones: kept)."""
    params = flatten_params(OmegaConf.to_container(cfg, resolve=True))
    tracker.log_params({k: v for k, v in params.items() if not (reopened and k in RESULT_FREE)})
    (folder / "config.yaml").write_text(config)
    tracker.log_artifact(folder / "config.yaml")


def _result_free(cfg: DictConfig) -> str:
    """`key=value` of the RESULT_FREE settings of `cfg`, space-joined."""
    return " ".join(f"{key}={OmegaConf.select(cfg, key)}" for key in RESULT_FREE)


def _prepare(cfg: DictConfig, console: Console) -> PreparedDataset:
    """The prepared dataset (from the cache when it is there), with progress lines."""
    with console.status("preparing data") as status:
        data = prepare(
            OmegaConf.to_object(cfg.dataset),
            OmegaConf.to_object(cfg.scenario),
            OmegaConf.to_object(cfg.split),
            Path(cfg.paths.cache),
            progress=lambda message: (console.print(f"  {message}"), status.update(message)),
        )
    describe_data(console, data)
    return data


def _open_splits(settings: TrainerConfig, data: PreparedDataset, device: torch.device) -> Splits:
    """Each split opened on first use: in memory, or streamed from its parquet shards (trainer.in_memory=false,
    or automatically for a split of more than trainer.stream_above_rows rows)."""
    share = (distributed.rank(), distributed.world_size()) if distributed.active() else None

    def opened(name: str) -> DataSplit:
        rows = data.manifest["splits"][name]["rows"]
        in_memory = settings.in_memory if settings.in_memory is not None else rows <= settings.stream_above_rows
        return open_split(
            data.split_path(name), data.feature_map, in_memory, settings.stream_buffer_rows, device, share
        )

    return LazyMapping(SPLITS, opened)


NAMED_GROUPS = ("dataset", "backbone", "regime")  # the context of a run's name, after what sets it apart
CONTEXT_OVERRIDES = ("experiment", "paths.", "tracking.", "hydra", "resume", *RESULT_FREE)  # never set a run apart


def _run_name(seed: int, info: JobInfo, common: list[str] | None = None) -> str:
    """The run's name, what sets it apart first: the options the job's overrides chose (a group's option
    alone), its seed, the keys they set (`key=value`; where and how it runs left out), then ` · <dataset>-
    <backbone>-<regime>[-ssim-<phase>]` without the groups already named, then the overrides every job of
    its multirun shares (`common`; default: the multirun callback's): `mt_s seed=2 · synthetic-dnn debug`
    for a job of `ssimctr -m regime=mt,mt_s,single seed=1,2,3 trainer=debug`. The MLflow UI's runs table
    cuts names at its column's width, so the front stays legible (the tracker cuts a name longer than the
    store takes)."""
    common = sweep_common_overrides_from_env() if common is None else common
    options, keys, shared, named = [], [], [], set()
    for override in info.overrides:
        key, _, value = override.lstrip("+~").partition("=")
        if key == "seed" or key.startswith(CONTEXT_OVERRIDES):
            continue
        shown = value if key in info.choices else f"{key}={value}"
        if override in common:
            shared += [] if key in NAMED_GROUPS else [shown]
            continue
        (options if key in info.choices else keys).append(shown)
        named.add(key)
    context = [info.choices.get(group) for group in NAMED_GROUPS if group not in named]
    if info.choices.get("ssim") not in (None, "disabled") and "ssim" not in named:
        context.append(f"ssim-{info.choices['ssim']}")
    tail = " ".join(["-".join(part for part in context if part), *shared]).strip()
    return " ".join([*options, f"seed={seed}", *keys]) + (f" · {tail}" if tail else "")


def group_name(group: str) -> str:
    """A config group's name in tags and run names: a preset part's (conf/_parts/<group>, kept out of
    `ssimctr --help`) without its folder, so `--group-by table_ssim_ablation` reads it."""
    return group.removeprefix(PARTS)


def _tags(cfg: DictConfig, info: JobInfo) -> dict[str, str]:
    tags = {group_name(group): str(option) for group, option in info.choices.items() if not group.startswith("hydra")}
    tags.update(
        {
            "overrides": " ".join(info.overrides),
            "seed": str(cfg.seed),
            "git_commit": _git_commit(),
            "output_dir": str(info.output_dir),
        }
    )
    if distributed.active():
        tags["ssimctr.world_size"] = str(distributed.world_size())
    return tags


def _git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=Path(__file__).parent
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
