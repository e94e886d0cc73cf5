"""trainer/regularizer and trainer/lr_schedule: the embedding L2 on looked-up rows, id dropout, the loss
that applies them inside `fit`, and the learning-rate schedule on plateau."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from conftest import compose, make_batch, make_model, optimizer_for, trainer
from ssimctr.config.optim import EmbeddingL2Config, IdDropoutConfig, PlateauConfig
from ssimctr.data.batch import Batch
from ssimctr.data.loaders import InMemoryLoader
from ssimctr.train.loop import fit
from ssimctr.train.regularizers import EmbeddingL2, IdDropout, RegularizedLoss, regularized
from ssimctr.train.schedule import ReduceOnPlateau
from ssimctr.train.sharing import FixedSharing

TABLE = "embedding.table.weight"


@pytest.fixture
def id_feature_map(tiny_feature_map):
    """tiny_feature_map whose fields a and b are the user and item ids."""
    return dataclasses.replace(tiny_feature_map, user="a", item="b")


def test_embedding_l2_is_the_mean_over_rows_of_the_squared_norms_of_their_lookups(tiny_feature_map):
    torch.manual_seed(0)
    model = make_model("dnn", tiny_feature_map, hidden=[8])
    batch = make_batch(tiny_feature_map, rows=6)
    table = model.embedding.table.weight.detach()
    offsets = model.embedding.offsets
    expected = 0.0
    for i in range(len(batch)):  # every categorical field, then the scenario field
        ids = [int(batch.cat[i, f] + offsets[f]) for f in range(batch.cat.shape[1])]
        ids.append(int(batch.scenario[i] + offsets[-1]))
        expected += sum(float(table[r].square().sum()) for r in ids)
    penalty = EmbeddingL2(l2=0.3).penalty(model, batch)
    assert penalty.item() == pytest.approx(0.3 * expected / len(batch), rel=1e-5)
    assert EmbeddingL2(l2=0.0).penalty(model, batch) is None  # off: nothing computed


def test_embedding_l2_pulls_each_looked_up_row_by_its_count_and_leaves_the_rest(tiny_feature_map):
    """∂/∂e_r of λ·(1/B)·Σ_i Σ_f ||e_{x_if}||² is 2λ·n_r/B·e_r (n_r: lookups of row r in the batch), as a
    sparse gradient of the looked-up rows only."""
    torch.manual_seed(0)
    model = make_model("dnn", tiny_feature_map, hidden=[8])
    batch = make_batch(tiny_feature_map, rows=6)
    EmbeddingL2(l2=0.5).penalty(model, batch).backward()
    grad = model.embedding.table.weight.grad
    assert grad.is_sparse
    ids = torch.cat([batch.cat, batch.scenario.unsqueeze(1)], 1) + model.embedding.offsets
    counts = torch.bincount(ids.flatten(), minlength=model.embedding.table.num_embeddings).float()
    expected = 2 * 0.5 * counts.unsqueeze(1) / len(batch) * model.embedding.table.weight.detach()
    torch.testing.assert_close(grad.to_dense(), expected)
    assert (counts == 0).any() and (counts > 1).any()  # untouched and repeated rows both checked


def test_id_dropout_sets_only_id_fields_to_oov_at_its_rate_and_repeats_with_its_seed(id_feature_map):
    model = make_model("dnn", id_feature_map, hidden=[8])
    ids = model.embedding.id_fields
    assert ids == (0, 1)
    batch = make_batch(id_feature_map, rows=4000)
    batch = dataclasses.replace(batch, cat=batch.cat.clamp(min=1))  # no OOV to start with
    dropout = IdDropout(rate=0.3)
    dropout.bind(model, seed=7)
    dropped = dropout.prepare(batch)
    others = [f for f in range(batch.cat.shape[1]) if f not in ids]
    assert torch.equal(dropped.cat[:, others], batch.cat[:, others])
    zeroed = dropped.cat[:, list(ids)] == 0
    assert torch.equal(dropped.cat[:, list(ids)][~zeroed], batch.cat[:, list(ids)][~zeroed])
    assert zeroed.float().mean(0).sub(0.3).abs().max() < 0.03  # per field, about `rate`
    assert (zeroed[:, 0] != zeroed[:, 1]).any()  # the fields drop independently
    assert torch.equal(batch.cat.clamp(min=1), batch.cat)  # the given batch is not changed
    again = IdDropout(rate=0.3)
    again.bind(model, seed=7)
    assert torch.equal(again.prepare(batch).cat, dropped.cat)
    state = dropout.state_dict()
    following = dropout.prepare(batch).cat
    again.load_state_dict(state)
    assert torch.equal(again.prepare(batch).cat, following)  # a checkpoint resumes the same draws
    off = IdDropout(rate=0.0)
    off.bind(model, seed=7)
    assert off.prepare(batch) is batch


class Recording:
    """A loss that records the batches it sees."""

    def __init__(self) -> None:
        self.seen: list[Batch] = []

    def __call__(self, model, batch):
        self.seen.append(batch)
        return FixedSharing(0.0)(model, batch)


def test_the_regularized_loss_adds_the_penalties_to_the_loss_of_the_prepared_batch(id_feature_map):
    torch.manual_seed(0)
    model = make_model("dnn", id_feature_map, hidden=[8])
    batch = make_batch(id_feature_map, rows=50)
    inner = Recording()
    loss = regularized(inner, [IdDropout(rate=0.5), EmbeddingL2(l2=0.2)], model, trainer())
    assert isinstance(loss, RegularizedLoss) and loss.__qualname__ == "Recording"  # checkpoints name the loss
    value = loss(model, batch)
    [seen] = inner.seen
    assert not torch.equal(seen.cat, batch.cat)  # the loss saw the dropped ids
    expected = FixedSharing(0.0)(model, seen) + EmbeddingL2(l2=0.2).penalty(model, seen)
    torch.testing.assert_close(value, expected)
    assert regularized(inner, [], model, trainer()) is inner


def test_fit_applies_the_trainers_regularizers_to_training_only(id_feature_map):
    """trainer.regularizer's objects reach the training loss of `fit` (the model is trained on dropped ids),
    never the validation: a model that cannot see ids in training but is validated on them."""
    torch.manual_seed(0)
    model = make_model("dnn", id_feature_map, hidden=[8])
    batch = make_batch(id_feature_map, rows=64)
    batch = dataclasses.replace(batch, cat=batch.cat.clamp(min=1))
    inner = Recording()
    settings = trainer(0.01, epochs=1, progress=False, regularizer={"id_dropout": IdDropoutConfig(rate=0.999)})
    validated: list[Batch] = []

    def validate(m):
        validated.append(batch)
        return {"val/auc/mean": 0.5}

    fit(
        model,
        inner,
        optimizer_for(model.parameters(), 0.01),
        InMemoryLoader(batch, 16, shuffle=False),
        validate,
        settings,
    )
    ids = list(model.embedding.id_fields)
    assert len(inner.seen) == 4 and all((seen.cat[:, ids] == 0).float().mean() > 0.99 for seen in inner.seen)
    assert validated and (batch.cat[:, ids] > 0).all()


def test_the_default_experiment_turns_the_regularizers_and_the_schedule_on():
    settings = compose().trainer
    assert list(settings.regularizer) == ["id_dropout"]
    assert settings.lr_schedule._target_.endswith("ReduceOnPlateau")
    none = compose("trainer/regularizer=[]", "trainer/lr_schedule=constant").trainer
    assert not none.regularizer and none.lr_schedule._target_.endswith("ConstantLr")


def test_plateau_lowers_every_rate_after_patience_epochs_without_improvement():
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([{"params": [a], "lr": 1e-2}, {"params": [b], "lr": 0.0}])
    schedule = ReduceOnPlateau(factor=0.1, patience=2, min_lr=1e-4)
    rates = []
    for stale in (0, 1, 2, 3, 4, 0, 1, 2, 4, 6):
        schedule.after_epoch(optimizer, stale)
        rates.append(optimizer.param_groups[0]["lr"])
    assert rates == pytest.approx([1e-2, 1e-2, 1e-3, 1e-3, 1e-4, 1e-4, 1e-4, 1e-4, 1e-4, 1e-4])
    assert optimizer.param_groups[1]["lr"] == 0.0  # a frozen group stays frozen (not raised to min_lr)


def test_fit_lowers_the_rate_after_an_epoch_without_improvement(tiny_feature_map):
    torch.manual_seed(0)
    model = make_model("dnn", tiny_feature_map, hidden=[8])
    batch = make_batch(tiny_feature_map, rows=32)
    optimizer = optimizer_for(model.parameters(), 0.01)
    values = iter([0.6, 0.7, 0.65, 0.66, 0.72])
    rates = []

    def validate(m):
        rates.append(optimizer.param_groups[0]["lr"])
        return {"val/auc/mean": next(values)}

    settings = trainer(0.01, epochs=5, patience=5, progress=False, lr_schedule=PlateauConfig(factor=0.5, patience=1))
    fit(model, FixedSharing(0.0), optimizer, InMemoryLoader(batch, 16, shuffle=False), validate, settings)
    assert rates == pytest.approx([0.01, 0.01, 0.01, 0.005, 0.0025])  # epochs 3 and 4 did not improve on 0.7


def test_embedding_l2_config_builds_through_the_trainer_group():
    config = compose("trainer/regularizer=[embedding_l2]", "trainer.regularizer.embedding_l2.l2=0.05")
    config = config.trainer.regularizer.embedding_l2
    assert config.l2 == 0.05 and config._target_.endswith("EmbeddingL2")
    assert EmbeddingL2Config(l2=0.05).l2 == 0.05
