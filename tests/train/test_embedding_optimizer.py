"""trainer/optimizer and trainer/embedding_optimizer: the embedding tables' sparse gradients, the row rules of
ssimctr.train.optim (lazy Adam, row-wise Adagrad, dense) against reference implementations, and one
optimizer's state for checkpoints."""

from __future__ import annotations

import io
import math

import pytest
import torch
from omegaconf import OmegaConf

from conftest import REPO, compose, make_batch, make_model, optimizer_for, trainer
from ssimctr.config.optim import LazyAdamConfig, RowSGDConfig, RowwiseAdagradConfig
from ssimctr.config.schema import TrainerConfig
from ssimctr.errors import UserError
from ssimctr.models.layers.core import dense_gradients
from ssimctr.train.loop import make_optimizer
from ssimctr.train.optim import LazyAdam, RowSGD, RowwiseAdagrad, TrainingOptimizer
from ssimctr.train.sharing import sharing_loss

BACKBONES = sorted(path.stem for path in (REPO / "conf" / "backbone").glob("*.yaml"))
TABLE = "embedding.table.weight"


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


def rules_optimizer(model, rule: str, lr: float = 0.01, weight_decay: float = 0.0) -> TrainingOptimizer:
    """The optimizer with row rule `rule` (its own weight decay `weight_decay`; Adam's for the dense weights)."""
    tables = {
        "sparse_adam": LazyAdamConfig(weight_decay=weight_decay),
        "rowwise_adagrad": RowwiseAdagradConfig(lr=lr, weight_decay=weight_decay),
        "sgd": RowSGDConfig(lr=50 * lr, weight_decay=weight_decay),
    }
    settings = trainer(lr, weight_decay=weight_decay, rows="adam" if rule == "adam" else "sparse_adam")
    if rule in tables:
        settings.embedding_optimizer = tables[rule]
    return make_optimizer(settings, model.parameters())


@pytest.mark.parametrize("rule", ["sparse_adam", "rowwise_adagrad", "sgd"])
def test_a_sparse_rule_moves_only_the_touched_rows(tiny_feature_map, rule):
    torch.manual_seed(0)
    model = make_model("dnn", tiny_feature_map, hidden=[8])
    optimizer = rules_optimizer(model, rule, weight_decay=0.1)
    batch = make_batch(tiny_feature_map, rows=4)
    untouched = untouched_mask(model, batch)
    assert untouched.sum() > 5  # a batch of 4 rows leaves most of the 24 rows alone
    for _ in range(2):  # the table's state is nonzero after the first step
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


def test_dense_tables_with_weight_decay_change_untouched_rows(tiny_feature_map):
    torch.manual_seed(0)
    model = make_model("dnn", tiny_feature_map, hidden=[8])
    optimizer = rules_optimizer(model, "adam", weight_decay=0.1)
    batch = make_batch(tiny_feature_map, rows=4)
    untouched = untouched_mask(model, batch)
    before = model.embedding.table.weight.detach().clone()
    train_step(model, optimizer, batch)
    assert (model.embedding.table.weight.detach()[untouched] != before[untouched]).any(1).all()


class ReferenceRows:
    """Row updates written out per row in float64, from the equations of docs/methods.md §3.11."""

    def __init__(self, table: torch.Tensor, rule: str, lr: float, weight_decay: float) -> None:
        self.w = table.detach().double().clone()
        self.rule, self.lr, self.weight_decay = rule, lr, weight_decay
        self.m = torch.zeros_like(self.w)
        self.v = torch.zeros_like(self.w)
        self.sum = torch.zeros(len(self.w), dtype=torch.float64)
        self.step = 0

    def update(self, sparse_grad: torch.Tensor) -> None:
        """`sparse_grad`: the table's sparse gradient of one step; its rows are the touched ones (a row
        looked up with a zero gradient is touched too: its moments decay and it moves)."""
        self.step += 1
        beta1, beta2, eps = 0.9, 0.999, 1e-8
        grad = sparse_grad.to_dense()
        for r in sparse_grad.coalesce().indices()[0].tolist():
            g = grad[r].double() + self.weight_decay * self.w[r]
            if self.rule == "sparse_adam":
                self.m[r] = beta1 * self.m[r] + (1 - beta1) * g
                self.v[r] = beta2 * self.v[r] + (1 - beta2) * g * g
                m_hat = self.m[r] / (1 - beta1**self.step)
                v_hat = self.v[r] / (1 - beta2**self.step)
                self.w[r] -= self.lr * m_hat / (v_hat.sqrt() + eps)  # ε after the bias-corrected root
            elif self.rule == "rowwise_adagrad":
                self.sum[r] += (g * g).mean()
                self.w[r] -= self.lr * g / (math.sqrt(self.sum[r]) + eps)
            else:
                self.w[r] -= self.lr * g


@pytest.mark.parametrize("rule", ["sparse_adam", "rowwise_adagrad", "sgd"])
@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
def test_a_row_rule_follows_its_reference_over_many_steps(tiny_feature_map, rule, weight_decay):
    """30 steps over batches that repeat rows within a batch (summed) and leave others untouched for
    several steps (no drift, the table's step count still advances): the rule stays on the reference."""
    torch.manual_seed(0)
    model = make_model("dnn", tiny_feature_map, hidden=[8])
    optimizer = rules_optimizer(model, rule, lr=0.02, weight_decay=weight_decay)
    initial = model.embedding.table.weight.detach().double().clone()
    reference = ReferenceRows(model.embedding.table.weight, rule, 1.0 if rule == "sgd" else 0.02, weight_decay)
    batches = [make_batch(tiny_feature_map, rows=3, seed=s % 7) for s in range(30)]  # 3 rows: most rows rest
    for batch in batches:
        optimizer.zero_grad(set_to_none=True)
        loss_of(model, batch).backward()
        reference.update(model.embedding.table.weight.grad)
        optimizer.step()
    table = model.embedding.table.weight.detach().double()
    torch.testing.assert_close(table, reference.w, rtol=1e-5, atol=1e-6)
    assert (table - initial).abs().max() > 0.05  # (the rows did move: the comparison compares)


def test_the_first_lazy_step_of_touched_rows_is_adams(tiny_feature_map):
    """The touched rows after one lazy step equal torch.optim.Adam (plain, not fused) run on those rows
    alone with their summed gradient; the dense parameters equal Adam's too."""
    torch.manual_seed(0)
    model = make_model("dnn", tiny_feature_map, hidden=[8])
    batch = make_batch(tiny_feature_map, rows=8)
    loss_of(model, batch).backward()
    table = model.embedding.table.weight
    rows = looked_up(model, batch)
    reference = torch.nn.Parameter(table.detach()[rows].clone())
    reference.grad = table.grad.to_dense()[rows].clone()
    dense = {name: p for name, p in model.named_parameters() if name != TABLE}
    dense_ref = {name: torch.nn.Parameter(p.detach().clone()) for name, p in dense.items()}
    for name, p in dense_ref.items():
        p.grad = dense[name].grad.clone()
    torch.optim.Adam([reference, *dense_ref.values()], lr=0.01, foreach=False, fused=False).step()
    optimizer_for(model.parameters(), 0.01).step()
    torch.testing.assert_close(table.detach()[rows], reference.detach(), rtol=1e-6, atol=1e-7)
    for name, p in dense.items():
        torch.testing.assert_close(p.detach(), dense_ref[name].detach(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("rule", ["sparse_adam", "rowwise_adagrad", "sgd", "adam"])
def test_a_state_dict_round_trip_resumes_identically(tiny_feature_map, rule):
    batches = [make_batch(tiny_feature_map, rows=8, seed=s) for s in range(6)]

    def fresh():
        torch.manual_seed(0)
        model = make_model("dnn", tiny_feature_map, hidden=[8])
        return model, rules_optimizer(model, rule, weight_decay=0.01)

    model, optimizer = fresh()
    for batch in batches[:3]:
        train_step(model, optimizer, batch)
    saved = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, saved)
    for batch in batches[3:]:
        train_step(model, optimizer, batch)

    resumed, resumed_optimizer = fresh()
    saved.seek(0)
    checkpoint = torch.load(saved, weights_only=False)
    resumed.load_state_dict(checkpoint["model"])
    resumed_optimizer.load_state_dict(checkpoint["optimizer"])
    if rule not in ("adam", "sgd"):  # (plain gradient descent keeps no state)
        assert resumed_optimizer.state_dict()["rows"].keys() == checkpoint["optimizer"]["rows"].keys() != set()
    for batch in batches[3:]:
        train_step(resumed, resumed_optimizer, batch)
    for (name, p), q in zip(model.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(p, q), name


def test_parameter_groups_keep_their_own_rate_and_the_sparse_gradients_are_given_back(tiny_feature_map):
    model = make_model("dnn", tiny_feature_map, hidden=[8])
    selector = torch.nn.Linear(3, 1)
    optimizer = make_optimizer(
        trainer(1e-3), [{"params": list(model.parameters())}, {"params": list(selector.parameters()), "lr": 1e-5}]
    )
    assert isinstance(optimizer.dense, torch.optim.Adam) and optimizer.dense.defaults["fused"]
    assert [group["lr"] for group in optimizer.param_groups] == [1e-3, 1e-5]
    batch = make_batch(tiny_feature_map, rows=8)
    optimizer.zero_grad(set_to_none=True)
    (loss_of(model, batch) + selector(torch.ones(1, 3)).sum()).backward()
    optimizer.step()
    assert all(p.grad is not None for p in model.parameters())  # the sparse gradients are given back
    optimizer.zero_grad(set_to_none=True)
    assert all(p.grad is None for p in model.parameters())


def test_the_rules_rate_is_its_own_and_follows_the_groups_schedule():
    table = torch.nn.Parameter(torch.zeros(4, 2))
    dense = torch.optim.Adam([{"params": [table], "lr": 0.1}])
    optimizer = TrainingOptimizer(dense, RowwiseAdagrad(lr=0.5, eps=1e-8, initial_accumulator=0.0, weight_decay=0.0))
    assert optimizer.row_lr(optimizer.param_groups[0]) == 0.5
    optimizer.param_groups[0]["lr"] = 0.01  # a schedule took a tenth of the group's rate: the rule's too
    assert optimizer.row_lr(optimizer.param_groups[0]) == pytest.approx(0.05)
    own = TrainingOptimizer(torch.optim.Adam([table], lr=0.1), LazyAdam(lr=None, betas=(0.9, 0.999), eps=1e-8))
    assert own.row_lr(own.param_groups[0]) == pytest.approx(0.1)  # null: the group's rate


def test_rowwise_adagrad_takes_its_own_rate(tiny_feature_map):
    """With lr 0 for the dense weights and 0.5 for the rows, only the table moves, by the rule's first step:
    w − 0.5 · g / sqrt(mean(g²)) for each touched row."""
    torch.manual_seed(0)
    model = make_model("dnn", tiny_feature_map, hidden=[8])
    settings = trainer(0.0)
    settings.embedding_optimizer = RowwiseAdagradConfig(lr=0.5)
    optimizer = make_optimizer(settings, model.parameters())
    batch = make_batch(tiny_feature_map, rows=4)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer.zero_grad(set_to_none=True)
    loss_of(model, batch).backward()
    grad = model.embedding.table.weight.grad.to_dense()
    optimizer.step()
    rows = looked_up(model, batch)
    expected = before[TABLE][rows] - 0.5 * grad[rows] / (grad[rows].square().mean(1, keepdim=True).sqrt() + 1e-8)
    torch.testing.assert_close(model.embedding.table.weight.detach()[rows], expected)
    assert all(torch.equal(p.detach(), before[name]) for name, p in model.named_parameters() if name != TABLE)


def test_a_dense_gradient_of_an_embedding_table_takes_the_dense_path(tiny_feature_map):
    """MAML's meta phase (dense_gradients): the same optimizer updates the table densely."""
    torch.manual_seed(0)
    model = make_model("dnn", tiny_feature_map, hidden=[8])
    optimizer = optimizer_for(model.parameters(), 0.01, weight_decay=0.1)
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
    optimizer = optimizer_for(model.parameters(), 0.01, weight_decay=0.1)  # (dense tables' decay moves every row)
    batch = make_batch(text_feature_map, rows=8)
    untouched = untouched_mask(model, batch)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer.zero_grad(set_to_none=True)
    loss_of(model, batch).backward()
    sparse = {name for name, p in model.named_parameters() if p.grad is not None and p.grad.is_sparse}
    assert TABLE in sparse
    assert any(name.endswith(".bag.weight") for name in sparse)  # the hashed-text field
    optimizer.step()
    table = model.embedding.table.weight.detach()
    assert torch.equal(table[untouched], before[TABLE][untouched])
    assert not torch.equal(table, before[TABLE])
    assert sum(not torch.equal(p.detach(), before[name]) for name, p in model.named_parameters()) > 2
    assert torch.isfinite(loss_of(model, batch))


def test_the_groups_compose_and_build_each_option():
    for option, rule in (("sparse_adam", LazyAdam), ("rowwise_adagrad", RowwiseAdagrad), ("sgd", RowSGD)):
        config = compose(f"trainer/embedding_optimizer={option}", "trainer.embedding_optimizer.lr=0.3")
        optimizer = make_optimizer(_settings(config), [torch.nn.Parameter(torch.zeros(2))])
        assert isinstance(optimizer.rows, rule) and optimizer.rows.lr == 0.3
    config = compose("trainer/embedding_optimizer=adam", "trainer.optimizer.lr=0.02")
    optimizer = make_optimizer(_settings(config), [torch.nn.Parameter(torch.zeros(2))])
    assert optimizer.rows.densify and optimizer.param_groups[0]["lr"] == 0.02


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.optimizer.lr=-1", "trainer.optimizer.lr=-1.0: must be 0 or positive"),
        ("trainer.optimizer.weight_decay=-0.1", "trainer.optimizer.weight_decay=-0.1: must be 0 or positive"),
        ("trainer.embedding_optimizer.lr=-2", "trainer.embedding_optimizer.lr=-2.0: must be 0 or positive"),
        (
            "trainer/embedding_optimizer=sparse_adam trainer.embedding_optimizer.eps=0",
            "trainer.embedding_optimizer.eps=0.0: must be positive",
        ),
        ("trainer.lr_schedule.factor=1.5", "trainer.lr_schedule.factor=1.5: must be in (0, 1)"),
        ("trainer.regularizer.id_dropout.rate=1", "trainer.regularizer.id_dropout.rate=1.0: must be in [0, 1)"),
        (
            "trainer/regularizer=[embedding_l2] trainer.regularizer.embedding_l2.l2=-1",
            "trainer.regularizer.embedding_l2.l2=-1.0: must be 0 or positive",
        ),
    ],
)
def test_a_value_out_of_range_is_one_line(override, message):
    with pytest.raises(UserError) as error:
        _settings(compose(*override.split()))
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_the_docs_describe_the_options():
    methods = (REPO / "docs" / "methods.md").read_text()
    for option in (
        "trainer/embedding_optimizer",
        "rowwise_adagrad",
        "trainer/lr_schedule",
        "embedding_l2",
        "id_dropout",
    ):
        assert option in methods, option


def _settings(config) -> TrainerConfig:
    return OmegaConf.to_object(config.trainer)
