"""The cold-start study (docs/methods.md §2.2): users (or items) unseen in training are evaluated
apart from warm ones, per scenario, in the cold phase and after each warm-up round, with any model
wrapped by a cold-start method (`coldstart` group).

Cold entities: with `task.holdout=null`, those with no train row (a time split's newcomers); with
`task.holdout=f`, a seeded share f of all entities, whose train rows leave the data before it is
prepared (vocabularies and numeric statistics are fitted without them), so their ids are out of
vocabulary everywhere. Warm rows of val and test stay as they are. Each cold entity's test rows form
one task in time order: with `task.shots=K` its first `task.warmup_rounds` × K rows are the warm-up
rounds' rows (warm-a, warm-b, ...: K rows each) and the rest its query rows; entities with no more
rows than that are counted and left out. With shots=0 every cold row is a query row (cold phase only).

Metrics (on the same query rows): test/{auc,logloss}/<scenario|overall|mean> in the cold phase,
test/warm_a/..., test/warm_b/... after each warm-up round; with shots > 0 also test/cold_all/...: the
cold phase on every cold row. test/warm/... on the warm rows; val/* (all val rows, each epoch) select
the model. coldstart.json holds the counts.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import string
from collections.abc import Sequence
from dataclasses import asdict

import polars as pl
import torch
from rich.text import Text

from ssimctr.coldstart.base import Attributes, ColdStartMethod, Entity, Episodes
from ssimctr.coldstart.episodes import EpisodeCounts, build_episodes
from ssimctr.data.datasplit import MemorySplit
from ssimctr.data.loaders import batch_from_frame
from ssimctr.data.prepare import Holdout, PreparedDataset, prepare
from ssimctr.errors import UserError
from ssimctr.features.feature_map import FeatureMap
from ssimctr.metrics import scenario_metrics
from ssimctr.models.base import MultiScenarioModel
from ssimctr.tasks.base import Job, Supports, split_frames
from ssimctr.tasks.outcome import Outcome
from ssimctr.text.build import with_encoded_fields

ENTITIES = ("user", "item")
logger = logging.getLogger(__name__)  # the job's main.log (Hydra's job log)


class ColdStartTask:
    """`task=cold_start`: trains with the job's regime and cold-start method (the `coldstart` group)."""

    # one model whose rows train their own tower, with the mean loss over rows; in one process
    supports = Supports(
        groups=("coldstart",), regimes={"training": ("joint",), "share": ("own",), "loss_reduction": ("row",)}
    )

    def __init__(
        self, entity: str, holdout: float | None, holdout_seed: int, shots: int, warmup_rounds: int, meta_shots: int
    ) -> None:
        if entity not in ENTITIES:
            raise UserError(f"task.entity={entity} is not known: use user or item")
        if holdout is not None and not 0.0 < holdout < 1.0:
            raise UserError(f"task.holdout={holdout}: use a share in (0, 1), or null for the time split's newcomers")
        if shots < 0 or meta_shots < 1:
            raise UserError(f"task.shots={shots}, task.meta_shots={meta_shots}: use shots >= 0 and meta_shots >= 1")
        if shots and not 1 <= warmup_rounds <= len(string.ascii_lowercase):
            raise UserError(
                f"task.warmup_rounds={warmup_rounds}: use 1..26 rounds of task.shots={shots} rows (3: warm-a, -b, -c)"
            )
        self.entity_kind, self.holdout, self.holdout_seed = entity, holdout, holdout_seed
        self.shots, self.meta_shots = shots, meta_shots
        self.rounds = warmup_rounds if shots else 0

    def run(self, job: Job) -> Outcome:
        """Train the method on warm rows, then evaluate cold (query) and warm rows of the test split."""
        regime = job.regime  # checked against `supports`
        data, models = job.data, job.models
        if self.holdout is not None:
            data = self.held_out_data(job)
            models = dataclasses.replace(models, feature_map=data.feature_map)
        feature_map = data.feature_map
        dataset = job.recipe.dataset
        entity = self.entity(feature_map, dataset.user_features, dataset.item_features)
        key = f"{entity.kind}_key"
        frames = dict(job.frames if data is job.data else split_frames(data))
        cold_keys, frames["train"], parts = self.rows(frames, entity)
        episodes, counts = {}, {}
        for name, (cold, _) in parts.items():
            episodes[name], counts[name] = build_episodes(
                cold, key, self.shots, feature_map, entity.attributes, self.rounds
            )
        if not episodes["test"].num_tasks:
            raise UserError(self._no_cold_test_message(counts["test"], cold_keys.height))
        meta_tasks, meta_counts = build_episodes(frames["train"], key, self.meta_shots, feature_map, entity.attributes)

        device = models.device
        method = job.coldstart(entity)
        model = models.build(regime)
        phase = "zero-shot" if not self.shots else f"{self.rounds} warm-up round(s) of {self.shots} rows"
        line = (
            f"[bold]{models.backbone_name}[/] + coldstart {type(method).__name__}, {entity.kind} cold start, "
            f"{phase}: {sum(p.numel() for p in model.parameters()):,} parameters on {device}"
        )
        self._say(job, line)
        train = MemorySplit(batch_from_frame(frames["train"], feature_map).to(device))
        val = batch_from_frame(pl.concat(parts["val"]), feature_map).to(device)  # cold ids out of vocabulary
        cold_val = batch_from_frame(parts["val"][0], feature_map).to(device)
        names = feature_map.scenario_names

        def validate(trained: MultiScenarioModel) -> dict[str, float]:
            """val/* on every val row; val/cold/* on the cold entities' val rows as they are (ids out of
            vocabulary), when there are any: what a meta phase is kept by (coldstart.meta_monitor)."""
            metrics = _metrics("val", method.predict_warm(trained, val), val.label, val.scenario, names)
            if len(cold_val):
                logits = method.predict_warm(trained, cold_val)
                metrics.update(_metrics("val/cold", logits, cold_val.label, cold_val.scenario, names))
            return metrics

        fits = method.train(model, train, meta_tasks.to(device), validate, job.settings, job.tracker.log_metrics)
        self._report_tags(job, method)
        test_episodes = episodes["test"].to(device)
        query = test_episodes.query
        results, summaries = {}, {}
        for prefix, logits in zip(phase_prefixes(self.rounds), method.predict_cold(model, test_episodes)):
            results.update(_metrics(prefix, logits, query.label, query.scenario, names))
            summaries[prefix] = _summary(query.scenario, query.label, names)
        if self.shots:
            every, _ = build_episodes(parts["test"][0], key, 0, feature_map, entity.attributes, rounds=0)
            every = every.to(device)
            (logits,) = method.predict_cold(model, every)
            results.update(_metrics("test/cold_all", logits, every.query.label, every.query.scenario, names))
            summaries["test/cold_all"] = _summary(every.query.scenario, every.query.label, names)
        warm_test = batch_from_frame(parts["test"][1], feature_map).to(device)
        results.update(
            _metrics("test/warm", method.predict_warm(model, warm_test), warm_test.label, warm_test.scenario, names)
        )
        summaries["test/warm"] = _summary(warm_test.scenario, warm_test.label, names)

        report = self._report(entity, cold_keys.height, counts, meta_counts, parts, episodes, names)
        (job.folder / "coldstart.json").write_text(json.dumps(report, indent=2))
        job.tracker.log_artifact(job.folder / "coldstart.json")
        tested = counts["test"]
        support = f", {tested.support_rows:,} warm-up rows" if self.shots else ""
        job.console.print(
            f"cold {entity.kind}s in test: {tested.tasks:,} evaluated ({tested.query_rows:,} query rows{support}), "
            f"{tested.left_out_entities:,} left out with at most {self.shots * self.rounds} rows; "
            f"warm test rows {len(warm_test):,}"
        )
        val_metrics = next((f.val for f in reversed(fits) if f.val), {})
        description = f"cold {entity.kind}s, {phase}, coldstart {type(method).__name__}"
        return Outcome(val_metrics, results, fits, summaries=summaries, description=description)

    def held_out_data(self, job: Job) -> PreparedDataset:
        """The job's data prepared again without the held-out entities' train rows (cached as any
        preparation), with the job's encoded text fields."""
        holdout = Holdout(self.entity_kind, self.holdout, self.holdout_seed)
        recipe = job.recipe
        data = prepare(recipe.dataset, recipe.scenario, recipe.split, recipe.cache, holdout=holdout)
        self._say(
            job,
            f"held out {self.holdout:g} of the {self.entity_kind}s (seed {self.holdout_seed}): "
            f"{data.manifest['dropped'].get('held_out', 0):,} train rows dropped before the vocabularies and "
            f"statistics were fitted -> {data.path}",
        )
        return with_encoded_fields(data, recipe.text_encoder, job.console)

    def entity(
        self, feature_map: FeatureMap, user_features: Sequence[str] = (), item_features: Sequence[str] = ()
    ) -> Entity:
        """The studied entity's id field and its own attribute fields, checked against the data."""
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
        declared = {"user": list(user_features), "item": list(item_features)}
        _check_declared(feature_map, declared)
        own = declared[self.entity_kind]
        encoded = [field.column for field in feature_map.encoded]
        attributes = Attributes(
            cat=tuple(names.index(c) for c in own if c in names),
            num=tuple(feature_map.numeric_names.index(c) for c in own if c in feature_map.numeric_names),
            text=tuple(encoded.index(c) for c in own if c in encoded),
        )
        return Entity(self.entity_kind, names.index(column), column, ids, attributes, tuple(own))

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
        return everyone.filter(Holdout(self.entity_kind, self.holdout, self.holdout_seed).held_out(pl.col(key)))

    def _say(self, job: Job, line: str) -> None:
        job.console.print(line)
        logger.info(Text.from_markup(line).plain)

    def _report_tags(self, job: Job, method: ColdStartMethod) -> None:
        """The method's tags on the run (coldstart.<key>), and a console line when a meta phase was dropped."""
        tags = {f"coldstart.{k}": v for k, v in method.tags.items()}
        if tags:
            job.tracker.set_tags(tags)
        if method.tags.get("meta_kept") == "false":
            self._say(
                job,
                f"[yellow]coldstart {type(method).__name__}: no meta epoch validated better than the base model "
                f"({job.settings.monitor}), so the base model is kept and scores the cold rows "
                "(tag coldstart.meta_kept=false)[/]",
            )

    def _no_cold_test_message(self, counts: EpisodeCounts, cold: int) -> str:
        how = "no train row" if self.holdout is None else f"task.holdout={self.holdout}"
        needed = self.shots * self.rounds
        return (
            f"task=cold_start: no cold {self.entity_kind} to evaluate in the test split ({cold:,} cold "
            f"{self.entity_kind}s by {how}; {counts.left_out_entities:,} of those in test have at most "
            f"{needed} rows (task.shots={self.shots} x task.warmup_rounds={self.rounds})): set task.holdout=0.1 "
            f"(hold out a share of {self.entity_kind}s), or lower task.shots or task.warmup_rounds"
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
            "attributes": list(entity.attribute_names),
            "definition": "no train row" if self.holdout is None else f"held out: {self.holdout}",
            "shots": self.shots,
            "warmup_rounds": self.rounds,
            "cold_entities": cold,
            "episodes": {split: asdict(value) for split, value in counts.items()},
            "meta_tasks": asdict(meta),
            "scenarios": per_scenario,
        }


def phase_prefixes(rounds: int) -> list[str]:
    """Metric prefixes of the cold phase and of each warm-up round: test, test/warm_a, test/warm_b, ..."""
    return ["test", *(f"test/warm_{string.ascii_lowercase[r]}" for r in range(rounds))]


def _check_declared(feature_map: FeatureMap, declared: dict[str, list[str]]) -> None:
    """Each declared attribute is a feature column of the dataset, neither an id nor both sides'."""
    columns = {*feature_map.categorical_names, *feature_map.numeric_names, *feature_map.text}
    ids = {feature_map.user, feature_map.item}
    for kind, names in declared.items():
        for name in names:
            if name in ids:
                raise UserError(
                    f"dataset.{kind}_features names {name}, an id column: list the {kind}'s attributes only"
                )
            if name not in columns:
                raise UserError(
                    f"dataset.{kind}_features names {name}, which is not a categorical, numeric or text column of "
                    f"the dataset (dataset.categorical / numeric / text): add it there or remove it from "
                    f"dataset.{kind}_features"
                )
    both = set(declared["user"]) & set(declared["item"])
    if both:
        raise UserError(
            f"dataset.user_features and dataset.item_features both name {', '.join(sorted(both))}: an attribute "
            "belongs to one side"
        )


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
