"""The cold-start study (docs/methods.md §2.2): users (or items) unseen in training are evaluated
apart from warm ones, per scenario, zero-shot or few-shot, with any model wrapped by a cold-start
method (`coldstart` group).

Cold entities: with `task.holdout=null`, those with no train row (a time split's newcomers); with
`task.holdout=f`, a seeded share f of all entities, whose rows leave training and whose ids become
out of vocabulary everywhere. Warm rows of val and test stay as they are. Each cold entity's rows in
a split form one task: its first `task.shots` rows in time are its support set, the rest its query
set; entities with at most `shots` rows are counted and left out.

Metrics: test/{auc,logloss}/<scenario|overall|mean> on the cold query rows, test/warm/... on the
warm rows; val/* (all val rows, each epoch) select the model. coldstart.json holds the counts.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict

import polars as pl
import torch
from rich.text import Text

from ssimctr.coldstart.base import ColdStartMethod, Entity, Episodes
from ssimctr.coldstart.episodes import EpisodeCounts, build_episodes
from ssimctr.data.datasplit import MemorySplit
from ssimctr.data.loaders import batch_from_frame
from ssimctr.errors import UserError
from ssimctr.features.feature_map import FeatureMap
from ssimctr.metrics import scenario_metrics
from ssimctr.models.base import MultiScenarioModel
from ssimctr.tasks.base import Job, Supports
from ssimctr.train.loop import Outcome
from ssimctr.train.regimes import Regime
from ssimctr.utils.instantiate import instantiate

ENTITIES = ("user", "item")
logger = logging.getLogger(__name__)  # the job's main.log (Hydra's job log)
HASH_MODULUS = 1_000_000_007


class ColdStartTask:
    """`task=cold_start`: reads the `regime` and `coldstart` groups of the job's config."""

    # one model whose rows train their own tower, with the mean loss over rows; in one process
    supports = Supports(
        groups=("coldstart",), regimes={"training": ("joint",), "share": ("own",), "loss_reduction": ("row",)}
    )

    def __init__(self, entity: str, holdout: float | None, holdout_seed: int, shots: int, meta_shots: int) -> None:
        if entity not in ENTITIES:
            raise UserError(f"task.entity={entity} is not known: use user or item")
        if holdout is not None and not 0.0 < holdout < 1.0:
            raise UserError(f"task.holdout={holdout}: use a share in (0, 1), or null for the time split's newcomers")
        if shots < 0 or meta_shots < 1:
            raise UserError(f"task.shots={shots}, task.meta_shots={meta_shots}: use shots >= 0 and meta_shots >= 1")
        self.entity_kind, self.holdout, self.holdout_seed = entity, holdout, holdout_seed
        self.shots, self.meta_shots = shots, meta_shots

    def run(self, job: Job) -> Outcome:
        """Train the method on warm rows, then evaluate cold (query) and warm rows of the test split."""
        regime: Regime = instantiate(job.config.regime)  # checked against `supports`
        feature_map = job.data.feature_map
        entity = self.entity(feature_map)
        key = f"{entity.kind}_key"
        frames = {name: pl.read_parquet(job.data.split_path(name)) for name in ("train", "val", "test")}
        cold_keys, frames["train"], parts = self.rows(frames, entity)
        episodes, counts = {}, {}
        for name, (cold, _) in parts.items():
            episodes[name], counts[name] = build_episodes(cold, key, self.shots, feature_map)
        if not episodes["test"].num_tasks:
            raise UserError(self._no_cold_test_message(counts["test"], cold_keys.height))
        meta_tasks, meta_counts = build_episodes(frames["train"], key, self.meta_shots, feature_map)

        device = job.models.device
        method: ColdStartMethod = instantiate(job.config.coldstart, entity=entity)
        model = job.models.build(regime)
        line = (
            f"[bold]{job.models.backbone_name}[/] + coldstart {type(method).__name__}, {entity.kind} cold start, "
            f"{'zero-shot' if not self.shots else f'{self.shots}-shot'}: "
            f"{sum(p.numel() for p in model.parameters()):,} parameters on {device}"
        )
        job.console.print(line)
        logger.info(Text.from_markup(line).plain)
        train = MemorySplit(batch_from_frame(frames["train"], feature_map).to(device))
        val = batch_from_frame(pl.concat(parts["val"]), feature_map).to(device)  # cold ids out of vocabulary
        names = feature_map.scenario_names

        def validate(trained: MultiScenarioModel) -> dict[str, float]:
            return _metrics("val", method.predict_warm(trained, val), val.label, val.scenario, names)

        fits = method.train(model, train, meta_tasks.to(device), validate, job.settings, job.tracker.log_metrics)
        test_episodes = episodes["test"].to(device)
        warm_test = batch_from_frame(parts["test"][1], feature_map).to(device)
        cold = _metrics(
            "test",
            method.predict_cold(model, test_episodes),
            test_episodes.query.label,
            test_episodes.query.scenario,
            names,
        )
        warm = _metrics("test/warm", method.predict_warm(model, warm_test), warm_test.label, warm_test.scenario, names)

        report = self._report(entity, cold_keys.height, counts, meta_counts, parts, episodes, names)
        (job.folder / "coldstart.json").write_text(json.dumps(report, indent=2))
        job.tracker.log_artifact(job.folder / "coldstart.json")
        tested = counts["test"]
        support = f", {tested.support_rows:,} support rows" if self.shots else ""
        job.console.print(
            f"cold {entity.kind}s in test: {tested.tasks:,} evaluated ({tested.query_rows:,} query rows{support}), "
            f"{tested.left_out_entities:,} left out with at most {self.shots} rows; "
            f"warm test rows {len(warm_test):,}"
        )
        summaries = {
            "test": _summary(test_episodes.query.scenario, test_episodes.query.label, names),
            "test/warm": _summary(warm_test.scenario, warm_test.label, names),
        }
        val_metrics = next((f.val for f in fits if f.val), {})
        description = f"cold {entity.kind}s, {self.shots}-shot, coldstart {type(method).__name__}"
        return Outcome(val_metrics, {**cold, **warm}, fits, summaries=summaries, description=description)

    def entity(self, feature_map: FeatureMap) -> Entity:
        """The studied entity's id field, checked against the data."""
        column = getattr(feature_map, self.entity_kind)
        if column is None:
            raise UserError(
                f"task=cold_start task.entity={self.entity_kind} needs the dataset to name its "
                f"{self.entity_kind} column: set dataset.{self.entity_kind}=<column>"
            )
        names = list(feature_map.categorical_names)
        if column not in names:
            raise UserError(
                f"dataset.{self.entity_kind}={column} must also be a categorical column "
                f"(dataset.categorical) for task=cold_start"
            )
        ids = tuple(names.index(c) for c in (feature_map.user, feature_map.item) if c in names)
        return Entity(self.entity_kind, names.index(column), column, ids)

    def rows(
        self, frames: dict[str, pl.DataFrame], entity: Entity
    ) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, tuple[pl.DataFrame, pl.DataFrame]]]:
        """The cold entities' keys, the training rows without them, and (cold, warm) rows of val and test."""
        key = f"{entity.kind}_key"
        cold_keys = self._cold_keys(frames, key)
        train = frames["train"].join(cold_keys, on=key, how="anti")
        return (
            cold_keys,
            train,
            {name: _cold_and_warm(frames[name], cold_keys, key, entity) for name in ("val", "test")},
        )

    def _cold_keys(self, frames: dict[str, pl.DataFrame], key: str) -> pl.DataFrame:
        """The cold entities' keys: held out at random, or absent from train."""
        if key not in frames["train"].columns:
            raise UserError(f"the prepared data has no {key} column: prepare it again (delete its cache folder)")
        if self.holdout is None:
            seen = frames["train"].select(key).unique()
            evaluated = pl.concat([frames["val"].select(key), frames["test"].select(key)]).unique()
            return evaluated.join(seen, on=key, how="anti")
        everyone = pl.concat([frame.select(key) for frame in frames.values()]).unique()
        share = (pl.col(key).hash(seed=self.holdout_seed) % HASH_MODULUS).cast(pl.Float64) / HASH_MODULUS
        return everyone.filter(share < self.holdout)

    def _no_cold_test_message(self, counts: EpisodeCounts, cold: int) -> str:
        how = "no train row" if self.holdout is None else f"task.holdout={self.holdout}"
        return (
            f"task=cold_start: no cold {self.entity_kind} to evaluate in the test split ({cold:,} cold "
            f"{self.entity_kind}s by {how}; {counts.left_out_entities:,} of those in test have at most "
            f"task.shots={self.shots} rows): set task.holdout=0.1 (hold out a share of {self.entity_kind}s), "
            f"or lower task.shots"
        )

    def _report(
        self,
        entity: Entity,
        cold: int,
        counts: dict,
        meta: EpisodeCounts,
        parts: dict,
        episodes: dict[str, Episodes],
        names: tuple[str, ...],
    ) -> dict:
        """coldstart.json: the definition and the counts per split and scenario."""
        per_scenario = {}
        for split, (cold_rows, warm_rows) in parts.items():
            query = episodes[split].query.scenario.cpu().numpy()
            per_scenario[split] = {
                name: {
                    "cold_entities": int(cold_rows.filter(pl.col("scenario") == k)[f"{entity.kind}_key"].n_unique()),
                    "cold_rows": int((cold_rows["scenario"] == k).sum()),
                    "query_rows": int((query == k).sum()),
                    "warm_rows": int((warm_rows["scenario"] == k).sum()),
                }
                for k, name in enumerate(names)
            }
        return {
            "entity": entity.kind,
            "column": entity.column,
            "definition": "no train row" if self.holdout is None else f"held out: {self.holdout}",
            "shots": self.shots,
            "cold_entities": cold,
            "episodes": {split: asdict(value) for split, value in counts.items()},
            "meta_tasks": asdict(meta),
            "scenarios": per_scenario,
        }


def _cold_and_warm(
    frame: pl.DataFrame, cold_keys: pl.DataFrame, key: str, entity: Entity
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """A split's cold rows (their id made out of vocabulary) and warm rows."""
    cold = frame.join(cold_keys, on=key, how="semi").with_columns(
        pl.lit(0, dtype=frame[entity.column].dtype).alias(entity.column)
    )
    return cold, frame.join(cold_keys, on=key, how="anti")


def _metrics(
    split: str, logits: torch.Tensor, label: torch.Tensor, scenario: torch.Tensor, names: tuple[str, ...]
) -> dict[str, float]:
    return scenario_metrics(split, label.cpu().numpy(), logits.float().cpu().numpy(), scenario.cpu().numpy(), names)


def _summary(scenario: torch.Tensor, label: torch.Tensor, names: tuple[str, ...]) -> list[dict]:
    """Rows, positives and CTR per scenario of evaluated rows (for the printed table)."""
    scenario, label = scenario.cpu().numpy(), label.cpu().numpy()
    rows = []
    for k, name in enumerate(names):
        chosen = scenario == k
        count, positives = int(chosen.sum()), int(label[chosen].sum())
        rows.append(
            {
                "scenario": name,
                "rows": count,
                "positives": positives,
                "ctr": positives / count if count else float("nan"),
            }
        )
    return rows
