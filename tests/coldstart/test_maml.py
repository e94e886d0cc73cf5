"""MAML and MeLU (ssimctr/coldstart/maml.py, docs/methods.md §3.8): the batched inner loop against an
explicit per-task one, first- and second-order outer gradients, MeLU's frozen embeddings and masked
ids, zero-shot prediction, the attribute check, and an end-to-end run on the synthetic data."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import polars as pl
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from conftest import make_batch, make_model
from ssimctr.coldstart import maml
from ssimctr.coldstart.base import Attributes, Entity, Episodes
from ssimctr.coldstart.episodes import build_episodes
from ssimctr.coldstart.maml import Maml, Melu, MetaBatch, TaskIndex, stack
from ssimctr.config.coldstart import MamlConfig, MeluConfig
from ssimctr.config.models import MODEL_SCHEMAS
from ssimctr.config.schema import TrainerConfig
from ssimctr.data.batch import Batch
from ssimctr.data.datasplit import MemorySplit
from ssimctr.data.loaders import batch_from_frame
from ssimctr.errors import UserError
from ssimctr.features.feature_map import CategoricalField, FeatureMap
from ssimctr.metrics import auc
from ssimctr.models.base import MultiScenarioModel

ENTITY = Entity("user", 0, "a", (0, 1))  # tiny_feature_map: fields a and b are the ids, c the attribute


def method(cls=Maml, **overrides):
    """A method with its schema's defaults and `overrides`."""
    schema = MamlConfig if cls is Maml else MeluConfig
    values = {f.name: f.default for f in dataclasses.fields(schema) if f.name != "_target_"}
    return cls(ENTITY, **{**values, **overrides})


def tasks_of(feature_map: FeatureMap, shots: int, queries: list[int], seed: int = 0, rounds: int = 1) -> Episodes:
    """Episodes of len(queries) tasks, `rounds` rounds of `shots` support rows each (no round when shots
    is 0), queries[t] query rows for task t."""
    rounds = rounds if shots else 0
    support = make_batch(feature_map, rows=shots * rounds * len(queries), seed=seed)
    query = make_batch(feature_map, rows=sum(queries), seed=seed + 1)
    return Episodes(
        support,
        torch.arange(len(queries)).repeat_interleave(shots * rounds),
        query,
        torch.arange(len(queries)).repeat_interleave(torch.tensor(queries)),
        len(queries),
        Attributes(cat=(2,)).blank(make_batch(feature_map, rows=len(queries), seed=seed + 2)),
        rounds,
    )


def stacked(episodes: Episodes) -> Batch:
    return stack(episodes.support, TaskIndex(episodes).support)


def task_rows(batch: Batch, t: int) -> Batch:
    """Task t of a stacked batch as a plain batch."""
    return Batch(
        **{f.name: getattr(batch, f.name)[t] for f in dataclasses.fields(Batch) if getattr(batch, f.name) is not None}
    )


def as_double(batch: Batch) -> Batch:
    return dataclasses.replace(batch, num=batch.num.double(), label=batch.label.double())


def reference_adapt(
    model, support: Batch, lr: float, steps: int, create_graph: bool, adapts=lambda name: True, start=None
):
    """θ' by an explicit, unbatched inner loop on one task with torch.autograd, every adapted parameter
    (the whole id table included) as a dense copy; from `start` (a previous θ') or θ."""
    current = dict(model.named_parameters()) if start is None else dict(start)
    names = [name for name in current if adapts(name)]
    for _ in range(steps):
        loss = F.binary_cross_entropy_with_logits(functional_call(model, current, (support,)), support.label)
        grads = torch.autograd.grad(loss, [current[name] for name in names], create_graph=create_graph)
        current = {**current, **{name: current[name] - lr * g for name, g in zip(names, grads)}}
    return current


def effective_table(model, adapted: maml.Adapted, t: int) -> torch.Tensor:
    """Task t's adapted id table: θ_table plus its sparse delta on the rows its support looked up."""
    table = model.embedding.table.weight.detach().clone()
    rows = adapted.rows[t]
    return table.index_add(0, rows[rows >= 0], adapted.delta[t][rows >= 0])


def masked(batch: Batch) -> Batch:
    cat = batch.cat.clone()
    cat[..., list(ENTITY.id_fields)] = 0
    return dataclasses.replace(batch, cat=cat)


def dnn(feature_map, seed: int = 0, double: bool = True):
    torch.manual_seed(seed)
    model = make_model("dnn", feature_map, hidden=[16])
    return model.double() if double else model


def state(model) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def assert_unchanged(model, before: dict[str, torch.Tensor]) -> None:
    after = model.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)


# 1. the inner step: per task, its own support rows only ------------------------------------------------


def test_batched_inner_step_equals_each_task_alone_and_leaves_the_model(tiny_feature_map):
    model = dnn(tiny_feature_map)
    model.eval()
    learner = method(inner_lr=0.5, inner_steps=2)
    episodes = tasks_of(tiny_feature_map, shots=4, queries=[2, 2, 2])
    support = as_double(stacked(episodes))
    before = state(model)
    with learner.installed(model):
        adapted = learner.adapt(model, support)
        changed = dataclasses.replace(support, cat=support.cat.clone(), label=support.label.clone())
        changed.cat[0] = torch.flip(changed.cat[0], [0]) % 3
        changed.label[0] = 1 - changed.label[0]
        adapted_changed = learner.adapt(model, changed)
    assert_unchanged(model, before)

    table = model.embedding.table.weight
    for t in range(3):
        reference = reference_adapt(model, task_rows(support, t), 0.5, 2, create_graph=False)
        for name, value in adapted.dense.items():
            torch.testing.assert_close(value[t], reference[name].detach(), rtol=1e-9, atol=1e-12)
            assert not torch.equal(value[t], dict(model.named_parameters())[name]), name
        torch.testing.assert_close(effective_table(model, adapted, t), reference[maml.TABLE].detach())
        # the table changes on the rows this task's support rows look up, and nowhere else
        moved = (effective_table(model, adapted, t) != table).any(1)
        looked_up = maml._table_ids(model.embedding, support.cat[t], support.scenario[t]).unique()
        assert set(torch.nonzero(moved).squeeze(1).tolist()) == set(looked_up.tolist())
    # other tasks' copies do not depend on task 0's support rows
    for t in (1, 2):
        for name, value in adapted.dense.items():
            torch.testing.assert_close(adapted_changed.dense[name][t], value[t], rtol=0, atol=0)
        torch.testing.assert_close(effective_table(model, adapted_changed, t), effective_table(model, adapted, t))
    assert not torch.equal(adapted_changed.dense["mlp.mlp.output.weight"][0], adapted.dense["mlp.mlp.output.weight"][0])


def test_zero_inner_steps_keep_theta(tiny_feature_map):
    model = dnn(tiny_feature_map)
    learner = method(inner_steps=0)
    adapted = learner.adapt(model, as_double(stacked(tasks_of(tiny_feature_map, 3, [1, 1]))))
    for name, parameter in model.named_parameters():
        if name != maml.TABLE:
            torch.testing.assert_close(adapted.dense[name], parameter.detach().expand_as(adapted.dense[name]))
    assert not adapted.delta.any()


def test_query_sample_stays_in_each_task(tiny_feature_map):
    episodes = tasks_of(tiny_feature_map, 2, [1, 3, 20, 5])
    index = TaskIndex(episodes).sample_query(4, torch.Generator().manual_seed(0))
    assert index.shape == (4, 4)
    assert all(bool((episodes.query_task[index[t]] == t).all()) for t in range(4))
    assert len(set(index[2].tolist())) == 4  # enough rows: without replacement
    assert set(index[0].tolist()) == {0}


# 2. first-order MAML on a two-parameter model, by hand ----------------------------------------------


class Scalar(MultiScenarioModel):
    """z = w·(e_a + e_scenario) + b with 1-d embeddings: every gradient is short enough to write out."""

    def __init__(self, feature_map: FeatureMap) -> None:
        super().__init__(feature_map, 1, 1, True)
        self.w = nn.Parameter(torch.tensor(0.7, dtype=torch.double))
        self.b = nn.Parameter(torch.tensor(-0.2, dtype=torch.double))

    def towers(self, batch: Batch) -> torch.Tensor:
        return (self.w * self.embedding(batch).sum((1, 2)) + self.b).unsqueeze(1)


def scalar_task() -> tuple[Scalar, FeatureMap, Batch, Batch]:
    feature_map = FeatureMap(categorical=(CategoricalField("a", 3),), scenario_names=("s",))
    model = Scalar(feature_map)
    with torch.no_grad():
        model.embedding.table.weight.copy_(torch.tensor([[0.3], [-0.5], [0.9], [0.1]]))
    model.double()

    def rows(ids, labels):
        n = len(ids)
        return Batch(
            torch.tensor(ids).unsqueeze(1),
            torch.zeros(n, 0, dtype=torch.double),
            torch.zeros(n, dtype=torch.long),
            torch.tensor(labels, dtype=torch.double),
            torch.arange(n),
        )

    return model, feature_map, rows([1, 1, 2], [1.0, 0.0, 1.0]), rows([1, 0], [1.0, 0.0])


def hand_loss(table, w, b, batch: Batch) -> torch.Tensor:
    """The same model written out: table rows 0..2 for field a, row 3 for the scenario."""
    z = w * (table[batch.cat[:, 0]] + table[3]).squeeze(1) + b
    return F.binary_cross_entropy_with_logits(z, batch.label)


def test_first_order_outer_gradient_by_hand():
    model, _, support, query = scalar_task()
    alpha = 0.3
    learner = method(inner_lr=alpha, inner_steps=1, first_order=True)
    theta = [p.detach().clone().requires_grad_() for p in (model.embedding.table.weight, model.w, model.b)]
    inner = torch.autograd.grad(hand_loss(*theta, support), theta)
    adapted = [(p - alpha * g).detach().requires_grad_() for p, g in zip(theta, inner)]
    expected = torch.autograd.grad(hand_loss(*adapted, query), adapted)  # FOMAML: ∇_θ' L_Q(θ')

    with learner.installed(model):
        batch = MetaBatch(stack(support, torch.arange(3).view(1, 3)), stack(query, torch.arange(2).view(1, 2)))
        learner.meta_loss(model, batch).backward()
    for parameter, want in zip((model.embedding.table.weight, model.w, model.b), expected):
        torch.testing.assert_close(parameter.grad, want)
    assert model.embedding.table.weight.grad[2].abs() == 0  # row 2 is in S only; FOMAML sees only L_Q


# 3. second order: through the inner step -------------------------------------------------------------


@pytest.mark.parametrize("steps", [1, 2])
def test_second_order_matches_autograd_through_an_explicit_inner_loop(tiny_feature_map, steps):
    model = dnn(tiny_feature_map)
    model.eval()
    episodes = tasks_of(tiny_feature_map, shots=4, queries=[5, 5, 5], seed=3)
    support = as_double(stacked(episodes))
    query = as_double(stack(episodes.query, torch.arange(15).view(3, 5)))
    parameters = dict(model.named_parameters())

    grads = {}
    for first_order in (False, True):
        learner = method(inner_lr=0.5, inner_steps=steps, first_order=first_order)
        model.zero_grad()
        with learner.installed(model):
            learner.meta_loss(model, MetaBatch(support, query)).backward()
        grads[first_order] = {name: p.grad.clone() for name, p in parameters.items()}

    losses = []
    for t in range(3):
        adapted = reference_adapt(model, task_rows(support, t), 0.5, steps, create_graph=True)
        rows = task_rows(query, t)
        losses.append(F.binary_cross_entropy_with_logits(functional_call(model, adapted, (rows,)), rows.label))
    expected = torch.autograd.grad(torch.stack(losses).mean(), list(parameters.values()))
    for (name, _), want in zip(parameters.items(), expected):
        torch.testing.assert_close(grads[False][name], want.to_dense(), rtol=1e-7, atol=1e-10, msg=name)
    differs = [name for name in parameters if not torch.allclose(grads[False][name], grads[True][name], atol=1e-8)]
    assert maml.TABLE in differs and "mlp.mlp.hidden.0.weight" in differs


# 4. MeLU: embeddings fixed in the local update, ids masked --------------------------------------------


def test_melu_adapts_only_decision_layers_and_masks_ids(tiny_feature_map):
    model = dnn(tiny_feature_map)
    learner = method(Melu, inner_lr=0.5)
    episodes = tasks_of(tiny_feature_map, shots=4, queries=[3, 6, 2])
    support = as_double(stacked(episodes))
    with learner.installed(model):
        adapted = learner.adapt(model, support)
    names = [name for name, _ in model.named_parameters()]
    assert set(adapted.dense) == {name for name in names if not name.startswith("embedding.")}
    assert adapted.delta is None  # every embedding.* parameter is the shared θ in every task's copy
    for t in range(3):  # the same as an explicit local update of the decision layers on masked rows
        reference = reference_adapt(
            model, masked(task_rows(support, t)), 0.5, 1, False, adapts=lambda n: not n.startswith("embedding.")
        )
        for name in names:
            value = adapted.dense[name][t] if name in adapted.dense else dict(model.named_parameters())[name]
            torch.testing.assert_close(value, reference[name].detach(), msg=name)

    episodes = dataclasses.replace(episodes, support=as_double(episodes.support), query=as_double(episodes.query))
    other = dataclasses.replace(
        episodes,
        support=dataclasses.replace(episodes.support, cat=_new_ids(episodes.support.cat, tiny_feature_map)),
        query=dataclasses.replace(episodes.query, cat=_new_ids(episodes.query.cat, tiny_feature_map)),
    )
    torch.testing.assert_close(learner.predict_cold(model, other), learner.predict_cold(model, episodes))
    torch.testing.assert_close(learner.predict_warm(model, other.query), learner.predict_warm(model, episodes.query))
    maml_learner = method(Maml, inner_lr=0.5)  # ids do matter without masking
    for mine, theirs in zip(maml_learner.predict_cold(model, other), maml_learner.predict_cold(model, episodes)):
        assert not torch.allclose(mine, theirs)

    # a MeLU meta step never reaches an id's embedding row (only the OOV rows of the id fields)
    model.train()
    model.zero_grad()
    query = as_double(stack(episodes.query, torch.tensor([[0, 1, 2], [3, 4, 5], [9, 10, 9]])))
    with learner.installed(model):
        learner.meta_loss(model, MetaBatch(support, query)).backward()
    grad = model.embedding.table.weight.grad
    offsets = model.embedding.offsets
    for field in ENTITY.id_fields:
        size = tiny_feature_map.categorical[field].vocab_size
        assert grad[offsets[field]].abs().sum() > 0
        assert not grad[offsets[field] + 1 : offsets[field] + size].any()


def _new_ids(cat: torch.Tensor, feature_map: FeatureMap) -> torch.Tensor:
    cat = cat.clone()
    for field in ENTITY.id_fields:
        cat[:, field] = (cat[:, field] + 1) % feature_map.categorical[field].vocab_size
    return cat


# 5. zero-shot and weights -----------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [Maml, Melu])
def test_zero_shot_is_the_plain_or_masked_forward_and_prediction_never_trains(tiny_feature_map, cls):
    model = dnn(tiny_feature_map, double=False)
    learner = method(cls, inner_lr=0.5)
    zero_shot = tasks_of(tiny_feature_map, shots=0, queries=[3, 4, 1])
    before = state(model)
    (out,) = learner.predict_cold(model, zero_shot)
    model.eval()
    with torch.no_grad():
        expected = model(zero_shot.query if cls is Maml else masked(zero_shot.query))
    torch.testing.assert_close(out, expected)
    few_shot = tasks_of(tiny_feature_map, shots=3, queries=[3, 4, 1])
    cold, adapted = learner.predict_cold(model, few_shot)
    torch.testing.assert_close(cold, expected)  # the cold phase reads no support row
    assert adapted.shape == (8,) and torch.isfinite(adapted).all()
    assert not torch.allclose(
        adapted,
        learner.predict_cold(
            model, dataclasses.replace(few_shot, support=make_batch(tiny_feature_map, rows=9, seed=7))
        )[1],
    )
    assert_unchanged(model, before)
    assert all(p.grad is None for p in model.parameters())


def test_few_shot_prediction_equals_each_task_adapted_alone(tiny_feature_map, monkeypatch):
    monkeypatch.setattr(maml, "EVAL_ROWS", 8)  # several groups of tasks, padded query rows
    model = dnn(tiny_feature_map)
    model.eval()
    learner = method(inner_lr=0.5, inner_steps=2)
    queries = [1, 7, 3, 3, 2, 5]
    episodes = tasks_of(tiny_feature_map, shots=2, queries=queries, seed=5)
    order = torch.randperm(sum(queries), generator=torch.Generator().manual_seed(0))  # query rows in any order
    episodes = dataclasses.replace(
        episodes,
        support=as_double(episodes.support),
        query=as_double(episodes.query.take(order)),
        query_task=episodes.query_task[order],
    )
    _, out = learner.predict_cold(model, episodes)
    for t in range(len(queries)):
        rows = torch.nonzero(episodes.query_task == t).squeeze(1)
        support = episodes.support.take(torch.nonzero(episodes.support_task == t).squeeze(1))
        adapted = reference_adapt(model, support, 0.5, 2, create_graph=False)
        with torch.no_grad():
            expected = functional_call(model, adapted, (episodes.query.take(rows),))
        torch.testing.assert_close(out[rows], expected.float(), msg=f"task {t}")


@pytest.mark.parametrize("cls", [Maml, Melu])
def test_warm_up_rounds_continue_from_the_previous_rounds_parameters(tiny_feature_map, monkeypatch, cls):
    """Round r adapts each task's θ' of round r − 1 on the round's own rows (support rows r·K..(r+1)·K − 1);
    the id table's change of round a stays in round b (MAML), every lookup sees it."""
    monkeypatch.setattr(maml, "EVAL_ROWS", 8)
    model = dnn(tiny_feature_map)
    model.eval()
    learner = method(cls, inner_lr=0.5, inner_steps=2)
    queries = [2, 5, 3]
    episodes = tasks_of(tiny_feature_map, shots=2, queries=queries, seed=3, rounds=3)
    episodes = dataclasses.replace(episodes, support=as_double(episodes.support), query=as_double(episodes.query))
    phases = learner.predict_cold(model, episodes)
    assert len(phases) == 4
    adapts = (lambda name: True) if cls is Maml else (lambda name: not name.startswith("embedding."))
    view = (lambda b: b) if cls is Maml else masked
    for t in range(len(queries)):
        support = episodes.support.take(torch.nonzero(episodes.support_task == t).squeeze(1))
        query = view(episodes.query.take(torch.nonzero(episodes.query_task == t).squeeze(1)))
        current = dict(model.named_parameters())
        for r in range(3):
            block = view(support.slice(2 * r, 2 * r + 2))
            current = reference_adapt(model, block, 0.5, 2, create_graph=False, adapts=adapts, start=current)
            with torch.no_grad():
                expected = functional_call(model, current, (query,))
            rows = torch.nonzero(episodes.query_task == t).squeeze(1)
            torch.testing.assert_close(phases[r + 1][rows], expected.float(), msg=f"task {t}, round {r}")


# 6. MeLU needs attributes -------------------------------------------------------------------------------


def test_melu_without_attribute_columns_is_a_user_error():
    feature_map = FeatureMap(
        categorical=(CategoricalField("user_id", 5), CategoricalField("item_id", 5)), scenario_names=("s0", "s1")
    )
    entity = Entity("user", 0, "user_id", (0, 1))
    values = {f.name: f.default for f in dataclasses.fields(MeluConfig) if f.name != "_target_"}
    learner = Melu(entity, **values)
    model = make_model("dnn", feature_map, hidden=[4])
    batch = make_batch(feature_map, rows=8)
    tasks = Episodes(batch.slice(0, 4), torch.arange(4), batch.slice(4, 8), torch.arange(4), 4, batch.slice(0, 4))
    settings = TrainerConfig(epochs=1, progress=False, seed=0)
    with pytest.raises(UserError, match=r"coldstart=melu needs user or item attribute columns besides .*user_id"):
        learner.train(model, MemorySplit(batch), tasks, lambda m: {"val/auc/mean": 0.5}, settings, None)
    Maml(entity, **values).train(model, MemorySplit(batch), tasks, lambda m: {"val/auc/mean": 0.5}, settings, None)


def test_options_are_checked():
    with pytest.raises(UserError, match="coldstart.tasks_per_batch=0"):
        method(tasks_per_batch=0)


@pytest.mark.parametrize("meta_improves", [False, True])
def test_the_base_model_competes_with_the_meta_epochs(tiny_feature_map, meta_improves):
    """Validation after base training (call 2) is the base model's; it is kept unless a meta epoch
    validates better."""
    batch = make_batch(tiny_feature_map, rows=64, seed=3)
    episodes = tasks_of(tiny_feature_map, shots=3, queries=[4, 4, 4, 4])
    settings = TrainerConfig(epochs=1, patience=2, progress=False, seed=0, batch_size=32)
    calls = []

    def validate(trained):
        calls.append(state(trained))
        best = len(calls) == (3 if meta_improves else 2)
        return {"val/auc/mean": 0.9 if best else 0.5}

    torch.manual_seed(0)
    model = make_model("dnn", tiny_feature_map, hidden=[8])
    learner = method(meta_epochs=2, meta_lr=0.05)
    fits = learner.train(model, MemorySplit(batch), episodes, validate, settings, None)
    assert len(calls) == 4 and fits[1].initial["val/auc/mean"] == 0.9 - 0.4 * meta_improves
    kept = calls[2] if meta_improves else calls[1]  # after meta epoch 1, or the base model
    assert_unchanged(model, kept)
    assert not all(torch.equal(calls[1][name], calls[2][name]) for name in kept)  # the meta epoch moved θ
    # no val/cold/* metric here: judged on trainer.monitor, and the run says whether the meta phase was kept
    assert learner.tags == {"meta_monitor": "val/auc/mean", "meta_kept": str(meta_improves).lower()}


def test_the_meta_phase_is_judged_on_the_cold_entities_val_rows(tiny_feature_map):
    """With val/cold/* among the metrics, a meta epoch is kept when the cold rows' AUC improves, whatever
    the AUC over every val row does."""
    batch = make_batch(tiny_feature_map, rows=64, seed=3)
    episodes = tasks_of(tiny_feature_map, shots=3, queries=[4, 4, 4, 4])
    settings = TrainerConfig(epochs=1, patience=2, progress=False, seed=0, batch_size=32)
    calls = []

    def validate(trained):
        calls.append(state(trained))
        meta = len(calls) > 2
        return {"val/auc/mean": 0.5 if meta else 0.9, "val/cold/auc/mean": 0.7 if meta else 0.6}

    torch.manual_seed(0)
    model = make_model("dnn", tiny_feature_map, hidden=[8])
    learner = method(meta_epochs=1, meta_lr=0.05)
    fits = learner.train(model, MemorySplit(batch), episodes, validate, settings, None)
    assert fits[1].kept_epoch == 1 and learner.tags == {"meta_monitor": "val/cold/auc/mean", "meta_kept": "true"}
    assert_unchanged(model, calls[2])


# every model works under torch.func -----------------------------------------------------------------------


@pytest.mark.parametrize("backbone", sorted(MODEL_SCHEMAS))
def test_every_backbone_meta_trains_and_adapts(tiny_feature_map, backbone):
    torch.manual_seed(0)
    model = make_model(backbone, tiny_feature_map)
    for cls in (Maml, Melu):
        learner = method(cls, inner_lr=0.1, inner_steps=2)
        episodes = tasks_of(tiny_feature_map, shots=3, queries=[4, 2, 5])
        model.train()
        before = state(model)
        query = stack(episodes.query, TaskIndex(episodes).sample_query(4, torch.Generator().manual_seed(0)))
        with learner.installed(model):
            loss = learner.meta_loss(model, MetaBatch(stacked(episodes), query))
        loss.backward()
        assert torch.isfinite(loss)
        assert_unchanged(model, before)  # buffers too: running statistics are per-task copies
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
        model.zero_grad()
        for out in learner.predict_cold(model, episodes):
            assert out.shape == (11,) and torch.isfinite(out).all()


# 7. end to end ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [Maml, Melu])
def test_train_then_few_shot_cold_prediction_on_synthetic_data(prepared_synthetic, cls):
    torch.manual_seed(0)
    fm = prepared_synthetic.feature_map
    names = fm.categorical_names
    field = names.index("user_id")
    entity = Entity("user", field, "user_id", (field, names.index("item_id")))
    values = {f.name: f.default for f in dataclasses.fields(MamlConfig) if f.name != "_target_"}
    learner = cls(entity, **values)
    train_frame = pl.read_parquet(prepared_synthetic.split_path("train"))
    meta_tasks, _ = build_episodes(train_frame, "user_key", 5, fm, entity.attributes)
    test_frame = pl.read_parquet(prepared_synthetic.split_path("test")).with_columns(pl.lit(0).alias("user_id"))
    cold, counts = build_episodes(test_frame, "user_key", 3, fm, entity.attributes, rounds=2)
    assert counts.tasks > 10
    model = make_model("dnn", fm, hidden=[16])
    val = batch_from_frame(pl.read_parquet(prepared_synthetic.split_path("val")), fm)
    seen = []

    def validate(trained):
        logits = learner.predict_warm(trained, val)
        return {"val/auc/mean": auc(val.label.numpy(), logits.numpy())}

    settings = TrainerConfig(epochs=1, progress=False, seed=0, batch_size=1024)
    fits = learner.train(
        model,
        MemorySplit(batch_from_frame(train_frame, fm)),
        meta_tasks,
        validate,
        settings,
        lambda metrics, step: seen.append(step),
    )
    assert len(fits) == 2 and seen == [1, 2]
    meta_fit = fits[1]
    assert meta_fit.train_rows == meta_tasks.num_tasks * (5 + values["query_rows"]) and meta_fit.train_seconds > 0
    assert len(meta_fit.epochs) == 1 and math.isfinite(meta_fit.epochs[0]["train/loss"])
    before = state(model)
    phases = learner.predict_cold(model, cold)
    assert_unchanged(model, before)
    assert len(phases) == 3 and all(logits.shape == (counts.query_rows,) for logits in phases)
    for logits in phases:
        value = auc(cold.query.label.numpy(), logits.numpy())
        assert np.isfinite(value) and 0.0 < value < 1.0
