"""DropoutNet and MetaEmb (docs/methods.md §3.8): their mechanics on tiny hand-made tasks, and what
they learn on held-out users of the synthetic data."""

from __future__ import annotations

import dataclasses

import polars as pl
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from conftest import make_batch, make_model, trainer
from ssimctr.coldstart.base import Entity, Episodes
from ssimctr.coldstart.dropoutnet import DropoutNet, IdDropout
from ssimctr.coldstart.episodes import build_episodes
from ssimctr.coldstart.metaemb import MetaEmb
from ssimctr.coldstart.plain import PlainModel, own_logits
from ssimctr.config.coldstart import DropoutNetConfig, MetaEmbConfig
from ssimctr.config.schema import TrainerConfig
from ssimctr.data.batch import Batch
from ssimctr.data.datasplit import MemorySplit
from ssimctr.data.loaders import InMemoryLoader, batch_from_frame
from ssimctr.features.feature_map import CategoricalField, FeatureMap
from ssimctr.train.loop import validator

FIELD = 0  # the entity's id field of tiny_feature_map ("a", vocabulary 10)
ENTITY = Entity("user", FIELD, "a", (FIELD,))


def _defaults(schema) -> dict:
    """A method schema's defaults as keyword arguments (without _target_)."""
    return {f.name: f.default for f in dataclasses.fields(schema) if f.name != "_target_"}


def _metaemb(**overrides) -> MetaEmb:
    return MetaEmb(ENTITY, **{**_defaults(MetaEmbConfig), **overrides})


def _with_ids(batch: Batch, ids: torch.Tensor) -> Batch:
    cat = batch.cat.clone()
    cat[:, FIELD] = ids
    return dataclasses.replace(batch, cat=cat)


def _episodes(feature_map, support: list[int], query: list[int], seed: int = 0, cold: bool = True) -> Episodes:
    """Tasks with support[t] and query[t] random rows each (rows contiguous per task); the entity id
    is 0 when `cold`, else task t's own id t + 1."""
    s_task = torch.repeat_interleave(torch.arange(len(support)), torch.tensor(support))
    q_task = torch.repeat_interleave(torch.arange(len(query)), torch.tensor(query))
    s_batch = make_batch(feature_map, rows=len(s_task), seed=seed)
    q_batch = make_batch(feature_map, rows=len(q_task), seed=seed + 1)
    return Episodes(
        _with_ids(s_batch, torch.zeros_like(s_task) if cold else s_task + 1),
        s_task,
        _with_ids(q_batch, torch.zeros_like(q_task) if cold else q_task + 1),
        q_task,
        len(query),
    )


def _weights(*modules: torch.nn.Module) -> list[torch.Tensor]:
    return [value.detach().clone() for module in modules for value in module.state_dict().values()]


def _same(before: list[torch.Tensor], after: list[torch.Tensor]) -> bool:
    return len(before) == len(after) and all(torch.equal(b, a) for b, a in zip(before, after))


def _constant_validate(model) -> dict[str, float]:
    return {"val/auc/mean": 0.5}


def _settings(**overrides) -> TrainerConfig:
    return TrainerConfig(**{"epochs": 1, "patience": 1, "progress": False, "seed": 0, **overrides})


def _rows_of(batch: Batch, task: torch.Tensor, t: int) -> Batch:
    return batch.take(torch.nonzero(task == t).squeeze(1))


# --- DropoutNet -------------------------------------------------------------------------------


def test_schemas_give_exactly_the_keyword_arguments():
    assert isinstance(DropoutNet(ENTITY, **_defaults(DropoutNetConfig)), DropoutNet)
    assert isinstance(_metaemb(), MetaEmb)
    with pytest.raises(TypeError):
        DropoutNet(ENTITY)  # no defaults: the schema holds them
    with pytest.raises(TypeError):
        MetaEmb(ENTITY, alpha=0.1)


def test_dropoutnet_zeroes_the_entity_id_of_a_share_tau_of_each_batch_and_nothing_else(tiny_feature_map):
    data = make_batch(tiny_feature_map, rows=2000, seed=3)
    data = _with_ids(data, 1 + torch.arange(len(data)) % 9)  # no id is 0 to begin with
    kept = data.cat.clone()
    tau = 0.3
    plain = InMemoryLoader(data, 128, shuffle=True, seed=5)
    dropped = IdDropout(InMemoryLoader(data, 128, shuffle=True, seed=5), FIELD, tau, seed=11)
    assert len(dropped) == len(plain) and dropped.num_rows == len(data)
    zeroed = rows = 0
    for before, after in zip(plain, dropped):
        others = [f for f in range(before.cat.shape[1]) if f != FIELD]
        assert torch.equal(after.cat[:, others], before.cat[:, others])
        for name in ("num", "scenario", "label", "row_id"):
            assert torch.equal(getattr(after, name), getattr(before, name))
        changed = after.cat[:, FIELD] != before.cat[:, FIELD]
        assert (after.cat[changed, FIELD] == 0).all()  # a dropped id becomes the OOV id, nothing else
        assert int(changed.sum()) == round(tau * len(before))
        zeroed, rows = zeroed + int(changed.sum()), rows + len(before)
    assert abs(zeroed / rows - tau) < 0.01
    assert torch.equal(data.cat, kept)  # the loader's rows are not modified in place
    again = IdDropout(InMemoryLoader(data, 128, shuffle=True, seed=5), FIELD, tau, seed=11)
    first = next(iter(IdDropout(InMemoryLoader(data, 128, shuffle=True, seed=5), FIELD, tau, seed=11)))
    assert torch.equal(next(iter(again)).cat, first.cat)  # seeded


@pytest.mark.parametrize("tau", [0.0, 0.5])
def test_dropoutnet_training_learns_the_missing_vector(tiny_feature_map, tau):
    data = make_batch(tiny_feature_map, rows=512, seed=1)
    data = _with_ids(data, 1 + torch.arange(len(data)) % 9)  # no row has the OOV id
    torch.manual_seed(0)
    model = make_model("dnn", tiny_feature_map, hidden=[16])
    missing = model.embedding.table.weight[0].detach().clone()  # field 0's OOV row
    fits = DropoutNet(ENTITY, tau=tau).train(
        model, MemorySplit(data), None, _constant_validate, _settings(batch_size=64), None
    )
    assert len(fits) == 1 and fits[0].train_rows == len(data)
    # only dropped ids reach the OOV row: without dropout it stays as initialised
    assert torch.equal(model.embedding.table.weight[0], missing) == (tau == 0.0)


def test_dropoutnet_scores_cold_rows_with_the_missing_vector_and_does_not_adapt(tiny_feature_map):
    torch.manual_seed(0)
    model = make_model("dnn", tiny_feature_map, hidden=[16])
    method = DropoutNet(ENTITY, tau=0.5)
    few = _episodes(tiny_feature_map, [3, 3, 3], [4, 5, 6], seed=2)
    zero = dataclasses.replace(few, support=few.support.slice(0, 0), support_task=few.support_task[:0])
    missing = model.embedding.table.weight[0].detach()
    with model.embedding.replacing(FIELD, missing.expand(len(few.query), -1)):
        expected = own_logits(model, few.query)
    torch.testing.assert_close(method.predict_cold(model, zero), expected)
    torch.testing.assert_close(method.predict_cold(model, few), expected)  # the support rows change nothing
    with torch.no_grad():
        model.embedding.table.weight[0] += 0.5
    assert not torch.allclose(method.predict_cold(model, zero), expected)
    warm = few.query.slice(0, 5)
    torch.testing.assert_close(method.predict_warm(model, warm), own_logits(model, warm))


# --- MetaEmb: mechanics -----------------------------------------------------------------------


def test_metaemb_objective_matches_a_hand_computation(tiny_feature_map):
    torch.manual_seed(0)
    model = make_model("dnn", tiny_feature_map, hidden=[16]).eval()
    alpha, eta = 0.3, 0.5  # a large step, so that φ' is visibly not φ⁰
    method = _metaemb(alpha=alpha, cold_lr=eta)
    generator = method.build_generator(model)
    tasks = _episodes(tiny_feature_map, [3, 2, 4], [5, 2, 3], seed=4, cold=False)
    terms = method.meta_loss(model, tasks.support, tasks.support_task, tasks.query, tasks.query_task, 3)

    def by_hand(second_order: bool):
        cold, warm, phi0s, phi1s = [], [], [], []
        for t in range(3):
            a, b = _rows_of(tasks.support, tasks.support_task, t), _rows_of(tasks.query, tasks.query_task, t)
            fields = model.embedding(a).detach()
            assert fields.shape == (len(a), model.embedding.num_fields, model.embedding.dim)
            phi0 = generator(fields).mean(0)
            with model.embedding.replacing(FIELD, phi0.expand(len(a), -1)):
                cold_loss = F.binary_cross_entropy_with_logits(model(a), a.label)
            (gradient,) = torch.autograd.grad(cold_loss, phi0, create_graph=second_order, retain_graph=True)
            phi1 = phi0 - eta * gradient
            with model.embedding.replacing(FIELD, phi1.expand(len(b), -1)):
                warm_loss = F.binary_cross_entropy_with_logits(model(b), b.label)
            cold, warm, phi0s, phi1s = cold + [cold_loss], warm + [warm_loss], phi0s + [phi0], phi1s + [phi1]
        loss = alpha * torch.stack(cold).mean() + (1 - alpha) * torch.stack(warm).mean()
        return loss, torch.stack(cold).mean(), torch.stack(warm).mean(), torch.stack(phi0s), torch.stack(phi1s)

    loss, cold, warm, phi0, phi1 = by_hand(second_order=True)
    torch.testing.assert_close(terms.cold, cold)
    torch.testing.assert_close(terms.warm, warm)
    torch.testing.assert_close(terms.loss, loss)
    torch.testing.assert_close(terms.phi0, phi0)
    torch.testing.assert_close(terms.phi1, phi1)  # φ' = φ⁰ − η ∇_{φ⁰} L_a, per entity
    assert (terms.phi1 - terms.phi0).abs().max() > 1e-4
    # the generator learns through the step (second order), exactly as by hand
    ours = torch.autograd.grad(terms.loss, list(generator.parameters()), retain_graph=True)
    hand = torch.autograd.grad(loss, list(generator.parameters()))
    for mine, theirs in zip(ours, hand):
        torch.testing.assert_close(mine, theirs)
    first_order = torch.autograd.grad(by_hand(second_order=False)[0], list(generator.parameters()))
    assert any(not torch.allclose(mine, theirs) for mine, theirs in zip(ours, first_order))


def test_metaemb_meta_phase_trains_only_the_generator(tiny_feature_map):
    torch.manual_seed(0)
    model = make_model("dnn", tiny_feature_map, hidden=[16], batch_norm=True, dropout=0.3).train()
    method = _metaemb(meta_epochs=2, tasks_per_batch=2, generator_lr=1e-2)
    generator = method.build_generator(model)
    tasks = _episodes(tiny_feature_map, [3] * 5, [4, 6, 2, 5, 3], seed=6, cold=False)
    model_before, generator_before = _weights(model), _weights(generator)
    steps: list[int] = []
    result = method.meta_train(
        model, tasks, _constant_validate, _settings(), log=lambda metrics, step: steps.append(step), first_step=3
    )
    assert _same(model_before, _weights(model))  # parameters and buffers (batch-norm statistics) bit-identical
    assert all(p.grad is None for p in model.parameters())
    assert not _same(generator_before, _weights(generator))
    assert model.training and all(p.requires_grad for p in model.parameters())  # restored after the phase
    assert steps == [4, 5]
    assert len(result.epochs) == 2 and result.kept_epoch == 2
    assert result.train_rows == 2 * (15 + 20) and result.train_seconds > 0
    assert {"val/auc/mean", "meta/loss", "meta/cold_loss", "meta/warm_loss"} <= set(result.epochs[0])


def test_metaemb_train_is_plain_training_then_the_meta_phase(tiny_feature_map):
    data = make_batch(tiny_feature_map, rows=256, seed=8)
    tasks = _episodes(tiny_feature_map, [3] * 4, [5] * 4, seed=9, cold=False)
    torch.manual_seed(0)
    model = make_model("dnn", tiny_feature_map, hidden=[16])
    torch.manual_seed(0)
    plain = make_model("dnn", tiny_feature_map, hidden=[16])
    settings = _settings(epochs=2, patience=2, batch_size=64)
    steps: list[int] = []
    fits = _metaemb(meta_epochs=3).train(
        model, MemorySplit(data), tasks, _constant_validate, settings, lambda m, step: steps.append(step)
    )
    PlainModel(ENTITY).train(plain, MemorySplit(data), tasks, _constant_validate, settings, None)
    assert _same(_weights(plain), _weights(model))  # the base model is the plain model
    assert [len(f.epochs) for f in fits] == [2, 3] and steps == [1, 2, 3, 4, 5]
    assert fits[1].train_rows == 3 * (12 + 20)


def test_zero_shot_prediction_never_updates_a_weight_nor_reads_a_label(tiny_feature_map):
    torch.manual_seed(0)
    model = make_model("dnn", tiny_feature_map, hidden=[16], batch_norm=True, dropout=0.3).train()
    metaemb = _metaemb()
    generator = metaemb.build_generator(model)
    episodes = _episodes(tiny_feature_map, [0, 0, 0], [4, 5, 6], seed=2)
    assert episodes.shots == 0
    flipped = dataclasses.replace(episodes, query=dataclasses.replace(episodes.query, label=1 - episodes.query.label))
    for method in (DropoutNet(ENTITY, tau=0.5), metaemb):
        before = _weights(model, generator)
        logits = method.predict_cold(model, episodes)
        assert logits.shape == (len(episodes.query),)
        assert _same(before, _weights(model, generator))
        assert all(p.grad is None for p in [*model.parameters(), *generator.parameters()])
        torch.testing.assert_close(method.predict_cold(model, flipped), logits)


def test_metaemb_zero_shot_generates_each_entity_embedding_from_its_query_rows(tiny_feature_map):
    torch.manual_seed(0)
    model = make_model("dnn", tiny_feature_map, hidden=[16])
    method = _metaemb()
    generator = method.build_generator(model)
    episodes = _episodes(tiny_feature_map, [0, 0], [3, 5], seed=5)
    expected = []
    for t in range(2):
        rows = _rows_of(episodes.query, episodes.query_task, t)
        with torch.no_grad():
            phi = generator(model.embedding(rows)).mean(0)
        with model.embedding.replacing(FIELD, phi.expand(len(rows), -1)):
            expected.append(own_logits(model, rows))
    torch.testing.assert_close(method.predict_cold(model, episodes), torch.cat(expected))
    assert not torch.allclose(torch.cat(expected), PlainModel(ENTITY).predict_cold(model, episodes))


def test_metaemb_few_shot_warm_up_changes_predictions_and_leaves_the_model_untouched(tiny_feature_map):
    torch.manual_seed(0)
    model = make_model("dnn", tiny_feature_map, hidden=[16]).eval()
    eta = 0.5
    warmed = _metaemb(cold_lr=eta, warmup_steps=2)
    generator = warmed.build_generator(model)
    unwarmed = _metaemb(cold_lr=eta, warmup_steps=0)
    unwarmed.generator = generator
    few = _episodes(tiny_feature_map, [3, 4, 2], [4, 5, 6], seed=7)
    zero = dataclasses.replace(few, support=few.support.slice(0, 0), support_task=few.support_task[:0])
    before = _weights(model, generator)
    adapted = warmed.predict_cold(model, few)
    assert _same(before, _weights(model, generator))
    assert not torch.allclose(adapted, unwarmed.predict_cold(model, few))
    assert not torch.allclose(adapted, warmed.predict_cold(model, zero))
    # by hand: φ⁰ from the support rows, two steps on the entity's mean support BCE, then the query rows
    expected = []
    for t in range(3):
        support = _rows_of(few.support, few.support_task, t)
        query = _rows_of(few.query, few.query_task, t)
        with torch.no_grad():
            phi = generator(model.embedding(support)).mean(0)
        for _ in range(2):
            phi = phi.detach().requires_grad_()
            with model.embedding.replacing(FIELD, phi.expand(len(support), -1)):
                loss = F.binary_cross_entropy_with_logits(model(support), support.label)
            phi = phi - eta * torch.autograd.grad(loss, phi)[0]
        with model.embedding.replacing(FIELD, phi.detach().expand(len(query), -1)):
            expected.append(own_logits(model, query))
    torch.testing.assert_close(adapted, torch.cat(expected))


# --- learning: held-out users of the synthetic data -------------------------------------------

HOLDOUT = 0.2
LEARNING = dict(epochs=5, patience=5, batch_size=512, progress=False)
META = dict(meta_epochs=10, tasks_per_batch=50)  # the 20% of users held out leave ~460 meta tasks


@pytest.fixture(scope="module")
def held_out_users(prepared_synthetic) -> dict[str, float]:
    """Cold-query AUC of none / dropoutnet / metaemb (and MetaEmb's meta losses) trained on the same
    warm rows with the same seed: a seeded 20% of the train split's users leave training, and their
    train rows, with user_id made out of vocabulary, are the zero-shot evaluation."""
    fm = prepared_synthetic.feature_map
    frames = {name: pl.read_parquet(prepared_synthetic.split_path(name)) for name in ("train", "val")}
    keys = frames["train"].select("user_key").unique().sort("user_key").sample(fraction=HOLDOUT, seed=0)
    warm = frames["train"].join(keys, on="user_key", how="anti")
    out_of_vocabulary = pl.lit(0, dtype=frames["train"]["user_id"].dtype).alias("user_id")
    cold = frames["train"].join(keys, on="user_key", how="semi").with_columns(out_of_vocabulary)
    assert cold.height > 3000 and (cold["user_id"] == 0).all()
    episodes, _ = build_episodes(cold, "user_key", 0, fm)
    meta_tasks, _ = build_episodes(warm, "user_key", 5, fm)
    val = batch_from_frame(frames["val"].join(keys, on="user_key", how="anti"), fm)
    validate = validator(InMemoryLoader(val, 4096, shuffle=False), fm.scenario_names)
    names = fm.categorical_names
    entity = Entity("user", names.index("user_id"), "user_id", (names.index("user_id"), names.index("item_id")))
    methods = {
        "none": PlainModel(entity),
        "dropoutnet": DropoutNet(entity, **_defaults(DropoutNetConfig)),
        "metaemb": MetaEmb(entity, **{**_defaults(MetaEmbConfig), **META}),
    }
    label = episodes.query.label.numpy()
    results: dict[str, float] = {}
    for name, method in methods.items():
        torch.manual_seed(0)
        model = make_model("dnn", fm, hidden=[16])
        fits = method.train(
            model, MemorySplit(batch_from_frame(warm, fm)), meta_tasks, validate, trainer(3e-3, **LEARNING), None
        )
        results[name] = roc_auc_score(label, method.predict_cold(model, episodes).numpy())
        if name == "metaemb":
            assert len(fits) == 2 and fits[1].train_rows == META["meta_epochs"] * (
                len(meta_tasks.support) + len(meta_tasks.query)
            )
            results["meta/first"], results["meta/last"] = (fits[1].epochs[i]["meta/loss"] for i in (0, -1))
    print({key: round(value, 4) for key, value in results.items()})
    return results


@pytest.mark.slow
def test_dropoutnet_beats_the_plain_model_on_held_out_users(held_out_users):
    assert 0.52 < held_out_users["none"] < held_out_users["dropoutnet"]


@pytest.mark.slow
def test_metaemb_generator_learns_on_the_meta_tasks(held_out_users):
    assert held_out_users["meta/last"] < held_out_users["meta/first"]


# --- learning: a taste that only an entity's rows together reveal ---------------------------------

TASTE_USERS, COLD_USERS, ROWS_PER_USER, META_SHOTS = 300, 100, 40, 5


def _taste_rows(feature_map, ids: torch.Tensor, taste: torch.Tensor, g: torch.Generator) -> Batch:
    """ROWS_PER_USER rows per user: an item of kind equal to the user's taste (±1) with probability
    0.8, else the other kind; click ~ Bernoulli(sigmoid(2 · taste · kind))."""
    t = taste.repeat_interleave(ROWS_PER_USER)
    kind = torch.where(torch.rand(len(t), generator=g) < 0.8, t, -t)
    rows = len(t)
    return Batch(
        cat=torch.stack([ids.repeat_interleave(ROWS_PER_USER), (kind > 0).long() + 1], 1),
        num=torch.zeros(rows, len(feature_map.numeric)),
        scenario=torch.arange(rows) % feature_map.num_scenarios,
        label=(torch.rand(rows, generator=g) < torch.sigmoid(2 * t * kind)).float(),
        row_id=torch.arange(rows),
    )


def test_metaemb_recovers_a_cold_users_taste_from_its_rows_where_the_plain_model_cannot():
    """The known answer: a user's taste (±1) is in no feature of any one row, but its items lean to
    its taste, so the mean of the generator over the user's rows reveals it. The base model learns
    each warm user's taste in its id embedding; a cold user's rows, scored one by one with the OOV
    row, carry no information (every kind clicks equally often over users): the plain model and
    DropoutNet stay at AUC 0.5, the oracle is about 0.82."""
    feature_map = FeatureMap(
        categorical=(CategoricalField("user", TASTE_USERS + 1), CategoricalField("kind", 3)),
        numeric=(),
        scenario_names=("s0", "s1"),
        scenario_column="scenario",
        label_column="click",
    )
    g = torch.Generator().manual_seed(0)
    taste = torch.where(torch.rand(TASTE_USERS, generator=g) < 0.5, 1.0, -1.0)
    ids = torch.arange(1, TASTE_USERS + 1)
    train, val = _taste_rows(feature_map, ids, taste, g), _taste_rows(feature_map, ids, taste, g)
    cold_taste = torch.where(torch.rand(COLD_USERS, generator=g) < 0.5, 1.0, -1.0)
    cold = _taste_rows(feature_map, torch.zeros(COLD_USERS, dtype=torch.long), cold_taste, g)
    task = torch.arange(TASTE_USERS).repeat_interleave(ROWS_PER_USER)
    first = torch.nonzero(torch.arange(len(task)) % ROWS_PER_USER < META_SHOTS).squeeze(1)
    later = torch.nonzero(torch.arange(len(task)) % ROWS_PER_USER >= META_SHOTS).squeeze(1)
    meta_tasks = Episodes(train.take(first), task[first], train.take(later), task[later], TASTE_USERS)
    cold_task = torch.arange(COLD_USERS).repeat_interleave(ROWS_PER_USER)
    zero_shot = Episodes(cold.slice(0, 0), cold_task[:0], cold, cold_task, COLD_USERS)
    entity = Entity("user", 0, "user", (0,))
    validate = validator(InMemoryLoader(val, 4096, shuffle=False), feature_map.scenario_names)
    settings = trainer(3e-2, epochs=30, patience=30, batch_size=128, progress=False)
    methods = {
        "none": PlainModel(entity),
        "dropoutnet": DropoutNet(entity, **_defaults(DropoutNetConfig)),
        "metaemb": MetaEmb(entity, **{**_defaults(MetaEmbConfig), "meta_epochs": 20, "tasks_per_batch": 50}),
    }
    cold_auc, warm_auc = {}, {}
    for name, method in methods.items():
        torch.manual_seed(0)
        model = make_model("dnn", feature_map, hidden=[16])
        fits = method.train(model, MemorySplit(train), meta_tasks, validate, settings, None)
        warm_auc[name] = fits[0].val["val/auc/mean"]
        cold_auc[name] = roc_auc_score(cold.label.numpy(), method.predict_cold(model, zero_shot).numpy())
    assert warm_auc["none"] > 0.78  # the base model learned the warm users' tastes
    assert abs(cold_auc["none"] - 0.5) < 0.03 and abs(cold_auc["dropoutnet"] - 0.5) < 0.03
    assert cold_auc["metaemb"] > 0.75
