"""DropoutNet (docs/methods.md §3.8): which ids are dropped and to what, what trains, how cold rows are
scored and warmed up."""

from __future__ import annotations

import pytest
import torch
from coldstart_helpers import build, episodes_of, settings, with_ids

from conftest import make_batch, make_model
from ssimctr.coldstart.base import Attributes, Entity, own_logits
from ssimctr.coldstart.dropoutnet import IdDropout
from ssimctr.data.datasplit import MemorySplit
from ssimctr.data.loaders import InMemoryLoader
from ssimctr.errors import UserError

FIELD, OTHER = 0, 1  # tiny_feature_map: "a" (vocabulary 10) is the user id, "b" (7) the item id
ENTITY = Entity("user", FIELD, "a", (FIELD, OTHER), Attributes(cat=(2,)), ("c",))


def _constant_validate(model) -> dict[str, float]:
    return {"val/auc/mean": 0.5}


def _known_ids(feature_map, rows: int, seed: int):
    """Random rows whose user and item ids are never 0."""
    data = make_batch(feature_map, rows=rows, seed=seed)
    data = with_ids(data, FIELD, 1 + torch.arange(rows) % 9)
    return with_ids(data, OTHER, 1 + torch.arange(rows) % 6)


@pytest.mark.parametrize("fields", [(FIELD,), (FIELD, OTHER)])
def test_dropout_zeroes_the_ids_of_a_share_tau_of_each_batch_and_nothing_else(tiny_feature_map, fields):
    data = _known_ids(tiny_feature_map, 2000, seed=3)
    kept = data.cat.clone()
    tau = 0.3
    plain = InMemoryLoader(data, 128, shuffle=True, seed=5)
    dropped = IdDropout(InMemoryLoader(data, 128, shuffle=True, seed=5), fields, tau, seed=11)
    assert len(dropped) == len(plain) and dropped.num_rows == len(data)
    zeroed = {field: 0 for field in fields}
    rows = both = 0
    for before, after in zip(plain, dropped):
        others = [f for f in range(before.cat.shape[1]) if f not in fields]
        assert torch.equal(after.cat[:, others], before.cat[:, others])
        for name in ("num", "scenario", "label", "row_id"):
            assert torch.equal(getattr(after, name), getattr(before, name))
        for field in fields:
            changed = after.cat[:, field] != before.cat[:, field]
            assert (after.cat[changed, field] == 0).all()  # a dropped id becomes the OOV id, nothing else
            assert int(changed.sum()) == round(tau * len(before))
            zeroed[field] += int(changed.sum())
        both += int((after.cat[:, list(fields)] == 0).all(1).sum())
        rows += len(before)
    assert all(abs(count / rows - tau) < 0.01 for count in zeroed.values())
    if len(fields) == 2:  # drawn apart per field: both ids dropped on about tau² of the rows, not tau
        assert abs(both / rows - tau**2) < 0.02
    assert torch.equal(data.cat, kept)  # the loader's rows are not modified in place
    again = IdDropout(InMemoryLoader(data, 128, shuffle=True, seed=5), fields, tau, seed=11)
    first = next(iter(IdDropout(InMemoryLoader(data, 128, shuffle=True, seed=5), fields, tau, seed=11)))
    assert torch.equal(next(iter(again)).cat, first.cat)  # seeded


@pytest.mark.parametrize("tau", [0.0, 0.5])
def test_training_learns_the_missing_vector(tiny_feature_map, tau):
    data = _known_ids(tiny_feature_map, 512, seed=1)
    torch.manual_seed(0)
    model = make_model("dnn", tiny_feature_map, hidden=[16])
    table = model.embedding.table.weight
    user_oov, item_oov = table[0].detach().clone(), table[model.embedding.offsets[OTHER]].detach().clone()
    fits = build("dropoutnet", ENTITY, tau=tau).train(
        model, MemorySplit(data), None, _constant_validate, settings(batch_size=64), None
    )
    assert len(fits) == 1 and fits[0].train_rows == len(data)
    # only dropped ids reach an OOV row: without dropout it stays as initialised; drop=entity keeps the item's
    assert torch.equal(table[0], user_oov) == (tau == 0.0)
    assert torch.equal(table[model.embedding.offsets[OTHER]], item_oov)


def test_the_papers_form_drops_both_ids_and_feeds_zeros(tiny_feature_map):
    data = _known_ids(tiny_feature_map, 512, seed=1)
    torch.manual_seed(0)
    model = make_model("dnn", tiny_feature_map, hidden=[16])
    before = model.embedding.table.weight.detach().clone()
    method = build("dropoutnet", ENTITY, drop="both", missing="zeros")
    method.train(model, MemorySplit(data), None, _constant_validate, settings(batch_size=64), None)
    table, offsets = model.embedding.table.weight, model.embedding.offsets
    oov = offsets[[FIELD, OTHER]]
    assert not table[oov].any()  # both missing vectors are zeros, and stay so through training
    assert not torch.equal(table[oov[0] + 1 : oov[1]], before[oov[0] + 1 : oov[1]])  # ids themselves trained
    assert not model.embedding._forward_hooks  # the mask is removed after training
    # so a cold row is scored with the zero vector in the id's place
    cold = with_ids(make_batch(tiny_feature_map, rows=12, seed=4), FIELD, torch.zeros(12, dtype=torch.long))
    with model.embedding.replacing(FIELD, torch.zeros(12, model.embedding.dim)):
        expected = own_logits(model, cold)
    torch.testing.assert_close(own_logits(model, cold), expected)


def test_options_are_checked():
    with pytest.raises(UserError, match="coldstart.tau=1.5"):
        build("dropoutnet", ENTITY, tau=1.5)
    with pytest.raises(UserError, match="coldstart.drop=items"):
        build("dropoutnet", ENTITY, drop="items")
    with pytest.raises(UserError, match="coldstart.missing=mean"):
        build("dropoutnet", ENTITY, missing="mean")


def test_cold_rows_are_scored_with_the_missing_vector_then_warmed_up(tiny_feature_map):
    torch.manual_seed(0)
    model = make_model("dnn", tiny_feature_map, hidden=[16])
    method = build("dropoutnet", ENTITY, warmup_lr=0.05, warmup_steps=3)
    episodes = episodes_of(tiny_feature_map, 3, 2, [4, 5, 6], ENTITY.attributes, seed=2)
    missing = model.embedding.table.weight[0].detach()
    with model.embedding.replacing(FIELD, missing.expand(len(episodes.query), -1)):
        expected = own_logits(model, episodes.query)
    cold, warm_a, warm_b = method.predict_cold(model, episodes)
    torch.testing.assert_close(cold, expected)
    torch.testing.assert_close(cold, own_logits(model, episodes.query))  # what a cold id looks up anyway
    assert not torch.allclose(warm_a, cold) and not torch.allclose(warm_b, warm_a)
    with torch.no_grad():
        model.embedding.table.weight[0] += 0.5
    assert not torch.allclose(method.predict_cold(model, episodes)[0], expected)
