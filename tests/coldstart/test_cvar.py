"""CVAR (docs/methods.md §3.8): its loss by hand, what trains, the cold phase from the profile's attributes
only, and each warm-up round's Adam step, encoding and decoding. Its learning test shares the known-answer
problem of MetaEmb's (test_metaemb.py)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from coldstart_helpers import build, episodes_of, same, settings, weights, with_ids

from conftest import make_batch, make_model
from ssimctr.coldstart.base import Attributes, Entity
from ssimctr.data.batch import Batch
from ssimctr.data.datasplit import MemorySplit
from ssimctr.errors import UserError

FIELD = 0  # tiny_feature_map: "a" the user id, "b" the item id, "c" the user's attribute; numeric "y" too
ATTRIBUTES = Attributes(cat=(2,), num=(1,))
ENTITY = Entity("user", FIELD, "a", (0, 1), ATTRIBUTES, ("c", "y"))
ATTRIBUTE_FIELDS = [2, 5]  # positions among the DNN's fields: a, b, c, the scenario, x, y


def _constant_validate(model) -> dict[str, float]:
    return {"val/auc/mean": 0.5}


def _built(feature_map, **overrides):
    torch.manual_seed(0)
    model = make_model("dnn", feature_map, hidden=[16])
    method = build("cvar", ENTITY, **overrides)
    return model, method, method.build(model)


def _warm_tasks(feature_map, queries: list[int], seed: int):
    """Meta tasks of warm entities: task t's rows carry its own id t + 1 (task 2's id is 0: out of vocabulary)."""
    episodes = episodes_of(feature_map, 2, 1, queries, ATTRIBUTES, FIELD, seed)
    ids = torch.arange(1, len(queries) + 1)
    ids[2] = 0
    return dataclasses.replace(
        episodes,
        support=with_ids(episodes.support, FIELD, ids[episodes.support_task]),
        query=with_ids(episodes.query, FIELD, ids[episodes.query_task]),
    )


def test_the_loss_matches_a_hand_computation(tiny_feature_map):
    model, method, networks = _built(tiny_feature_map, recon_weight=0.7, reg_weight=0.3)
    model.eval()
    tasks = _warm_tasks(tiny_feature_map, [3, 5, 2, 4], seed=2)
    rows = Batch.concat([tasks.support, tasks.query])
    owner = torch.cat([tasks.support_task, tasks.query_task])
    ids = torch.tensor([1, 2, 3, 4])
    torch.manual_seed(5)
    loss, bce, recon, reg = method.loss(model, ids, tasks.profile, rows, owner)

    torch.manual_seed(5)  # the same ε
    e = model.embedding.table.weight[ids].detach()  # field 0's rows start at offset 0
    mean_q, log_var_q = networks.encoder.mean(e), networks.encoder.log_var(e)
    x = model.embedding(tasks.profile).detach()[:, ATTRIBUTE_FIELDS].flatten(1)
    mean_p, log_var_p = networks.prior.mean(x), networks.prior.log_var(x)
    z = mean_q + torch.exp(log_var_q / 2) * torch.randn_like(mean_q)
    warmed = networks.decoder(z)
    per_entity = []
    for t in range(4):  # each entity's mean BCE over its rows, scored with its decoded embedding
        mine = rows.take(torch.nonzero(owner == t).squeeze(1))
        with model.embedding.replacing(FIELD, warmed[t].expand(len(mine), -1)):
            per_entity.append(F.binary_cross_entropy_with_logits(model(mine), mine.label))
    expected_bce = torch.stack(per_entity).mean()
    expected_recon = ((warmed - e) ** 2).sum(1).mean()
    sigma_q, sigma_p = torch.exp(log_var_q / 2), torch.exp(log_var_p / 2)
    expected_reg = (((mean_q - mean_p) ** 2).sum(1) + ((sigma_q - sigma_p) ** 2).sum(1)).mean()
    torch.testing.assert_close(bce, expected_bce)
    torch.testing.assert_close(recon, expected_recon)
    torch.testing.assert_close(reg, expected_reg)
    torch.testing.assert_close(loss, expected_bce + 0.7 * expected_recon + 0.3 * expected_reg)


def test_training_moves_only_cvars_networks_on_entities_with_a_known_id(tiny_feature_map):
    model, method, networks = _built(tiny_feature_map, cvar_epochs=2, tasks_per_batch=2)
    model.train()
    tasks = _warm_tasks(tiny_feature_map, [3, 5, 2, 4, 1], seed=1)  # task 2's id is out of vocabulary: skipped
    before, networks_before = weights(model), weights(networks)
    steps: list[int] = []
    result = method.fit_networks(model, tasks, _constant_validate, settings(), lambda m, s: steps.append(s), 4)
    assert same(before, weights(model)) and all(p.grad is None for p in model.parameters())
    assert model.training and all(p.requires_grad for p in model.parameters())  # restored
    assert not same(networks_before, weights(networks))
    assert steps == [5, 6] and result.kept_epoch == 2
    assert result.train_rows == 2 * (2 * 4 + 3 + 5 + 4 + 1)  # every row of the four known entities, twice
    assert {"val/auc/mean", "cvar/loss", "cvar/bce", "cvar/recon", "cvar/reg"} <= set(result.epochs[0])


def test_train_is_plain_training_then_cvars(tiny_feature_map):
    data = make_batch(tiny_feature_map, rows=256, seed=8)
    tasks = _warm_tasks(tiny_feature_map, [3, 5, 2, 4], seed=1)
    torch.manual_seed(0)
    model = make_model("dnn", tiny_feature_map, hidden=[16])
    torch.manual_seed(0)
    plain = make_model("dnn", tiny_feature_map, hidden=[16])
    trainer = settings(epochs=2, patience=2, batch_size=64)
    method = build("cvar", ENTITY, cvar_epochs=1)
    fits = method.train(model, MemorySplit(data), tasks, _constant_validate, trainer, None)
    build("none", ENTITY).train(plain, MemorySplit(data), tasks, _constant_validate, trainer, None)
    assert same(weights(plain), weights(model)) and [len(f.epochs) for f in fits] == [2, 1]


def test_the_cold_phase_decodes_the_priors_mean_of_the_profiles_attributes_only(tiny_feature_map):
    model, method, networks = _built(tiny_feature_map)
    episodes = episodes_of(tiny_feature_map, 2, 1, [3, 4, 5], ATTRIBUTES, seed=1)
    start = method.initial(model, episodes.profile)
    x = model.embedding(episodes.profile).detach()[:, ATTRIBUTE_FIELDS].flatten(1)
    expected = networks.decoder(networks.prior.mean(x))
    torch.testing.assert_close(start, expected)
    others = make_batch(tiny_feature_map, rows=3, seed=9)  # the profile's other values set: no change
    unblanked = dataclasses.replace(
        others,
        cat=torch.stack([others.cat[:, 0] + 1, others.cat[:, 1], episodes.profile.cat[:, 2]], 1),
        num=torch.stack([others.num[:, 0], episodes.profile.num[:, 1]], 1),
    )
    moved = dataclasses.replace(
        episodes,
        profile=unblanked,
        support=make_batch(tiny_feature_map, rows=len(episodes.support), seed=7),
        query=make_batch(tiny_feature_map, rows=len(episodes.query), seed=8),
    )
    torch.testing.assert_close(method.initial(model, moved.profile), start, rtol=0, atol=0)
    changed = dataclasses.replace(episodes.profile, cat=episodes.profile.cat.clone())
    changed.cat[:, 2] = (changed.cat[:, 2] + 1) % tiny_feature_map.categorical[2].vocab_size
    assert not torch.allclose(method.initial(model, changed), start)


def test_each_round_takes_adam_steps_then_encodes_and_decodes(tiny_feature_map):
    model, method, networks = _built(tiny_feature_map, warmup_lr=0.05, warmup_steps=2)
    model.eval()
    shots = 2
    episodes = episodes_of(tiny_feature_map, shots, 2, [4, 5, 6], ATTRIBUTES, seed=3)
    before = weights(model, networks)
    phases = method.predict_cold(model, episodes)
    assert len(phases) == 3 and same(before, weights(model, networks))
    start = method.initial(model, episodes.profile)
    for t in range(3):
        support = episodes.support.take(torch.nonzero(episodes.support_task == t).squeeze(1))
        rows = torch.nonzero(episodes.query_task == t).squeeze(1)
        query = episodes.query.take(rows)
        phi = start[t]
        for r in range(2):
            block = support.slice(shots * r, shots * (r + 1))
            phi = phi.detach().clone().requires_grad_()
            adam = torch.optim.Adam([phi], lr=0.05)
            for _ in range(2):
                adam.zero_grad()
                with model.embedding.replacing(FIELD, phi.expand(len(block), -1)):
                    F.binary_cross_entropy_with_logits(model(block), block.label).backward()
                adam.step()
            with torch.no_grad():  # encoded (the posterior's mean) and decoded
                phi = networks.decoder(networks.encoder.mean(phi))
                with model.embedding.replacing(FIELD, phi.expand(len(query), -1)):
                    expected = model(query)
            torch.testing.assert_close(phases[r + 1][rows], expected, msg=f"task {t}, round {r}")


def test_options_are_checked(tiny_feature_map):
    with pytest.raises(UserError, match="coldstart.latent_dim=0"):
        build("cvar", ENTITY, latent_dim=0)
    with pytest.raises(UserError, match="coldstart.recon_weight=-1"):
        build("cvar", ENTITY, recon_weight=-1.0)
    model = make_model("dnn", tiny_feature_map, hidden=[16])
    with pytest.raises(UserError, match=r"coldstart=cvar .* dataset.user_features declares none"):
        build("cvar", Entity("user", FIELD, "a", (0, 1))).train(model, None, None, _constant_validate, settings(), None)
