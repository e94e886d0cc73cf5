"""The evaluation protocol, for every method (docs/methods.md §2.2, §3.8): the cold phase and each
warm-up round score the query rows without reading any query label or any query row but the one scored,
the cold phase reads no support row, a round reads its own support rows, and nothing changes the model."""

from __future__ import annotations

import dataclasses

import polars as pl
import pytest
import torch
from coldstart_helpers import build, episodes_of, same, weights

from conftest import make_batch, make_model
from ssimctr.coldstart.base import Attributes, Entity, Episodes
from ssimctr.coldstart.episodes import build_episodes
from ssimctr.config.coldstart import COLDSTART_SCHEMAS

ENTITY = Entity("user", 0, "a", (0, 1), Attributes(cat=(2,), num=(1,)), ("c", "y"))
FAST = {  # steps large enough that every round visibly moves each method's cold-entity parameters
    "none": {"warmup_lr": 0.1, "warmup_steps": 2},
    "dropoutnet": {"warmup_lr": 0.1, "warmup_steps": 2},
    "metaemb": {"warmup_lr": 0.1, "warmup_steps": 2},
    "cvar": {"warmup_lr": 0.1, "warmup_steps": 2},
    "maml": {"inner_lr": 0.5, "inner_steps": 2},
    "melu": {"inner_lr": 0.5, "inner_steps": 2},
}


def _ready(name: str, model):
    """Method `name`, with its own networks built where it has some (as training would)."""
    method = build(name, ENTITY, **FAST[name])
    if name == "metaemb":
        method.build(model)
    elif name == "cvar":
        method.build(model)
    return method


def _flip(batch, which: torch.Tensor | None = None):
    label = batch.label.clone()
    rows = slice(None) if which is None else which
    label[rows] = 1 - label[rows]
    return dataclasses.replace(batch, label=label)


@pytest.mark.parametrize("name", sorted(COLDSTART_SCHEMAS))
def test_no_phase_reads_a_query_label_or_another_query_row(tiny_feature_map, name):
    torch.manual_seed(0)
    model = make_model("dnn", tiny_feature_map, hidden=[16])
    method = _ready(name, model)
    episodes = episodes_of(tiny_feature_map, 2, 2, [3, 4, 5], ENTITY.attributes, seed=1)
    before = weights(model)
    phases = method.predict_cold(model, episodes)
    assert len(phases) == 3 and same(before, weights(model))
    assert all(p.grad is None for p in model.parameters())
    # every query label flipped: the same scores in every phase
    torch.testing.assert_close(
        method.predict_cold(model, dataclasses.replace(episodes, query=_flip(episodes.query))), phases
    )
    # task 0's query rows replaced by other rows (features and labels): the other tasks' scores are the same
    others = torch.nonzero(episodes.query_task != 0).squeeze(1)
    replaced = make_batch(tiny_feature_map, rows=len(episodes.query), seed=9)
    mixed = torch.where((episodes.query_task == 0).unsqueeze(1), replaced.cat, episodes.query.cat)
    mixed_num = torch.where((episodes.query_task == 0).unsqueeze(1), replaced.num, episodes.query.num)
    query = dataclasses.replace(episodes.query, cat=mixed, num=mixed_num)
    for mine, theirs in zip(method.predict_cold(model, dataclasses.replace(episodes, query=query)), phases):
        torch.testing.assert_close(mine[others], theirs[others])


@pytest.mark.parametrize("name", sorted(COLDSTART_SCHEMAS))
def test_the_cold_phase_reads_no_support_row_and_each_round_reads_its_own(tiny_feature_map, name):
    torch.manual_seed(0)
    model = make_model("dnn", tiny_feature_map, hidden=[16]).eval()
    method = _ready(name, model)
    episodes = episodes_of(tiny_feature_map, 2, 2, [3, 4, 5], ENTITY.attributes, seed=1)
    cold, warm_a, warm_b = method.predict_cold(model, episodes)
    # round b's rows (the second pair of each task's support rows) with flipped labels: only warm-b moves
    second = torch.tensor([[2, 3], [6, 7], [10, 11]]).flatten()
    flipped = method.predict_cold(model, dataclasses.replace(episodes, support=_flip(episodes.support, second)))
    torch.testing.assert_close(flipped[0], cold)
    torch.testing.assert_close(flipped[1], warm_a)
    assert not torch.allclose(flipped[2], warm_b)
    # round a's rows flipped: warm-a and warm-b move, the cold phase does not
    first = torch.tensor([[0, 1], [4, 5], [8, 9]]).flatten()
    flipped = method.predict_cold(model, dataclasses.replace(episodes, support=_flip(episodes.support, first)))
    torch.testing.assert_close(flipped[0], cold)
    assert not torch.allclose(flipped[1], warm_a) and not torch.allclose(flipped[2], warm_b)
    # no support row at all: the same cold phase
    zero = dataclasses.replace(episodes, support=episodes.support.slice(0, 0), support_task=episodes.support_task[:0])
    (alone,) = method.predict_cold(model, dataclasses.replace(zero, rounds=0))
    torch.testing.assert_close(alone, cold)


def test_episodes_split_each_entity_in_time_order_into_rounds_and_query_rows(prepared_synthetic):
    """build_episodes: support = the first rounds × K rows in time, round r = rows r·K..(r+1)·K − 1, the rest
    are query rows, entities with at most rounds × K rows left out; the profile is the first row's
    attribute values and nothing else."""
    fm = prepared_synthetic.feature_map
    frame = pl.read_parquet(prepared_synthetic.split_path("test"))
    # an attribute that differs between an entity's rows, so that which row the profile reads shows
    frame = frame.with_columns((pl.col("row_id") % 4 + 1).cast(pl.Int32).alias("user_city"))
    names = fm.categorical_names
    attributes = Attributes(cat=(names.index("user_age"), names.index("user_city")), num=(1,))
    episodes, counts = build_episodes(frame, "user_key", 2, fm, attributes, rounds=3)
    assert isinstance(episodes, Episodes) and episodes.shots == 2 and episodes.rounds == 3
    sizes = frame.group_by("user_key").len()
    assert counts.tasks == sizes.filter(pl.col("len") > 6).height == episodes.num_tasks
    assert counts.left_out_rows == sizes.filter(pl.col("len") <= 6)["len"].sum()
    times = dict(zip(frame["row_id"].to_list(), frame["ts"].to_list()))
    support_ids, query_ids = episodes.support.row_id.tolist(), episodes.query.row_id.tolist()
    assert not set(support_ids) & set(query_ids)
    for r in range(3):
        rows, task = episodes.round_rows(r)
        assert torch.equal(task, torch.arange(episodes.num_tasks).repeat_interleave(2))
        assert rows.row_id.tolist() == [
            support_ids[6 * t + 2 * r + k] for t in range(episodes.num_tasks) for k in (0, 1)
        ]
    for t in range(min(episodes.num_tasks, 20)):
        before = [times[i] for i, o in zip(support_ids, episodes.support_task.tolist()) if o == t]
        after = [times[i] for i, o in zip(query_ids, episodes.query_task.tolist()) if o == t]
        assert before == sorted(before) and after == sorted(after) and max(before) <= min(after)
        first = frame.filter(pl.col("row_id") == support_ids[6 * t])
        profile = episodes.profile.take(torch.tensor([t]))
        kept = [names.index("user_age"), names.index("user_city")]
        assert tuple(profile.cat[0, kept].tolist()) == first.select([names[i] for i in kept]).row(0)
        assert not profile.cat[0, [i for i in range(len(names)) if i not in kept]].any()  # ids, items, context: 0
        assert profile.num[0, 1].item() == pytest.approx(first[fm.numeric_names[1]].item())
        assert profile.num[0, 0] == 0 and profile.label[0] == 0 and profile.scenario[0] == 0
