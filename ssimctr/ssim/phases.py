"""The two SSIM phases as training procedures (methods.md §1.6).

search:  save the initial weights; train backbone and selector jointly for `search_epochs` with the
         annealed hard gate and the KL term (two Adam groups); score every train row with the
         frozen selector on a frozen copy of the search embedding; save everything (artifacts.py).
retrain: rebuild the model, load the search's initial weights when they fit, train it from there
         with the frozen selection (no KL) and early stopping; any backbone can retrain on a
         saved selection (transfer).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from ssimctr.config.schema import SsimConfig
from ssimctr.data.batch import Batch
from ssimctr.data.datasplit import as_splits
from ssimctr.errors import UserError
from ssimctr.features.feature_map import FeatureMap
from ssimctr.models.base import MultiScenarioModel
from ssimctr.models.layers import FeatureEmbedding
from ssimctr.ssim import artifacts
from ssimctr.ssim.gates import (RetrainLoss, SearchLoss, batch_top_ratio, global_selection, random_selection,
                                soft_weights)
from ssimctr.ssim.selector import FrozenSelector, Selector
from ssimctr.train.loop import evaluate, fit, make_optimizer, validator
from ssimctr.train.regimes import Logger, Outcome, Splits, TrainSettings, eval_loader

CHOICES = {"heads": ("per_scenario", "shared"), "gate": ("hard", "soft"), "selection": ("batch_topk", "global"),
           "selector": ("learned", "random")}


@dataclass
class RetrainInfo:
    """How a retrain was set up, for the run's tags."""

    initial_weights: str          # "search" (the search's initial weights) or "fresh"
    selection: str                # what decided the shared rows


def check_options(ssim: SsimConfig) -> None:
    """Clear errors for invalid ssim options."""
    for key, allowed in CHOICES.items():
        if getattr(ssim, key) not in allowed:
            raise UserError(f"ssim.{key}={getattr(ssim, key)} is not known: use one of {', '.join(allowed)}")
    if not 0.0 <= ssim.ratio <= 1.0:
        raise UserError(f"ssim.ratio must be in [0, 1], got {ssim.ratio}")
    if not 0.0 < ssim.epsilon < 1.0:
        raise UserError(f"ssim.epsilon must be in (0, 1), got {ssim.epsilon}")


def search(model: MultiScenarioModel, splits: Splits, names: Sequence[str], settings: TrainSettings,
           ssim: SsimConfig, log: Logger, folder: Path, summary: dict) -> Outcome:
    """The search phase; writes the artifacts into `folder` and returns the search model's metrics."""
    embedding = getattr(model, "embedding", None)
    if not isinstance(embedding, FeatureEmbedding):
        raise UserError(f"ssim=search needs a backbone whose towers share one FeatureEmbedding "
                        f"(`.embedding`); {type(model).__name__} has none: search with backbone=dnn and "
                        "retrain the other model on its selection (ssim=retrain ssim.from_run=<id> backbone=...)")
    initial_state = copy.deepcopy(model.state_dict())
    splits = as_splits(splits)
    device = splits["train"].device
    shape = {"in_dim": embedding.output_dim, "hidden": list(ssim.selector_hidden), "num_scenarios": len(names),
             "shared_head": ssim.heads == "shared", "dropout": ssim.selector_dropout}
    selector = Selector(**shape).to(device)
    train = splits["train"].loader(settings.batch_size, shuffle=True, seed=settings.seed)
    steps = (min(len(train), settings.limit_batches) if settings.limit_batches else len(train)) * ssim.search_epochs
    loss = SearchLoss(selector, epsilon=ssim.epsilon, lambda_kl=ssim.lambda_kl,
                      final_temperature=ssim.final_temperature, total_steps=steps, gate=ssim.gate,
                      scenario_names=names, log=log, log_every=ssim.log_every)
    optimizer = make_optimizer([
        {"params": list(model.parameters()), "lr": settings.lr, "weight_decay": settings.weight_decay},
        {"params": list(selector.parameters()), "lr": ssim.selector_lr, "weight_decay": 0.0}], settings.lr, 0.0)
    selector.train()
    history = fit(model, loss, optimizer, train, validator(eval_loader(splits["val"], settings), names),
                  epochs=ssim.search_epochs, monitor=settings.monitor, mode=settings.mode,
                  patience=ssim.search_epochs, limit_batches=settings.limit_batches, progress=settings.progress,
                  restore_best=False, on_epoch_end=lambda epoch, metrics: log(metrics, epoch))
    frozen = FrozenSelector(copy.deepcopy(embedding), copy.deepcopy(selector))
    selection = artifacts.selection_frame(artifacts.score_rows(frozen, splits["train"]), ssim.ratio)
    fractions = artifacts.shared_fractions(selection, names)
    log({f"ssim/shared_fraction/{name}": value for name, value in fractions.items()}, 0)
    artifacts.save_search(folder, initial_state=initial_state, selector=selector, selector_shape=shape,
                          embedding=embedding, selection=selection,
                          summary={**summary, "scenario_names": list(names), "ratio": ssim.ratio,
                                   "shared_fraction": fractions, "final_temperature": loss.temperature,
                                   "epsilon": ssim.epsilon, "lambda_kl": ssim.lambda_kl, "heads": ssim.heads})
    artifacts.plot_scores(selection, names, folder / "score_histogram.png")
    val = {k: v for k, v in history.history[-1].items() if k.startswith("val/")}
    return Outcome(val, evaluate(model, eval_loader(splits["test"], settings), "test", names), [history])


def retrain(build: Callable[[], MultiScenarioModel], splits: Splits, feature_map: FeatureMap,
            settings: TrainSettings, ssim: SsimConfig, log: Logger,
            folder: Path | None, data_key: str) -> tuple[Outcome, RetrainInfo]:
    """The retrain phase on the search in `folder` (None only for selector=random)."""
    splits = as_splits(splits)
    device = splits["train"].device
    names = feature_map.scenario_names
    model = build()
    if folder is None:
        if ssim.selector != "random":
            raise UserError("ssim=retrain needs a search: set ssim.from_run=<MLflow run id of an ssim=search run> "
                            "or ssim.from_path=<its ssim/ folder> (or ssim.selector=random for SSIM-R)")
        initial = "fresh"
    else:
        artifacts.check_search_folder(folder, data_key)
        initial = "search" if artifacts.load_initial_state(folder, model) else "fresh"
    gate_of, selection = _gate(ssim, folder, feature_map, settings, device)
    history = fit(model, RetrainLoss(gate_of), make_optimizer(model.parameters(), settings.lr, settings.weight_decay),
                  splits["train"].loader(settings.batch_size, shuffle=True, seed=settings.seed),
                  validator(eval_loader(splits["val"], settings), names), epochs=settings.epochs,
                  monitor=settings.monitor, mode=settings.mode, patience=settings.patience,
                  limit_batches=settings.limit_batches, progress=settings.progress,
                  on_epoch_end=lambda epoch, metrics: log(metrics, epoch))
    val = {k: v for k, v in history.history[history.best_epoch - 1].items() if k.startswith("val/")} \
        if history.best_epoch else {}
    test = evaluate(model, eval_loader(splits["test"], settings), "test", names)
    return Outcome(val, test, [history]), RetrainInfo(initial, selection)


def _gate(ssim: SsimConfig, folder: Path | None, feature_map: FeatureMap, settings: TrainSettings,
          device: torch.device) -> tuple[Callable[[Batch], torch.Tensor], str]:
    """The retrain's sharing gate and a description of it."""
    if ssim.selector == "random":
        return random_selection(ssim.ratio, settings.seed), f"random r={ssim.ratio}"
    frozen = artifacts.load_frozen_selector(folder, feature_map, device)
    if ssim.gate == "soft":
        return soft_weights(frozen), "soft sigmoid(m)"
    if ssim.selection == "global":
        return global_selection(artifacts.shared_by_row(folder, ssim.ratio, device)), f"global top r={ssim.ratio}"
    return batch_top_ratio(frozen, ssim.ratio), f"batch top r={ssim.ratio}"

