"""The excess-loss criterion (ssim/criterion=excess, docs/methods.md §1.10): the search's towers train as
MT-Backbone, the selector regresses t = −(ℓ_sh − ℓ_own) on the embedding without passing gradient to it,
and its scores find the planted answer."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from rich.console import Console

from conftest import compose, make_batch, make_model, synthetic_config
from ssimctr.cli.runner import JobInfo, run
from ssimctr.config.schema import ScenarioConfig, SplitConfig, SsimConfig, TrainerConfig
from ssimctr.data import synthetic
from ssimctr.data.datasplit import open_split
from ssimctr.data.prepare import prepare
from ssimctr.errors import UserError
from ssimctr.ssim import phases
from ssimctr.ssim.criteria import ExcessLoss, HardGate, SearchRun
from ssimctr.ssim.losses import ExcessSearchLoss
from ssimctr.ssim.selection import Given, SoftWeights
from ssimctr.ssim.selector import Selector
from ssimctr.train.sharing import sharing_loss

NAMES = ("s0", "s1", "s2")


def excess_loss(selector, *, log=None, reduction: str = "row", log_every: int = 100) -> ExcessSearchLoss:
    ssim = SsimConfig(phase="search", log_every=log_every)
    run_ = SearchRun(total_steps=10, scenario_names=NAMES, log=log or (lambda m, s: None), reduction=reduction)
    return ExcessLoss().search_loss(selector, ssim, run_)


@pytest.fixture
def setup(tiny_feature_map):
    torch.manual_seed(0)
    model = make_model("dnn", tiny_feature_map, hidden=[16])
    selector = Selector(model.embedding.output_dim, [16], 3)
    return model, selector, make_batch(tiny_feature_map, rows=48)


def expected_parts(model, selector, batch):
    """MT's loss and the selector's regression error, written out from the definitions."""
    towers = model.towers(batch)
    every = torch.stack(
        [F.binary_cross_entropy_with_logits(towers[:, k], batch.label, reduction="none") for k in range(3)], 1
    )
    own = every[torch.arange(len(batch)), batch.scenario]
    target = own - every.mean(1)
    scores = selector(model.embedding(batch).flatten(1), batch.scenario)
    return own.mean(), ((scores - target.detach()) ** 2).mean(), target


@pytest.mark.parametrize("reduction", ["row", "scenario"])
def test_the_loss_is_mt_plus_the_regression_of_minus_the_excess(setup, reduction):
    model, selector, batch = setup
    value = excess_loss(selector, reduction=reduction)(model, batch)
    mt, error, _ = expected_parts(model, selector, batch)
    if reduction == "scenario":
        mt = sharing_loss(model.towers(batch), batch.label, batch.scenario, 0.0, reduction="scenario")
    torch.testing.assert_close(value, mt + error)


def _grads(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {
        name: torch.zeros_like(p) if p.grad is None else p.grad.to_dense().clone()
        for name, p in module.named_parameters()
    }


def test_the_towers_and_embedding_get_mt_gradients_and_the_selector_only_the_regressions(setup):
    model, selector, batch = setup
    excess_loss(selector)(model, batch).backward()
    got_model, got_selector = _grads(model), _grads(selector)
    model.zero_grad(), selector.zero_grad()
    mt, error, _ = expected_parts(model, selector, batch)
    mt.backward()
    torch.testing.assert_close(got_model, _grads(model))  # the excess target and the selector's input: no gradient
    model.zero_grad()
    error.backward()
    torch.testing.assert_close(got_selector, _grads(selector))
    assert any(g.abs().sum() > 0 for g in got_selector.values())


class RecordedTowers:
    """The model, its towers' logits [B, K] kept (with their gradient) when the loss computes them."""

    def __init__(self, model) -> None:
        self.model, self.logits = model, None

    def towers(self, batch):
        self.logits = self.model.towers(batch)
        self.logits.retain_grad()
        return self.logits

    def embedding(self, batch):
        return self.model.embedding(batch)


def test_a_row_trains_only_its_own_tower(setup):
    """The search's towers are MT-Backbone's: a row's excess compares the towers, it does not share the row."""
    model, selector, batch = setup
    recorded = RecordedTowers(model)
    excess_loss(selector)(recorded, batch).backward()
    own = torch.nn.functional.one_hot(batch.scenario, 3).bool()
    assert torch.all(recorded.logits.grad[~own] == 0)
    assert torch.all(recorded.logits.grad[own] != 0)


def test_the_selector_learns_minus_the_excess_of_fixed_towers(setup):
    """With the towers frozen, the excess of each row is a fixed answer: the selector's scores converge to
    −(ℓ_sh − ℓ_own) row by row (a flipped sign leaves them far off)."""
    model, selector, batch = setup
    model.requires_grad_(False)
    loss = excess_loss(selector)
    optimizer = torch.optim.Adam(selector.parameters(), lr=1e-2)
    for _ in range(300):
        optimizer.zero_grad()
        loss(model, batch).backward()
        optimizer.step()
    _, error, target = expected_parts(model, selector, batch)
    scores = selector(model.embedding(batch).flatten(1), batch.scenario)
    assert target.std() > 0.05  # the rows' excess losses differ
    assert error.item() < 0.05 * target.var().item()
    torch.testing.assert_close(scores, target, atol=0.1, rtol=0)


def test_statistics_are_the_mean_excess_per_scenario_and_the_fit(setup):
    model, selector, batch = setup
    logged = []
    excess_loss(selector, log=lambda metrics, step: logged.append((step, metrics)), log_every=1)(model, batch)
    [(step, metrics)] = logged
    _, error, target = expected_parts(model, selector, batch)
    excess = -target
    assert step == 0
    for k, name in enumerate(NAMES):
        assert metrics[f"ssim/search/excess/{name}"] == pytest.approx(
            excess[batch.scenario == k].mean().item(), rel=1e-5
        )
    assert metrics["ssim/search/score_error"] == pytest.approx(error.item(), rel=1e-5)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """20,000 rows with the planted flag (dataset.shareable), one CTR, few ids: the planted study's data, small."""
    config = synthetic_config(
        rows=20_000, users=400, items=150, newcomers=0.0, ctr=0.5, shareable=0.5, truth=synthetic.SHAREABLE
    )
    data = prepare(
        config, ScenarioConfig(kind="column", column="scenario"), SplitConfig(kind="time"), tmp_path_factory.mktemp("c")
    )
    return data, {
        s: open_split(data.split_path(s), data.feature_map, True, 10**6, torch.device("cpu"))
        for s in ("train", "val", "test")
    }


def planted_search(planted, criterion, folder) -> dict[str, float]:
    data, splits = planted
    logged = []
    torch.manual_seed(0)
    model = make_model("dnn", data.feature_map, hidden=[32, 16])
    ssim = SsimConfig(
        phase="search",
        selector_hidden=[32, 16],
        selector_lr=3e-3,
        search_epochs=3,
        epsilon=0.3,
        ratio=0.5,
        log_every=50,
    )
    settings = TrainerConfig(batch_size=256, progress=False, seed=0)
    summary = {"dataset": "synthetic", "data_key": data.manifest["cache_key"]}
    phases.search(model, splits, NAMES, settings, ssim, criterion, lambda m, s: logged.append(m), folder, summary)
    quality = next(m for m in logged if "ssim/selection_auc/overall" in m)
    return {key.rsplit("/", 1)[1]: value for key, value in quality.items() if "selection_auc" in key}


def test_the_excess_search_ranks_the_planted_flag_where_ssims_search_does_not(planted, tmp_path):
    excess = planted_search(planted, ExcessLoss(), tmp_path / "excess")
    ssim = planted_search(planted, HardGate(), tmp_path / "ssim")
    assert min(excess.values()) > 0.6, excess
    assert excess["overall"] > ssim["overall"] + 0.05, (excess, ssim)
    summary = json.loads((tmp_path / "excess" / "summary.json").read_text())
    assert summary["criterion"] == "ExcessLoss" and "final_temperature" not in summary
    assert json.loads((tmp_path / "ssim" / "summary.json").read_text())["criterion"] == "HardGate"
    data, splits = planted
    given = Given(0.5, 0, data.feature_map, splits["train"], torch.device("cpu"), tmp_path / "excess", summary)
    with pytest.raises(UserError, match=r"^ssim/selection=soft weighs rows by sigmoid\(τ·m\) at the search's final"):
        SoftWeights().gate(given)


def test_an_excess_pipeline_searches_again_and_retrains_on_its_selector(tmp_path):
    base = (
        f"paths.outputs={tmp_path}",
        "tracking=none",
        "dataset.rows=4000",
        "dataset.users=300",
        "dataset.items=100",
        "trainer=debug",
        "trainer.progress=false",
        "ssim=pipeline",
        "ssim.selector_hidden=[8]",
    )
    run(compose(*base), JobInfo(output_dir=tmp_path / "ssim"), Console(quiet=True))
    run(compose(*base, "ssim/criterion=excess"), JobInfo(output_dir=tmp_path / "excess"), Console(quiet=True))
    summary = json.loads((tmp_path / "excess" / "ssim" / "summary.json").read_text())  # searched, not reused
    assert summary["criterion"] == "ExcessLoss"
