"""trainer.embedding_optimizer: the embedding tables' sparse gradients and the row-wise (lazy) Adam of
ssimctr.train.optim, against dense Adam."""

from __future__ import annotations

import io

import pytest
import torch

from conftest import REPO, make_batch, make_model
from ssimctr.config.schema import TrainerConfig
from ssimctr.errors import UserError
from ssimctr.models.layers.core import dense_gradients
from ssimctr.train.loop import make_optimizer
from ssimctr.train.optim import RowAdam
from ssimctr.train.sharing import sharing_loss

BACKBONES = sorted(path.stem for path in (REPO / "conf" / "backbone").glob("*.yaml"))


def loss_of(model, batch):
    return sharing_loss(model.towers(batch), batch.label, batch.scenario, 0.0)


def train_step(model, optimizer, batch) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss_of(model, batch).backward()
    optimizer.step()


def looked_up(model, batch) -> torch.Tensor:
    """The id-table rows `batch` looks up (categorical fields, then the scenario field)."""
    embedding = model.embedding
    ids = torch.cat([batch.cat, batch.scenario.unsqueeze(1)], 1) if embedding.scenario_feature else batch.cat
    return (ids + embedding.offsets).unique()


def untouched_mask(model, batch) -> torch.Tensor:
    mask = torch.ones(model.embedding.table.num_embeddings, dtype=torch.bool)
    mask[looked_up(model, batch)] = False
    return mask


def test_the_id_table_gets_sparse_gradients_and_only_its_touched_rows_change(tiny_feature_map):
    torch.manual_seed(0)
    model = make_model("dnn", tiny_feature_map, hidden=[8])
    optimizer = make_optimizer(model.parameters(), 0.01, 0.1, "sparse_adam")
    batch = make_batch(tiny_feature_map, rows=4)
    untouched = untouched_mask(model, batch)
    assert untouched.sum() > 5  # a batch of 4 rows leaves most of the 24 rows alone
    for _ in range(2):  # the table's moments are nonzero after the first step
        before = model.embedding.table.weight.detach().clone()
        optimizer.zero_grad(set_to_none=True)
        loss_of(model, batch).backward()
        assert model.embedding.table.weight.grad.is_sparse
        optimizer.step()
        after = model.embedding.table.weight.detach()
        assert torch.equal(after[untouched], before[untouched])  # bit-identical
        assert (after[~untouched] != before[~untouched]).any(1).all()
    other = make_batch(tiny_feature_map, rows=4, seed=5)  # rows of the first batch it does not look up
    resting = torch.zeros_like(untouched)
    resting[looked_up(model, batch)] = True
    resting[looked_up(model, other)] = False
    assert resting.any()
    before = model.embedding.table.weight.detach().clone()
    train_step(model, optimizer, other)
    assert torch.equal(model.embedding.table.weight.detach()[resting], before[resting])  # lazy: no momentum drift


def test_dense_adam_with_weight_decay_changes_untouched_rows(tiny_feature_map):
    torch.manual_seed(0)
    model = make_model("dnn", tiny_feature_map, hidden=[8])
    optimizer = make_optimizer(model.parameters(), 0.01, 0.1, "adam")
    batch = make_batch(tiny_feature_map, rows=4)
    untouched = untouched_mask(model, batch)
    before = model.embedding.table.weight.detach().clone()
    train_step(model, optimizer, batch)
    after = model.embedding.table.weight.detach()
    assert (after[untouched] != before[untouched]).any(1).all()


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_the_first_step_of_touched_rows_is_adams(tiny_feature_map, weight_decay):
    """The touched rows after one lazy step equal torch.optim.Adam (plain, not fused) run on those rows
    alone with their summed gradient; the dense parameters equal Adam's too."""
    torch.manual_seed(0)
    model = make_model("dnn", tiny_feature_map, hidden=[8])
    batch = make_batch(tiny_feature_map, rows=8)
    loss_of(model, batch).backward()
    table = model.embedding.table.weight
    rows = looked_up(model, batch)
    grad = table.grad.to_dense()[rows]
    reference = torch.nn.Parameter(table.detach()[rows].clone())
    reference.grad = grad.clone()
    dense = {name: p for name, p in model.named_parameters() if name != "embedding.table.weight"}
    dense_ref = {name: torch.nn.Parameter(p.detach().clone()) for name, p in dense.items()}
    for name, p in dense_ref.items():
        p.grad = dense[name].grad.clone()
    torch.optim.Adam(
        [reference, *dense_ref.values()], lr=0.01, weight_decay=weight_decay, foreach=False, fused=False
    ).step()
    make_optimizer(model.parameters(), 0.01, weight_decay, "sparse_adam").step()
    torch.testing.assert_close(table.detach()[rows], reference.detach(), rtol=1e-6, atol=1e-7)
    assert not torch.equal(table.detach()[rows], reference.detach() + 1)  # (the comparison compares)
    for name, p in dense.items():
        torch.testing.assert_close(p.detach(), dense_ref[name].detach(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("kind", ["sparse_adam", "adam"])
def test_a_state_dict_round_trip_resumes_identically(tiny_feature_map, kind):
    batches = [make_batch(tiny_feature_map, rows=8, seed=s) for s in range(6)]

    def fresh():
        torch.manual_seed(0)
        model = make_model("dnn", tiny_feature_map, hidden=[8])
        return model, make_optimizer(model.parameters(), 0.01, 0.01, kind)

    model, optimizer = fresh()
    for batch in batches[:3]:
        train_step(model, optimizer, batch)
    saved = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, saved)
    for batch in batches[3:]:
        train_step(model, optimizer, batch)

    resumed, resumed_optimizer = fresh()
    saved.seek(0)
    checkpoint = torch.load(saved)
    resumed.load_state_dict(checkpoint["model"])
    resumed_optimizer.load_state_dict(checkpoint["optimizer"])
    assert resumed_optimizer.state_dict()["state"].keys() == checkpoint["optimizer"]["state"].keys()
    for batch in batches[3:]:
        train_step(resumed, resumed_optimizer, batch)
    for (name, p), q in zip(model.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(p, q), name


def test_the_optimizer_is_one_adam_with_groups_of_their_own_lr(tiny_feature_map):
    model = make_model("dnn", tiny_feature_map, hidden=[8])
    selector = torch.nn.Linear(3, 1)
    optimizer = make_optimizer(
        [{"params": list(model.parameters())}, {"params": list(selector.parameters()), "lr": 1e-5}], 1e-3, 0.0
    )
    assert isinstance(optimizer, torch.optim.Adam) and isinstance(optimizer, RowAdam)
    assert [group["lr"] for group in optimizer.param_groups] == [1e-3, 1e-5]
    batch = make_batch(tiny_feature_map, rows=8)
    optimizer.zero_grad(set_to_none=True)
    (loss_of(model, batch) + selector(torch.ones(1, 3)).sum()).backward()
    optimizer.step()
    assert all(p.grad is not None for p in model.parameters())  # the sparse gradients are given back
    optimizer.zero_grad(set_to_none=True)
    assert all(p.grad is None for p in model.parameters())


def test_a_dense_gradient_of_an_embedding_table_takes_adams_path(tiny_feature_map):
    """MAML's meta phase (dense_gradients): the same optimizer updates the table densely."""
    torch.manual_seed(0)
    model = make_model("dnn", tiny_feature_map, hidden=[8])
    optimizer = make_optimizer(model.parameters(), 0.01, 0.1, "sparse_adam")
    batch = make_batch(tiny_feature_map, rows=4)
    untouched = untouched_mask(model, batch)
    before = model.embedding.table.weight.detach().clone()
    with dense_gradients(model):
        optimizer.zero_grad(set_to_none=True)
        loss_of(model, batch).backward()
    assert not model.embedding.table.weight.grad.is_sparse and model.embedding.table.sparse
    optimizer.step()
    assert (model.embedding.table.weight.detach()[untouched] != before[untouched]).any(1).all()  # weight decay


@pytest.mark.parametrize("backbone", BACKBONES)
def test_every_backbone_trains_with_sparse_embedding_updates(text_feature_map, backbone):
    torch.manual_seed(0)
    model = make_model(backbone, text_feature_map)
    optimizer = make_optimizer(model.parameters(), 0.01, 0.1, "sparse_adam")  # (dense Adam's decay moves every row)
    batch = make_batch(text_feature_map, rows=8)
    untouched = untouched_mask(model, batch)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer.zero_grad(set_to_none=True)
    loss_of(model, batch).backward()
    sparse = {name for name, p in model.named_parameters() if p.grad is not None and p.grad.is_sparse}
    assert "embedding.table.weight" in sparse
    assert any(name.endswith(".bag.weight") for name in sparse)  # the hashed-text field
    optimizer.step()
    table = model.embedding.table.weight.detach()
    assert torch.equal(table[untouched], before["embedding.table.weight"][untouched])
    assert not torch.equal(table, before["embedding.table.weight"])
    assert sum(not torch.equal(p.detach(), before[name]) for name, p in model.named_parameters()) > 2
    assert torch.isfinite(loss_of(model, batch))


def test_the_trainer_refuses_an_unknown_embedding_optimizer():
    assert TrainerConfig(seed=0).embedding_optimizer == "sparse_adam"
    TrainerConfig(seed=0, embedding_optimizer="adam")
    with pytest.raises(UserError, match="embedding_optimizer=sgd"):
        TrainerConfig(seed=0, embedding_optimizer="sgd")


def test_the_docs_describe_the_option():
    assert "trainer.embedding_optimizer" in (REPO / "docs" / "methods.md").read_text()
