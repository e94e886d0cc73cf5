"""SSIM's two phases as procedures on what they are given (docs/methods.md §1.6); the multi-scenario
task runs them for `ssim.phase` (ssimctr.tasks.ssim_phases).

search:   save the initial weights; train backbone and selector jointly for `search_epochs` with the
          criterion's loss (ssimctr.ssim.criteria; two Adam groups); score every train row with the
          frozen selector on a frozen copy of the search embedding; save everything (artifacts.py).
retrain:  rebuild the model, load the search's initial weights when they fit, train it from there
          with the selection's gate (ssimctr.ssim.selection; no KL) and early stopping; any backbone can
          retrain on a saved selection (transfer).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ssimctr.config.schema import SsimConfig, TrainerConfig
from ssimctr.errors import UserError
from ssimctr.features.feature_map import FeatureMap
from ssimctr.models.base import MultiScenarioModel
from ssimctr.ssim import artifacts
from ssimctr.ssim.criteria import Criterion, SearchRun
from ssimctr.ssim.losses import RetrainLoss
from ssimctr.ssim.selection import Given, Selection
from ssimctr.ssim.selector import FrozenSelector, Selector, selector_hidden
from ssimctr.train.loop import Logger, Trained, eval_loader, evaluate, fit, make_optimizer, train_loader, validator
from ssimctr.train.regimes import Splits


@dataclass
class RetrainInfo:
    """How a retrain was set up, for the run's tags."""

    initial_weights: str  # "search" (the search's initial weights) or "fresh"
    selection: str  # what decided the shared rows


def search(
    model: MultiScenarioModel,
    splits: Splits,
    names: Sequence[str],
    settings: TrainerConfig,
    ssim: SsimConfig,
    criterion: Criterion,
    log: Logger,
    folder: Path,
    summary: dict,
    reduction: str = "row",
) -> Trained:
    """The search phase with `criterion`'s loss (the ssim/criterion option); writes the artifacts into
    `folder` and returns the search model's metrics. `summary`: what summary.json records about the job;
    `reduction`: the regime's loss reduction (row | scenario)."""
    embedding = model.embedding
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
    loss = criterion.search_loss(selector, ssim, SearchRun(steps, names, log, reduction))
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
            "criterion": type(criterion).__name__,
            **loss.summary(),
            "heads": ssim.heads,
            **({"selection_auc": quality} if quality else {}),
        },
    )
    artifacts.plot_scores(selection, names, folder / "score_histogram.png")
    test = evaluate(model, eval_loader(splits["test"], settings), "test", names)
    return Trained(result.val, test, [result], model=model)


def search_optimizer(
    model: MultiScenarioModel, selector: Selector, settings: TrainerConfig, ssim: SsimConfig
) -> torch.optim.Optimizer:
    """Two parameter groups (docs/methods.md §1.5): the backbone as trainer.optimizer sets it, the
    selector at ssim.selector_lr without weight decay."""
    return make_optimizer(
        settings,
        [
            {"params": list(model.parameters())},
            {"params": list(selector.parameters()), "lr": ssim.selector_lr, "weight_decay": 0.0},
        ],
    )


def retrain(
    build: Callable[[], MultiScenarioModel],
    splits: Splits,
    feature_map: FeatureMap,
    settings: TrainerConfig,
    ssim: SsimConfig,
    selection: Selection,
    log: Logger,
    folder: Path | None,
    manifest: dict,
    reduction: str = "row",
) -> tuple[Trained, RetrainInfo]:
    """The retrain phase with `selection`'s gate (the ssim/selection option) on the search in `folder`
    (None: no search, for a selection that needs none); `manifest`: the prepared data's, which the
    search must have been made on; `reduction`: the regime's loss reduction (row | scenario)."""
    device = splits["train"].device
    names = feature_map.scenario_names
    model = build()
    if folder is None:
        if selection.needs_search:
            raise UserError(
                "ssim=retrain needs a search: set ssim.from_run=<MLflow run id of an ssim=search run> "
                "or ssim.from_path=<its ssim/ folder> (or ssim/selection=random for SSIM-R)"
            )
        initial, summary = "fresh", {}
    else:
        summary = artifacts.check_search_folder(folder, manifest)
        initial = "search" if artifacts.load_initial_state(folder, model) else "fresh"
    given = Given(ssim.ratio, settings.seed, feature_map, splits["train"], device, folder, summary)
    gate, description = selection.gate(given)
    result = fit(
        model,
        RetrainLoss(gate, reduction),
        make_optimizer(settings, model.parameters()),
        train_loader(splits["train"], settings),
        validator(eval_loader(splits["val"], settings), names),
        settings,
        log=log,
        phase="retrain",
    )
    test = evaluate(model, eval_loader(splits["test"], settings), "test", names)
    return Trained(result.val, test, [result], model=model), RetrainInfo(initial, description)
