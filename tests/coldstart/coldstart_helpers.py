"""What the cold-start method tests share: methods with their schema's defaults, hand-made episodes, and
a known-answer problem where a cold entity's taste is in its own attributes only."""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass

import torch

from conftest import make_batch, trainer
from ssimctr.coldstart.base import Attributes, Entity, Episodes
from ssimctr.config.coldstart import COLDSTART_SCHEMAS
from ssimctr.config.schema import TrainerConfig
from ssimctr.data.batch import Batch
from ssimctr.features.feature_map import CategoricalField, FeatureMap


def defaults(schema: type) -> dict:
    """A method schema's defaults as keyword arguments (without _target_)."""
    return {f.name: f.default for f in dataclasses.fields(schema) if f.name != "_target_"}


def build(name: str, entity: Entity, **overrides):
    """Method `name` of the coldstart group with its schema's defaults and `overrides`."""
    schema = COLDSTART_SCHEMAS[name]
    module, cls = schema._target_.rsplit(".", 1)
    return getattr(importlib.import_module(module), cls)(entity, **{**defaults(schema), **overrides})


def with_ids(batch: Batch, field: int, ids: torch.Tensor) -> Batch:
    cat = batch.cat.clone()
    cat[:, field] = ids
    return dataclasses.replace(batch, cat=cat)


def episodes_of(
    feature_map: FeatureMap,
    shots: int,
    rounds: int,
    queries: list[int],
    attributes: Attributes,
    field: int = 0,
    seed: int = 0,
) -> Episodes:
    """len(queries) tasks of random rows: `rounds` × `shots` support rows each, queries[t] query rows for
    task t, the entity id (column `field`) 0 everywhere (cold), a random profile blanked to `attributes`."""
    tasks = len(queries)
    support_task = torch.arange(tasks).repeat_interleave(shots * rounds)
    query_task = torch.arange(tasks).repeat_interleave(torch.tensor(queries))
    support = make_batch(feature_map, rows=len(support_task), seed=seed)
    query = make_batch(feature_map, rows=len(query_task), seed=seed + 1)
    profile = make_batch(feature_map, rows=tasks, seed=seed + 2)
    return Episodes(
        with_ids(support, field, torch.zeros_like(support_task)),
        support_task,
        with_ids(query, field, torch.zeros_like(query_task)),
        query_task,
        tasks,
        attributes.blank(profile),
        rounds if shots else 0,
    )


def settings(**overrides) -> TrainerConfig:
    return TrainerConfig(**{"epochs": 1, "patience": 1, "progress": False, "seed": 0, **overrides})


def weights(*modules: torch.nn.Module) -> list[torch.Tensor]:
    return [value.detach().clone() for module in modules for value in module.state_dict().values()]


def same(before: list[torch.Tensor], after: list[torch.Tensor]) -> bool:
    return len(before) == len(after) and all(torch.equal(b, a) for b, a in zip(before, after))


# --- the known answer: a taste in the entity's own attribute, nowhere in its rows -----------------------

GROUPS = 8


@dataclass(frozen=True)
class TasteProblem:
    """Users of GROUPS groups (a user attribute); a group's users share a taste t = ±1 (half the groups
    each). A row shows an item of kind ±1 (equally likely, whatever the user's taste) and is clicked with
    probability sigmoid(2·t·kind), so no row and no set of rows tells a user's taste: only its id (warm
    users) or its group (everyone) does. The rows the model trains and is scored on carry group 0 (the
    attribute is not a model input), the profiles carry the group: for a cold user (id 0), a method can
    only know its taste by reading its profile. The plain model is at AUC 0.5 on cold users, the oracle
    (knowing t) at about 0.88."""

    feature_map: FeatureMap
    entity: Entity
    train: Batch
    val: Batch
    meta_tasks: Episodes
    cold: Episodes  # zero-shot: every cold row a query row

    def settings(self) -> TrainerConfig:
        return trainer(3e-2, epochs=30, patience=30, batch_size=128, progress=False)


def taste_problem(warm_users: int = 300, cold_users: int = 100, rows: int = 40, meta_shots: int = 5) -> TasteProblem:
    feature_map = FeatureMap(
        categorical=(
            CategoricalField("user", warm_users + 1),
            CategoricalField("group", GROUPS + 1),
            CategoricalField("kind", 3),
        ),
        numeric=(),
        scenario_names=("s0", "s1"),
        scenario_column="scenario",
        label_column="click",
    )
    g = torch.Generator().manual_seed(0)
    group_taste = torch.tensor([1.0, -1.0]).repeat(GROUPS // 2)

    def users(n: int) -> torch.Tensor:
        return torch.randint(1, GROUPS + 1, (n,), generator=g)

    def rows_of(ids: torch.Tensor, groups: torch.Tensor) -> Batch:
        taste = group_taste[groups - 1].repeat_interleave(rows)
        kind = torch.where(torch.rand(len(taste), generator=g) < 0.5, 1.0, -1.0)
        n = len(taste)
        return Batch(
            cat=torch.stack([ids.repeat_interleave(rows), torch.zeros(n, dtype=torch.long), (kind > 0).long() + 1], 1),
            num=torch.zeros(n, 0),
            scenario=torch.arange(n) % feature_map.num_scenarios,
            label=(torch.rand(n, generator=g) < torch.sigmoid(2 * taste * kind)).float(),
            row_id=torch.arange(n),
        )

    def profiles(groups: torch.Tensor) -> Batch:
        n = len(groups)
        return Batch(
            cat=torch.stack([torch.zeros(n, dtype=torch.long), groups, torch.zeros(n, dtype=torch.long)], 1),
            num=torch.zeros(n, 0),
            scenario=torch.zeros(n, dtype=torch.long),
            label=torch.zeros(n),
            row_id=torch.zeros(n, dtype=torch.long),
        )

    warm_groups = users(warm_users)
    ids = torch.arange(1, warm_users + 1)
    train, val = rows_of(ids, warm_groups), rows_of(ids, warm_groups)
    task = torch.arange(warm_users).repeat_interleave(rows)
    first = torch.nonzero(torch.arange(len(task)) % rows < meta_shots).squeeze(1)
    later = torch.nonzero(torch.arange(len(task)) % rows >= meta_shots).squeeze(1)
    meta_tasks = Episodes(
        train.take(first), task[first], train.take(later), task[later], warm_users, profiles(warm_groups)
    )
    cold_groups = users(cold_users)
    cold = rows_of(torch.zeros(cold_users, dtype=torch.long), cold_groups)
    cold_task = torch.arange(cold_users).repeat_interleave(rows)
    zero_shot = Episodes(cold.slice(0, 0), cold_task[:0], cold, cold_task, cold_users, profiles(cold_groups), 0)
    entity = Entity("user", 0, "user", (0,), Attributes(cat=(1,)), ("group",))
    return TasteProblem(feature_map, entity, train, val, meta_tasks, zero_shot)
