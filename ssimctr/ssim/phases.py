"""SSIM as phases of one procedure (docs/methods.md §1.6): `run_phase` runs the job's `ssim.phase`.

search:   save the initial weights; train backbone and selector jointly for `search_epochs` with the
          annealed hard gate and the KL term (two Adam groups); score every train row with the
          frozen selector on a frozen copy of the search embedding; save everything (artifacts.py).
retrain:  rebuild the model, load the search's initial weights when they fit, train it from there
          with the frozen selection (no KL) and early stopping; any backbone can retrain on a
          saved selection (transfer). The search comes from ssim.from_run (an MLflow run, through
          the tracker) or ssim.from_path (its ssim/ folder).
pipeline: search, then retrain on that search, in one run (search metrics under search/); with
          ssim.reuse_search a finished search of the same key is reused instead (ssimctr.ssim.cache).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from omegaconf import OmegaConf

from ssimctr.config.models import backbone_config
from ssimctr.config.schema import SsimConfig, TrainerConfig
from ssimctr.errors import UserError
from ssimctr.features.feature_map import FeatureMap
from ssimctr.models.base import MultiScenarioModel
from ssimctr.models.layers import FeatureEmbedding
from ssimctr.ssim import artifacts, cache
from ssimctr.ssim.losses import RetrainLoss, SearchLoss
from ssimctr.ssim.selection import Gate, batch_top_ratio, global_selection, random_selection, soft_weights
from ssimctr.ssim.selector import FrozenSelector, Selector, selector_hidden
from ssimctr.tasks.base import Job
from ssimctr.train.loop import Logger, Outcome, eval_loader, evaluate, fit, make_optimizer, train_loader, validator
from ssimctr.train.regimes import Regime, Splits
from ssimctr.utils.seed import seeded_torch


@dataclass
class RetrainInfo:
    """How a retrain was set up, for the run's tags."""

    initial_weights: str  # "search" (the search's initial weights) or "fresh"
    selection: str  # what decided the shared rows


def run_phase(ssim: SsimConfig, regime: Regime, model: MultiScenarioModel, job: Job) -> Outcome:
    """Run `ssim.phase` on the job: `model` is the job's freshly built model (ssim=search trains it);
    SsimConfig checked the options' values when it was made, the task's `supports` the regime."""
    if ssim.phase == "search":
        folder = job.folder / "ssim"
        summary = _summary(job, OmegaConf.to_container(job.config.backbone, resolve=True))
        outcome = search(
            model,
            job.splits,
            job.scenario_names,
            job.settings,
            ssim,
            job.tracker.log_metrics,
            folder,
            summary,
            regime.loss_reduction,
        )
        job.tracker.log_artifact(folder)
        job.tracker.set_tags({"ssim.phase": "search"})
        return outcome
    source, tags = _pipeline_search(ssim, regime, job) if ssim.phase == "pipeline" else _search_source(ssim, job)
    models = job.models
    if ssim.retrain_dropout is not None:  # retrain and pipeline alike
        models = models.with_options(dropout=ssim.retrain_dropout)
    outcome, info = retrain(
        lambda: models.build(regime),
        job.splits,
        job.data.feature_map,
        job.settings,
        ssim,
        job.tracker.log_metrics,
        source,
        job.data.manifest["cache_key"],
        regime.loss_reduction,
    )
    job.tracker.set_tags(
        {
            **tags,
            "ssim.phase": ssim.phase,
            "ssim.initial_weights": info.initial_weights,
            "ssim.selection": info.selection,
        }
    )
    return outcome


def _summary(job: Job, backbone: dict) -> dict:
    """What a search's summary.json records about the job: data, the searcher's backbone, seed."""
    return {
        "dataset": job.config.dataset.name,
        "data_key": job.data.manifest["cache_key"],
        "backbone": backbone,
        "seed": job.config.seed,
    }


def _pipeline_search(ssim: SsimConfig, regime: Regime, job: Job) -> tuple[Path, dict[str, str]]:
    """The search a pipeline retrains on, and its lineage tags: with ssim.reuse_search a finished
    search of the same key (ssimctr.ssim.cache), else a new one, stored for the next pipeline. The
    searcher is built and trained on a torch random stream seeded with the job's seed alone, so a
    search is the same whichever job makes it, and the retrain's stream is the same whether it ran."""
    backbone = job.config.backbone if ssim.search_backbone is None else backbone_config(ssim.search_backbone)
    spec = OmegaConf.to_container(backbone, resolve=True)
    text_encoder = OmegaConf.to_container(job.config.text_encoder, resolve=True)
    key = cache.search_key(
        job.data.manifest["cache_key"], text_encoder, spec, regime, job.config.seed, ssim, job.settings
    )
    root = Path(job.config.paths.cache) / "ssim_search"
    stored = cache.find(root, key) if ssim.reuse_search else None
    if stored is not None:
        job.tracker.log_artifact(stored)
        _log_selection_metrics(artifacts.check_search_folder(stored, job.data.manifest["cache_key"]), job)
        origin = cache.origin_run(stored) or "untracked"
        return stored, {"ssim.search_run_id": origin, "ssim.search_key": key.digest, "ssim.search_reused": "true"}
    folder = job.folder / "ssim"

    def log(metrics: dict[str, float], step: int | None) -> None:
        job.tracker.log_metrics({f"search/{k}": v for k, v in metrics.items()}, step)

    with seeded_torch(job.config.seed, job.models.device):
        searcher = job.models.build(regime, backbone)
        search(
            searcher,
            job.splits,
            job.scenario_names,
            job.settings,
            ssim,
            log,
            folder,
            _summary(job, spec),
            regime.loss_reduction,
        )
    job.tracker.log_artifact(folder)
    if ssim.reuse_search:
        cache.store(root, key, folder, job.tracker.run_id)
    return folder, {"ssim.search_run_id": job.tracker.run_id or "this run", "ssim.search_key": key.digest}


def _log_selection_metrics(summary: dict, job: Job) -> None:
    """A reused search's selection metrics (from its summary: shared fraction and, on planted data, the
    selection AUC per scenario) under search/ssim/..., as the pipeline that searched logged them."""
    for name in ("shared_fraction", "selection_auc"):
        values = summary.get(name, {})
        job.tracker.log_metrics({f"search/ssim/{name}/{key}": value for key, value in values.items()}, 0)


def _search_source(ssim: SsimConfig, job: Job) -> tuple[Path | None, dict[str, str]]:
    """The search folder a retrain reads (downloaded from the tracker for ssim.from_run), and the
    lineage tags for its run."""
    if ssim.from_run:
        folder = job.tracker.download_artifacts(ssim.from_run, "ssim", job.folder / "search")
        return folder, {"ssim.search_run_id": ssim.from_run}
    if ssim.from_path:
        return Path(ssim.from_path), {"ssim.search_path": str(ssim.from_path)}
    return None, {}


def search(
    model: MultiScenarioModel,
    splits: Splits,
    names: Sequence[str],
    settings: TrainerConfig,
    ssim: SsimConfig,
    log: Logger,
    folder: Path,
    summary: dict,
    reduction: str = "row",
) -> Outcome:
    """The search phase; writes the artifacts into `folder` and returns the search model's metrics.
    `reduction`: the regime's loss reduction (row | scenario)."""
    embedding = getattr(model, "embedding", None)
    if not isinstance(embedding, FeatureEmbedding):
        raise UserError(
            f"ssim=search needs a backbone whose towers share one FeatureEmbedding "
            f"(`.embedding`); {type(model).__name__} has none: search with backbone=dnn and "
            "retrain the other model on its selection (ssim=retrain ssim.from_run=<id> backbone=...)"
        )
    initial_state = copy.deepcopy(model.state_dict())
    device = splits["train"].device
    shape = {
        "in_dim": embedding.output_dim,
        "hidden": selector_hidden(ssim.selector_hidden, summary.get("backbone")),
        "num_scenarios": len(names),
        "shared_head": ssim.heads == "shared",
        "dropout": ssim.selector_dropout,
    }
    selector = Selector(**shape).to(device)
    train = train_loader(splits["train"], settings)
    limit = settings.limit_train_batches
    steps = (min(len(train), limit) if limit else len(train)) * ssim.search_epochs
    loss = SearchLoss(
        selector,
        epsilon=ssim.epsilon,
        lambda_kl=ssim.lambda_kl,
        final_temperature=ssim.final_temperature,
        total_steps=steps,
        gate=ssim.gate,
        scenario_names=names,
        log=log,
        log_every=ssim.log_every,
        reduction=reduction,
    )
    optimizer = search_optimizer(model, selector, settings, ssim)
    selector.train()
    search_settings = replace(settings, epochs=ssim.search_epochs, patience=ssim.search_epochs)
    result = fit(
        model,
        loss,
        optimizer,
        train,
        validator(eval_loader(splits["val"], settings), names),
        search_settings,
        restore_best=False,
        log=log,
        phase="search",
    )
    frozen = FrozenSelector(copy.deepcopy(embedding), copy.deepcopy(selector))
    selection = artifacts.selection_frame(artifacts.score_rows(frozen, splits["train"]), ssim.ratio)
    fractions = artifacts.shared_fractions(selection, names)
    log({f"ssim/shared_fraction/{name}": value for name, value in fractions.items()}, 0)
    truth = artifacts.planted_truth(splits["train"])  # planted data only: how well the scores find the answer
    quality = {} if truth is None else artifacts.selection_auc(selection, truth, names)
    if quality:
        log({f"ssim/selection_auc/{name}": value for name, value in quality.items()}, 0)
    artifacts.save_search(
        folder,
        initial_state=initial_state,
        selector=selector,
        selector_shape=shape,
        embedding=embedding,
        selection=selection,
        summary={
            **summary,
            "scenario_names": list(names),
            "ratio": ssim.ratio,
            "shared_fraction": fractions,
            "final_temperature": loss.temperature,
            "epsilon": ssim.epsilon,
            "lambda_kl": ssim.lambda_kl,
            "heads": ssim.heads,
            **({"selection_auc": quality} if quality else {}),
        },
    )
    artifacts.plot_scores(selection, names, folder / "score_histogram.png")
    test = evaluate(model, eval_loader(splits["test"], settings), "test", names)
    return Outcome(result.val, test, [result], model=model)


def search_optimizer(
    model: MultiScenarioModel, selector: Selector, settings: TrainerConfig, ssim: SsimConfig
) -> torch.optim.Optimizer:
    """Two Adam groups (docs/methods.md §1.5): the backbone at trainer.lr / weight_decay, the
    selector at ssim.selector_lr without weight decay."""
    return make_optimizer(
        [
            {"params": list(model.parameters()), "lr": settings.lr, "weight_decay": settings.weight_decay},
            {"params": list(selector.parameters()), "lr": ssim.selector_lr, "weight_decay": 0.0},
        ],
        settings.lr,
        0.0,
        settings.embedding_optimizer,
    )


def retrain(
    build: Callable[[], MultiScenarioModel],
    splits: Splits,
    feature_map: FeatureMap,
    settings: TrainerConfig,
    ssim: SsimConfig,
    log: Logger,
    folder: Path | None,
    data_key: str,
    reduction: str = "row",
) -> tuple[Outcome, RetrainInfo]:
    """The retrain phase on the search in `folder` (None only for selector=random); `reduction`: the
    regime's loss reduction (row | scenario)."""
    device = splits["train"].device
    names = feature_map.scenario_names
    model = build()
    if folder is None:
        if ssim.selector != "random":
            raise UserError(
                "ssim=retrain needs a search: set ssim.from_run=<MLflow run id of an ssim=search run> "
                "or ssim.from_path=<its ssim/ folder> (or ssim.selector=random for SSIM-R)"
            )
        initial, summary = "fresh", {}
    else:
        summary = artifacts.check_search_folder(folder, data_key)
        initial = "search" if artifacts.load_initial_state(folder, model) else "fresh"
    gate, description = _retrain_gate(ssim, folder, summary, feature_map, settings, device)
    result = fit(
        model,
        RetrainLoss(gate, reduction),
        make_optimizer(model.parameters(), settings.lr, settings.weight_decay, settings.embedding_optimizer),
        train_loader(splits["train"], settings),
        validator(eval_loader(splits["val"], settings), names),
        settings,
        log=log,
        phase="retrain",
    )
    test = evaluate(model, eval_loader(splits["test"], settings), "test", names)
    return Outcome(result.val, test, [result], model=model), RetrainInfo(initial, description)


def _retrain_gate(
    ssim: SsimConfig,
    folder: Path | None,
    summary: dict,
    feature_map: FeatureMap,
    settings: TrainerConfig,
    device: torch.device,
) -> tuple[Gate, str]:
    """The retrain's sharing gate and a description of it (`summary`: the search's summary.json)."""
    if ssim.selector == "random":
        return random_selection(ssim.ratio, settings.seed), f"random r={ssim.ratio}"
    frozen = artifacts.load_frozen_selector(folder, feature_map, device)
    if ssim.gate == "soft":
        final = summary["final_temperature"]
        return soft_weights(frozen, final), f"soft sigmoid({final:g}·m)"
    if ssim.selection == "global":
        return global_selection(artifacts.shared_by_row(folder, ssim.ratio, device)), f"global top r={ssim.ratio}"
    return batch_top_ratio(frozen, ssim.ratio), f"batch top r={ssim.ratio}"
