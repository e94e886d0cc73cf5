"""Which rows reach which tower, per regime."""

from __future__ import annotations

import copy
import math
from dataclasses import replace

import pytest
import torch
from torch import nn

from conftest import compose, make_batch, make_model, trainer
from ssimctr.config.optim import AdamConfig
from ssimctr.data.batch import Batch
from ssimctr.data.datasplit import MemorySplit
from ssimctr.errors import UserError
from ssimctr.features.feature_map import FeatureMap
from ssimctr.models.base import MultiScenarioModel, own_scenario
from ssimctr.train import regimes
from ssimctr.train.loop import fit
from ssimctr.train.regimes import (
    Finetune,
    Joint,
    Regime,
    Separate,
    train_jointly,
    train_separately,
    train_then_finetune,
)
from ssimctr.train.sharing import FixedSharing, own_tower_loss, sharing_loss
from ssimctr.utils.instantiate import instantiate

SETTINGS = trainer(1e-2, batch_size=8, eval_batch_size=64, epochs=2, progress=False)


class RecordingModel(MultiScenarioModel):
    """K bias-only towers (its embedding unused); remembers the scenarios of the rows it was trained on."""

    def __init__(self, num_scenarios: int) -> None:
        names = tuple(f"s{k}" for k in range(num_scenarios))
        super().__init__(FeatureMap(categorical=(), scenario_names=names), num_scenarios, 1, True)
        self.bias = nn.Parameter(torch.zeros(num_scenarios))
        self.weight = nn.Parameter(torch.zeros(1))
        self.seen: set[int] = set()

    def towers(self, batch: Batch) -> torch.Tensor:
        if self.training:
            self.seen.update(batch.scenario.tolist())
        return self.bias.expand(len(batch), -1) + self.weight * batch.num[:, :1]


def tower_gradients(gate) -> torch.Tensor:
    logits = torch.zeros(6, 3, requires_grad=True)
    scenario = torch.tensor([0, 1, 2, 0, 1, 2])
    sharing_loss(logits, torch.tensor([1.0, 0, 1, 0, 1, 0]), scenario, gate).backward()
    return logits.grad != 0


def test_mt_rows_reach_only_their_own_tower():
    assert tower_gradients(0.0).tolist() == [[k == s for k in range(3)] for s in [0, 1, 2, 0, 1, 2]]


def test_mt_s_rows_reach_every_tower():
    assert tower_gradients(1.0).all()


def test_a_per_row_gate_shares_only_the_gated_rows():
    reached = tower_gradients(torch.tensor([1.0, 0, 0, 0, 0, 1]))
    assert reached[0].all() and reached[5].all()
    assert reached[1:5].sum(1).tolist() == [1, 1, 1, 1]


def test_sharing_loss_values():
    logits = torch.tensor([[0.5, -1.0], [2.0, 0.0]])
    label, scenario = torch.tensor([1.0, 0.0]), torch.tensor([1, 0])
    bce = nn.functional.binary_cross_entropy_with_logits
    own = bce(torch.tensor([-1.0, 2.0]), label)
    every = bce(logits, label[:, None].expand(2, 2))
    assert sharing_loss(logits, label, scenario, 0.0) == pytest.approx(own.item())
    assert sharing_loss(logits, label, scenario, 1.0) == pytest.approx(every.item())


LOGITS = [[0.5, -1.0], [2.0, 0.0], [-0.5, 1.5], [0.0, 0.3]]  # 4 rows, K = 2 towers
LABEL, SCENARIO = [1.0, 0.0, 0.0, 1.0], [1, 0, 0, 1]


def bce(logit: float, label: float) -> float:
    return math.log1p(math.exp(-logit)) if label else math.log1p(math.exp(logit))


def by_hand(gates: list[float], own: list[float], reduction: str) -> float:
    """The loss of docs/methods.md §1.4 written out with loops over rows and towers."""
    loss = [[bce(z, y) for z in row] for row, y in zip(LOGITS, LABEL)]
    if reduction == "row":
        per_row = [w * loss[i][SCENARIO[i]] + g * sum(loss[i]) / 2 for i, (g, w) in enumerate(zip(gates, own))]
        return sum(per_row) / len(per_row)
    total = 0.0
    for k in range(2):
        weights = [w * (SCENARIO[i] == k) + g for i, (g, w) in enumerate(zip(gates, own))]
        total += sum(a * loss[i][k] for i, a in enumerate(weights)) / sum(weights)
    return total


@pytest.mark.parametrize("reduction", ["row", "scenario"])
@pytest.mark.parametrize(
    "gates",
    [[0.0] * 4, [1.0] * 4, [1.0, 0.0, 0.0, 1.0], [1.0, 0.0, 0.5, 0.25]],
    ids=["gate0", "gate1", "hard", "fractional"],
)
def test_both_loss_reductions_equal_the_hand_computation(gates, reduction):
    logits, label, scenario = torch.tensor(LOGITS), torch.tensor(LABEL), torch.tensor(SCENARIO)
    own = [1 - g for g in gates]
    expected = by_hand(gates, own, reduction)
    assert sharing_loss(logits, label, scenario, torch.tensor(gates), reduction=reduction).item() == pytest.approx(
        expected
    )
    if len(set(gates)) == 1:  # the float gates of regime=mt and mt_s take their own code paths
        assert sharing_loss(logits, label, scenario, gates[0], reduction=reduction).item() == pytest.approx(expected)


def test_the_scenario_reduction_counts_own_unshared_rows_plus_every_shared_row():
    """SSIM's search: rows 0 and 3 (scenario 1) shared, the own-tower mask 1(g = 0) given: tower 0
    averages over 4 rows (2 unshared of scenario 0, 2 shared), tower 1 over the 2 shared rows only."""
    gates, mask = [1.0, 0.0, 0.0, 1.0], [0.0, 1.0, 1.0, 0.0]
    loss = [[bce(z, y) for z in row] for row, y in zip(LOGITS, LABEL)]
    tower0 = (loss[0][0] + loss[1][0] + loss[2][0] + loss[3][0]) / 4
    tower1 = (loss[0][1] + loss[3][1]) / 2
    value = sharing_loss(
        torch.tensor(LOGITS),
        torch.tensor(LABEL),
        torch.tensor(SCENARIO),
        torch.tensor(gates),
        own_weight=torch.tensor(mask),
        reduction="scenario",
    )
    assert value.item() == pytest.approx(tower0 + tower1) == pytest.approx(by_hand(gates, mask, "scenario"))


def test_the_scenario_denominators_carry_no_gradient():
    """dL/dg_i = Σ_k (1 − 1[d_i = k]) ℓ_ik / n_k: the counts n_k are constants."""
    gates = torch.tensor([1.0, 0.0, 0.5, 0.25], requires_grad=True)
    sharing_loss(
        torch.tensor(LOGITS), torch.tensor(LABEL), torch.tensor(SCENARIO), gates, reduction="scenario"
    ).backward()
    loss = [[bce(z, y) for z in row] for row, y in zip(LOGITS, LABEL)]
    g = gates.tolist()
    counts = [sum((1 - g[i]) * (SCENARIO[i] == k) + g[i] for i in range(4)) for k in range(2)]
    expected = [sum((SCENARIO[i] != k) * loss[i][k] / counts[k] for k in range(2)) for i in range(4)]
    assert gates.grad.tolist() == pytest.approx(expected)


def test_a_scenario_without_rows_in_the_batch_adds_nothing():
    logits, label = torch.tensor(LOGITS), torch.tensor(LABEL)
    only_first = torch.zeros(4, dtype=torch.long)
    value = sharing_loss(logits, label, only_first, 0.0, reduction="scenario")
    assert value.item() == pytest.approx(sharing_loss(logits, label, only_first, 0.0).item())


@pytest.fixture
def splits(tiny_feature_map):
    return {
        name: MemorySplit(make_batch(tiny_feature_map, rows=60, seed=i))
        for i, name in enumerate(("train", "val", "test"))
    }


def test_batch_of_scenario_keeps_exactly_that_scenario(splits):
    part = splits["train"].of_scenario(1).batch
    assert len(part) == 20 and (part.scenario == 1).all()


def test_joint_training_sees_every_scenario(splits, tiny_feature_map):
    model = RecordingModel(3)
    outcome = train_jointly(
        model, FixedSharing(0.0), splits, tiny_feature_map.scenario_names, SETTINGS, lambda m, e: None
    )
    assert model.seen == {0, 1, 2}
    assert {"test/auc/s0", "test/auc/mean", "val/auc/mean"} <= set(outcome.test) | set(outcome.val)


def test_separate_training_gives_each_scenario_its_own_model(splits, tiny_feature_map):
    models: list[RecordingModel] = []

    def build() -> RecordingModel:
        models.append(RecordingModel(3))
        return models[-1]

    logged: list[dict] = []
    outcome = train_separately(build, splits, tiny_feature_map.scenario_names, SETTINGS, lambda m, e: logged.append(m))
    assert [m.seen for m in models] == [{0}, {1}, {2}]
    assert set(outcome.test) == {
        f"test/{m}/{s}" for m in ("auc", "logloss") for s in ("s0", "s1", "s2", "overall", "mean")
    }
    assert all(key.startswith("st/") for entry in logged for key in entry)


def test_finetune_pretrains_on_all_rows_then_one_copy_per_scenario(splits, tiny_feature_map):
    model = RecordingModel(3)
    logged: list[dict] = []
    outcome = train_then_finetune(
        model, splits, tiny_feature_map.scenario_names, SETTINGS, lambda m, e: logged.append(m), finetune_lr=None
    )
    assert model.seen == {0, 1, 2}
    keys = {key for entry in logged for key in entry}
    assert any(k.startswith("pretrain/val/") for k in keys)
    assert {f"finetune/val/auc/s{k}" for k in range(3)} <= keys
    assert len(outcome.fits) == 4


def test_finetune_keeps_the_pretrained_weights_when_no_epoch_improves(splits, tiny_feature_map):
    names = tiny_feature_map.scenario_names
    model = RecordingModel(3)
    model.bias.data = torch.tensor([0.3, -0.2, 0.1])
    frozen = replace(SETTINGS, optimizer=AdamConfig(lr=0.0))  # no epoch can improve on the pretrained copy:
    # validation stays equal
    outcome = train_then_finetune(model, splits, names, frozen, lambda m, e: None, finetune_lr=None)
    finetuned = outcome.fits[1:]
    assert all(result.best_epoch == 0 and result.initial is not None for result in finetuned)
    for result in finetuned:  # the kept model's validation metrics are the pretrained copy's
        assert result.val == {k: v for k, v in result.initial.items() if k.startswith("val/")}


def test_fit_keeps_the_initial_model_only_when_asked(splits, tiny_feature_map):
    model = RecordingModel(3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    validate = lambda m: {"val/auc/mean": 1.0 if torch.equal(m.bias, before["bias"]) else 0.5}  # noqa: E731
    loader = splits["train"].loader(8, shuffle=True)
    kept = fit(
        model,
        FixedSharing(0.0),
        torch.optim.SGD(model.parameters(), lr=1.0),
        loader,
        validate,
        SETTINGS,
        keep_initial=True,
    )
    assert kept.best_epoch == 0 and torch.equal(model.bias, before["bias"]) and kept.val == {"val/auc/mean": 1.0}
    trained = fit(model, FixedSharing(0.0), torch.optim.SGD(model.parameters(), lr=1.0), loader, validate, SETTINGS)
    assert trained.best_epoch == 1 and not torch.equal(model.bias, before["bias"])


@pytest.mark.parametrize("key", ["towers", "share", "loss_reduction"])
def test_a_regime_with_an_unknown_value_is_one_clear_error(key):
    with pytest.raises(UserError, match=rf"regime\.{key}=bogus is not known: use one of") as error:
        instantiate(compose("regime=mt", f"regime.{key}=bogus").regime)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("option", "procedure"),
    [("mt", Joint), ("mt_s", Joint), ("single", Joint), ("st", Separate), ("finetune", Finetune)],
)
def test_each_regime_option_builds_its_training_procedure(option, procedure):
    regime = instantiate(compose(f"regime={option}").regime)
    assert type(regime) is procedure and regime.name == option


def test_finetune_lr_belongs_to_the_finetune_regime():
    assert instantiate(compose("regime=finetune", "regime.finetune_lr=0.01").regime).finetune_lr == 0.01
    with pytest.raises(UserError, match="regime.finetune_lr is read by regime=finetune only; regime=mt would ignore"):
        instantiate(compose("regime=mt", "regime.finetune_lr=0.01").regime)  # not silently ignored
    with pytest.raises(UserError, match=r"regime.finetune_lr=-0.1: must be 0 or positive"):
        instantiate(compose("regime=finetune", "regime.finetune_lr=-0.1").regime)


@pytest.mark.parametrize("option", ["mt", "finetune"])
def test_the_regime_loss_reduction_reaches_the_training_loss(option, splits, tiny_feature_map, monkeypatch):
    config = compose(f"regime={option}", "regime.loss_reduction=scenario", "regime.towers=per_scenario")
    regime: Regime = instantiate(config.regime)
    losses, real = [], regimes.fit

    def recording(model, loss, *args, **kwargs):
        losses.append(loss)
        return real(model, loss, *args, **kwargs)

    monkeypatch.setattr(regimes, "fit", recording)
    regime.train(
        RecordingModel(3),
        lambda: RecordingModel(3),
        splits,
        tiny_feature_map.scenario_names,
        SETTINGS,
        lambda m, e: None,
    )
    assert losses[0].reduction == "scenario"  # joint training, or finetune's pre-training on all rows


def test_a_regime_knows_its_towers_and_gate():
    mt = Joint(name="mt", towers="per_scenario", share="own")
    single = Joint(name="single", towers="single", share="all")
    assert (mt.num_towers(3), mt.gate, mt.is_multi_tower_joint) == (3, 0.0, True)
    assert (single.num_towers(3), single.gate, single.is_multi_tower_joint) == (1, 1.0, False)


class TowersRefused(RuntimeError):
    """Raised by a model whose towers() must not be called."""


def without_towers(model: MultiScenarioModel) -> MultiScenarioModel:
    """`model` whose `towers()` raises: only the routed path `model(batch)` may score its rows."""

    def refuse(batch: Batch) -> torch.Tensor:
        raise TowersRefused

    model.towers = refuse
    return model


@pytest.mark.parametrize("reduction", ["row", "scenario"])
def test_gate_0_trains_and_evaluation_scores_through_the_routed_path_only(reduction, splits, tiny_feature_map):
    """regime mt (and single, st, finetune): the loss and the evaluation never compute other towers; the
    loss equals the gate-0 sharing loss of the full path's logits; MT-S (gate 1) reads every tower."""
    torch.manual_seed(0)
    full = make_model("dnn", tiny_feature_map, hidden=[16])
    batch = splits["train"].batch
    expected = sharing_loss(full.towers(batch), batch.label, batch.scenario, 0.0, reduction=reduction)
    routed = without_towers(copy.deepcopy(full))
    torch.testing.assert_close(FixedSharing(0.0, reduction)(routed, batch), expected)
    with pytest.raises(TowersRefused):
        FixedSharing(1.0, reduction)(routed, batch)
    outcome = train_jointly(
        routed, FixedSharing(0.0, reduction), splits, tiny_feature_map.scenario_names, SETTINGS, lambda m, e: None
    )
    assert {"test/auc/s0", "val/auc/mean"} <= set(outcome.test) | set(outcome.val)


def test_the_own_tower_loss_is_the_gate_0_sharing_loss_bit_for_bit():
    """Per scenario too: own_tower_loss on each row's own logit gives the full [B, K] computation's bits."""
    g = torch.Generator().manual_seed(0)
    logits, label = torch.randn(64, 3, generator=g), (torch.rand(64, generator=g) < 0.3).float()
    scenario = torch.randint(0, 2, (64,), generator=g)  # scenario 2 absent
    for reduction in ("row", "scenario"):
        gate = torch.zeros(64) if reduction == "scenario" else 0.0
        full = sharing_loss(logits, label, scenario, gate, reduction=reduction)
        own = own_tower_loss(own_scenario(logits, scenario), label, scenario, 3, reduction)
        assert torch.equal(own, full), reduction
