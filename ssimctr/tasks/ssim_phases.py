"""SSIM's phases as steps of the multi-scenario task (docs/methods.md §1.6): `run_phase` runs the job's
`ssim.phase` with the procedures of ssimctr.ssim.phases.

search:   the search on the job's model; its artifacts logged under ssim/; the console says how to retrain.
retrain:  a retrain on the search of ssim.from_run (an MLflow run, through the tracker) or ssim.from_path
          (its ssim/ folder), or on none for a selection that needs none (ssim/selection=random, planted).
pipeline: search, then retrain on that search, in one run (search metrics under search/); with
          ssim.reuse_search a finished search of the same key is reused instead (ssimctr.ssim.cache).
The `ssim/criterion` and `ssim/selection` options are built here, by `_target_`.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from omegaconf import OmegaConf

from ssimctr.config.models import backbone_config
from ssimctr.config.schema import SsimConfig
from ssimctr.models.base import MultiScenarioModel
from ssimctr.ssim import artifacts, cache, phases
from ssimctr.ssim.criteria import Criterion
from ssimctr.ssim.selection import Selection
from ssimctr.tasks.base import Job
from ssimctr.tasks.outcome import Outcome
from ssimctr.train.regimes import Regime
from ssimctr.utils.instantiate import instantiate
from ssimctr.utils.seed import seeded_torch


def run_phase(ssim: SsimConfig, regime: Regime, model: MultiScenarioModel, job: Job) -> Outcome:
    """Run `ssim.phase` on the job: `model` is the job's freshly built model (ssim=search trains it);
    SsimConfig checked the options' values when it was made, the task's `supports` the regime."""
    if ssim.phase == "search":
        return _search(ssim, regime, model, job)
    source, tags = _pipeline_search(ssim, regime, job) if ssim.phase == "pipeline" else _search_source(ssim, job)
    models = job.models
    if ssim.retrain_dropout is not None:  # retrain and pipeline alike
        models = models.with_options(dropout=ssim.retrain_dropout)
    selection: Selection = instantiate(OmegaConf.structured(ssim.selection))
    trained, info = phases.retrain(
        lambda: models.build(regime),
        job.splits,
        job.data.feature_map,
        job.settings,
        ssim,
        selection,
        job.tracker.log_metrics,
        source,
        job.data.manifest,
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
    return Outcome.of(trained)


def _criterion(ssim: SsimConfig) -> Criterion:
    return instantiate(OmegaConf.structured(ssim.criterion))


def _search(ssim: SsimConfig, regime: Regime, model: MultiScenarioModel, job: Job) -> Outcome:
    """ssim=search on the job's model; its outcome's next step is the command that retrains on it."""
    folder = job.folder / "ssim"
    summary = _summary(job, OmegaConf.to_container(job.models.backbone, resolve=True))
    trained = phases.search(
        model,
        job.splits,
        job.scenario_names,
        job.settings,
        ssim,
        _criterion(ssim),
        job.tracker.log_metrics,
        folder,
        summary,
        regime.loss_reduction,
    )
    job.tracker.log_artifact(folder)
    job.tracker.set_tags({"ssim.phase": "search"})
    source = f"ssim.from_run={job.tracker.run_id}" if job.tracker.run_id else f"ssim.from_path={folder}"
    return Outcome.of(
        trained,
        next_step=f"SSIM search saved in {folder}. Next, retrain on it: ssimctr ssim=retrain {source} "
        "(with this job's dataset, scenario and split options)",
    )


def _summary(job: Job, backbone: dict) -> dict:
    """What a search's summary.json records about the job: data (its key and what made it), the
    searcher's backbone, seed."""
    return {
        "dataset": job.recipe.dataset.name,
        "data_key": job.data.manifest["cache_key"],
        "data": artifacts.data_provenance(job.data.manifest),
        "backbone": backbone,
        "seed": job.seed,
    }


def _pipeline_search(ssim: SsimConfig, regime: Regime, job: Job) -> tuple[Path, dict[str, str]]:
    """The search a pipeline retrains on, and its lineage tags: with ssim.reuse_search a finished
    search of the same key (ssimctr.ssim.cache), else a new one, stored for the next pipeline. The
    searcher is built and trained on a torch random stream seeded with the job's seed alone, so a
    search is the same whichever job makes it, and the retrain's stream is the same whether it ran."""
    backbone = job.models.backbone if ssim.search_backbone is None else backbone_config(ssim.search_backbone)
    spec = OmegaConf.to_container(backbone, resolve=True)
    text_encoder = asdict(job.recipe.text_encoder)
    key = cache.search_key(job.data.manifest["cache_key"], text_encoder, spec, regime, job.seed, ssim, job.settings)
    root = job.recipe.cache / "ssim_search"
    stored = cache.find(root, key) if ssim.reuse_search else None
    if stored is not None:
        job.tracker.log_artifact(stored)
        _log_selection_metrics(artifacts.check_search_folder(stored, job.data.manifest), job)
        origin = cache.origin_run(stored) or "untracked"
        run = "an untracked run" if origin == "untracked" else f"run {origin}"
        job.console.print(
            f"SSIM search reused: {run} made this search (same data, searcher, seed and options): {stored}",
            markup=False,
            soft_wrap=True,
        )
        return stored, {"ssim.search_run_id": origin, "ssim.search_key": key.digest, "ssim.search_reused": "true"}
    folder = job.folder / "ssim"

    def log(metrics: dict[str, float], step: int | None) -> None:
        job.tracker.log_metrics({f"search/{k}": v for k, v in metrics.items()}, step)

    with seeded_torch(job.seed, job.models.device):
        searcher = job.models.build(regime, backbone)
        phases.search(
            searcher,
            job.splits,
            job.scenario_names,
            job.settings,
            ssim,
            _criterion(ssim),
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
