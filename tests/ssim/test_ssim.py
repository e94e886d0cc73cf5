"""SSIM mechanics (docs/methods.md §1.9 checklist) and the search -> retrain round trip."""

from __future__ import annotations

import json
import math
from pathlib import Path

import polars as pl
import pytest
import torch
from rich.console import Console

from conftest import compose, make_batch, make_model, optimizer_for, synthetic_config, trainer
from ssimctr.cli.runner import JobInfo, run
from ssimctr.config.schema import ScenarioConfig, SplitConfig, SsimConfig
from ssimctr.data.datasplit import MemorySplit, StreamedSplit
from ssimctr.data.loaders import read_split
from ssimctr.data.prepare import prepare
from ssimctr.ssim import artifacts, phases
from ssimctr.ssim.criteria import HardGate
from ssimctr.ssim.losses import RetrainLoss, SearchLoss
from ssimctr.ssim.selection import BatchTopRatio, Given, GlobalTopRatio, RandomSelection, SoftWeights, soft_weights
from ssimctr.ssim.selector import Selector, hard_gate, temperature, top_ratio_gate
from ssimctr.tasks import base as tasks_base

SETTINGS = trainer(3e-3, batch_size=256, eval_batch_size=4096, epochs=2, progress=False)
SMALL_SSIM = dict(selector_hidden=[32, 16], selector_lr=1e-3, epsilon=0.5, lambda_kl=0.4, ratio=0.5, log_every=5)


def test_ste_forward_is_the_hard_gate_and_backward_passes_the_gradient():
    p = torch.tensor([0.2, 0.49, 0.51, 0.9], requires_grad=True)
    g = hard_gate(p, 0.5)
    assert g.tolist() == [0.0, 0.0, 1.0, 1.0]
    (g * torch.tensor([3.0, 3.0, 0.25, -4.0])).sum().backward()
    assert p.grad.tolist() == [0.0, 0.0, 0.25, -1.0]  # relu blocks p < eps; STE clamps to [-1, 1]


def test_temperature_goes_from_one_to_final_on_the_last_step():
    assert temperature(0, 50, 1000.0) == 1.0
    assert temperature(49, 50, 1000.0) == pytest.approx(1000.0)
    ratios = [temperature(s + 1, 50, 1000.0) / temperature(s, 50, 1000.0) for s in range(49)]
    assert ratios == pytest.approx([1000.0 ** (1 / 49)] * 49)


@pytest.mark.parametrize("batch", [7, 10, 64])
@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.95, 1.0])
def test_top_ratio_selects_exactly_floor_r_b_rows(batch, ratio):
    scores = torch.randn(batch)
    gate = top_ratio_gate(scores, ratio)
    assert int(gate.sum()) == math.floor(ratio * batch)
    if 0 < gate.sum() < batch:
        assert scores[gate == 1].min() >= scores[gate == 0].max()


@pytest.fixture
def search_setup(tiny_feature_map):
    torch.manual_seed(0)
    model = make_model("dnn", tiny_feature_map, 3, hidden=[16])
    selector = Selector(model.embedding.output_dim, [16], 3)
    logged = []
    loss = SearchLoss(
        selector,
        gate=HardGate(),
        epsilon=0.5,
        lambda_kl=0.4,
        final_temperature=1000.0,
        total_steps=4,
        scenario_names=tiny_feature_map.scenario_names,
        log=lambda m, s: logged.append((s, m)),
        log_every=10,
    )
    return model, selector, loss, make_batch(tiny_feature_map, rows=32), logged


def test_search_loss_is_sharing_loss_plus_the_linear_kl_term(search_setup):
    model, selector, loss, batch, _ = search_setup
    value = loss(model, batch)
    with torch.no_grad():
        p = torch.sigmoid(1.0 * selector(model.embedding(batch).flatten(1), batch.scenario))
        g = (p > 0.5).float()
        towers = model.towers(batch)
        bce = torch.nn.functional.binary_cross_entropy_with_logits
        own = bce(towers.gather(1, batch.scenario[:, None]).squeeze(1), batch.label, reduction="none")
        every = bce(towers, batch.label[:, None].expand_as(towers), reduction="none").mean(1)
        expected = ((1 - g) * own + g * every).mean() + 0.4 * math.e * (1 - g.mean())
    assert 0 < g.sum() < len(g)
    assert value.item() == pytest.approx(expected.item(), rel=1e-6)


def test_unselected_rows_give_the_selector_no_gradient(search_setup):
    model, selector, loss, batch, _ = search_setup
    scores = selector(model.embedding(batch).flatten(1), batch.scenario)
    unselected = torch.nonzero(torch.sigmoid(scores) <= 0.5).squeeze(1)
    assert len(unselected) > 0
    captured = {}
    handle = selector.heads.register_forward_hook(lambda mod, inp, out: captured.update(out=out))
    out = loss(model, batch)
    captured["out"].retain_grad()
    handle.remove()
    out.backward()
    row_grads = captured["out"].grad.gather(1, batch.scenario[:, None]).squeeze(1)
    assert torch.all(row_grads[unselected] == 0)
    assert torch.any(row_grads != 0)


def test_search_logs_gate_statistics_and_reaches_the_final_temperature(search_setup):
    model, _, loss, batch, logged = search_setup
    for _ in range(4):
        loss(model, batch)
    steps = [s for s, _ in logged]
    assert steps[0] == 0 and steps[-1] == 3
    assert logged[-1][1]["ssim/search/temperature"] == pytest.approx(1000.0)
    assert {"ssim/search/gate_mean", "ssim/search/shared/s0"} <= set(logged[-1][1])


def test_shared_rows_reach_every_tower_unshared_rows_only_their_own(tiny_feature_map):
    model = make_model("dnn", tiny_feature_map, 3, hidden=[8])
    batch = make_batch(tiny_feature_map, rows=6)
    gate = torch.tensor([1.0, 0, 0, 0, 0, 0])
    towers = model.towers(batch)
    towers.retain_grad()
    RetrainLoss(lambda b: gate)(type("M", (), {"towers": lambda self, b: towers})(), batch).backward()
    reached = towers.grad != 0
    assert reached[0].all()
    assert reached[1:].sum(1).tolist() == [1] * 5
    assert all(reached[i, batch.scenario[i]] for i in range(6))


@pytest.fixture(scope="module", params=[2, 3, 5], ids=lambda k: f"K{k}")
def prepared(request, tmp_path_factory):
    config = synthetic_config(rows=8000, users=800, items=300, num_scenarios=request.param)
    return prepare(
        config,
        ScenarioConfig(kind="column", column="scenario"),
        SplitConfig(kind="time"),
        tmp_path_factory.mktemp("cache"),
    )


def given(data, folder: Path | None, ratio: float, device="cpu") -> Given:
    """What a retrain gives its selection: the search in `folder`, the prepared train split."""
    summary = json.loads((folder / "summary.json").read_text()) if folder else {}
    train = load_splits(data, device)["train"]
    return Given(ratio, 0, data.feature_map, train, torch.device(device), folder, summary)


def load_splits(data, device):
    return {
        s: MemorySplit(read_split(data.split_path(s), data.feature_map).to(device)) for s in ("train", "val", "test")
    }


def run_search(data, folder: Path, device="cpu"):
    torch.manual_seed(0)
    model = make_model("dnn", data.feature_map, hidden=[32, 16]).to(device)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    outcome = phases.search(
        model,
        load_splits(data, device),
        data.feature_map.scenario_names,
        SETTINGS,
        SsimConfig(phase="search", **SMALL_SSIM),
        HardGate(),
        lambda m, s: None,
        folder,
        {"dataset": "synthetic", "data_key": data.manifest["cache_key"]},
    )
    return outcome, initial


def test_search_then_retrain_for_any_number_of_scenarios(prepared, tmp_path):
    folder = tmp_path / "ssim"
    outcome, initial = run_search(prepared, folder)
    names = prepared.feature_map.scenario_names
    assert {f"test/auc/{n}" for n in names} <= set(outcome.test)
    selection = pl.read_parquet(folder / "selection.parquet")
    train_rows = read_split(prepared.split_path("train"), prepared.feature_map)
    assert selection["row_id"].to_list() == train_rows.row_id.tolist()
    assert selection["shared"].sum() == math.floor(0.5 * len(selection))
    summary = artifacts.check_search_folder(folder, prepared.manifest)
    assert set(summary["shared_fraction"]) == set(names)
    assert (folder / "score_histogram.png").stat().st_size > 0

    frozen = artifacts.load_frozen_selector(folder, prepared.feature_map, torch.device("cpu"))
    before = {k: v.clone() for k, v in frozen.state_dict().items()}
    loaded = []

    def build():
        model = make_model("dnn", prepared.feature_map, len(names), hidden=[32, 16])
        loaded.append(model)
        return model

    retrained, info = phases.retrain(
        build,
        load_splits(prepared, "cpu"),
        prepared.feature_map,
        SETTINGS,
        SsimConfig(phase="retrain", **SMALL_SSIM),
        BatchTopRatio(),
        lambda m, s: None,
        folder,
        prepared.manifest,
    )
    assert info.initial_weights == "search"
    assert {f"test/auc/{n}" for n in names} <= set(retrained.test)
    reloaded = build()
    assert artifacts.load_initial_state(folder, reloaded)
    assert all(torch.equal(reloaded.state_dict()[k], initial[k]) for k in initial)  # bit-identical init
    frozen_after = artifacts.load_frozen_selector(folder, prepared.feature_map, torch.device("cpu"))
    assert all(torch.equal(before[k], frozen_after.state_dict()[k]) for k in before)
    assert not any(p.requires_grad for p in frozen_after.parameters())


def test_retrain_never_updates_the_frozen_selector(prepared, tmp_path):
    folder = tmp_path / "ssim"
    run_search(prepared, folder)
    frozen = artifacts.load_frozen_selector(folder, prepared.feature_map, torch.device("cpu"))
    before = {k: v.clone() for k, v in frozen.state_dict().items()}
    gate_of, _ = BatchTopRatio().gate(given(prepared, folder, 0.5))
    model = make_model("dnn", prepared.feature_map, hidden=[8])
    optimizer = optimizer_for(model.parameters(), 0.1)  # the id table's gradients are sparse
    batch = read_split(prepared.split_path("train"), prepared.feature_map).slice(0, 256)
    for _ in range(3):
        optimizer.zero_grad()
        RetrainLoss(gate_of)(model, batch).backward()
        optimizer.step()
    assert all(torch.equal(before[k], v) for k, v in frozen.state_dict().items())
    assert int(gate_of(batch).sum()) == 128


def test_a_saved_selection_retrains_a_different_model_globally(tmp_path, prepared_synthetic):
    folder = tmp_path / "ssim"
    run_search(prepared_synthetic, folder)
    names = prepared_synthetic.feature_map.scenario_names

    def build():
        return make_model("star", prepared_synthetic.feature_map, 3)

    outcome, info = phases.retrain(
        build,
        load_splits(prepared_synthetic, "cpu"),
        prepared_synthetic.feature_map,
        SETTINGS,
        SsimConfig(phase="retrain", **SMALL_SSIM),
        GlobalTopRatio(),
        lambda m, s: None,
        folder,
        prepared_synthetic.manifest,
    )
    assert info.initial_weights == "fresh" and info.selection.startswith("global")
    assert outcome.test["test/auc/mean"] > 0.5
    assert set(outcome.test) >= {f"test/auc/{n}" for n in names}


def test_retrain_refuses_a_search_made_on_other_data(tmp_path, prepared_synthetic):
    folder = tmp_path / "ssim"
    run_search(prepared_synthetic, folder)
    from ssimctr.errors import UserError

    with pytest.raises(UserError, match="made on other data"):
        artifacts.check_search_folder(folder, {**prepared_synthetic.manifest, "cache_key": "another-key"})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_search_and_retrain_on_cuda(tmp_path, prepared_synthetic):
    outcome, _ = run_search(prepared_synthetic, tmp_path / "ssim", device="cuda")
    assert outcome.test["test/auc/mean"] > 0.5
    frozen = artifacts.load_frozen_selector(tmp_path / "ssim", prepared_synthetic.feature_map, torch.device("cuda"))
    assert next(frozen.parameters()).device.type == "cuda"


def test_streamed_scoring_equals_in_memory_scoring(prepared_synthetic, tmp_path):
    folder = tmp_path / "ssim"
    run_search(prepared_synthetic, folder)
    fm = prepared_synthetic.feature_map
    frozen = artifacts.load_frozen_selector(folder, fm, torch.device("cpu"))
    path = prepared_synthetic.split_path("train")
    in_memory = artifacts.score_rows(frozen, MemorySplit(read_split(path, fm)), batch_size=1000)
    streamed = artifacts.score_rows(frozen, StreamedSplit(path, fm, 3000, torch.device("cpu")), batch_size=1000)
    assert streamed.equals(in_memory)
    assert in_memory.height == prepared_synthetic.manifest["splits"]["train"]["rows"]


def test_ssim_p_uses_the_final_soft_gate_whose_weights_spread(prepared, tmp_path):
    folder = tmp_path / "ssim"
    run_search(prepared, folder)
    final = json.loads((folder / "summary.json").read_text())["final_temperature"]
    assert final == pytest.approx(1000.0)
    gate, description = SoftWeights().gate(given(prepared, folder, 0.5))
    batch = read_split(prepared.split_path("train"), prepared.feature_map)
    frozen = artifacts.load_frozen_selector(folder, prepared.feature_map, torch.device("cpu"))
    weights = gate(batch)
    torch.testing.assert_close(weights, torch.sigmoid(final * frozen(batch)))
    assert "1000" in description
    assert ((weights - 0.5).abs() > 0.4).float().mean() > 0.9  # near 0 or 1: not the constant half of sigmoid(m)
    if (frozen(batch) < 0).any() and (frozen(batch) > 0).any():
        assert weights.std() > 0.2


def built_in_a_pipeline(tmp_path, monkeypatch, *overrides: str) -> list[tuple[str, float | None]]:
    """(model class, backbone dropout) of every model a small ssim=pipeline job builds, in order."""
    built = []
    real = tasks_base.build_model

    def recording(backbone, *args, **kwargs):
        model = real(backbone, *args, **kwargs)
        built.append((type(model).__name__, backbone.get("dropout")))
        return model

    monkeypatch.setattr(tasks_base, "build_model", recording)
    cfg = compose(
        f"paths.outputs={tmp_path}",
        "tracking=none",
        "dataset.rows=6000",
        "dataset.users=500",
        "dataset.items=200",
        "trainer=debug",
        "trainer.progress=false",
        "ssim=pipeline",
        "ssim.selector_hidden=[16]",
        *overrides,
    )
    run(cfg, JobInfo(output_dir=tmp_path / "run"), Console(quiet=True))
    return built


def test_pipeline_retrains_with_retrain_dropout(tmp_path, monkeypatch):
    built = built_in_a_pipeline(tmp_path, monkeypatch, "ssim.retrain_dropout=0.5")
    # the job's model and the searcher as configured, the retrained model with retrain_dropout
    assert [dropout for _, dropout in built] == [0.0, 0.0, 0.5]


def test_ssim_r_shares_exactly_floor_r_b_random_rows_of_each_batch(tiny_feature_map):
    gate = RandomSelection(0.3, seed=4)
    batch = make_batch(tiny_feature_map, rows=50)
    first, second = gate(batch), gate(batch)
    assert int(first.sum()) == int(second.sum()) == 15
    assert not torch.equal(first, second)  # a fresh draw per batch, not a fixed set of rows
    assert torch.equal(first, RandomSelection(0.3, seed=4)(batch))  # seeded


def test_the_kl_term_sends_gradient_to_the_selector(search_setup):
    """λ·e·(1 − mean g) must move the selector (through the STE): not a constant."""
    model, selector, _, batch, _ = search_setup

    def selector_grads(lambda_kl: float) -> list[torch.Tensor]:
        selector.zero_grad()
        loss = SearchLoss(
            selector,
            gate=HardGate(),
            epsilon=0.5,
            lambda_kl=lambda_kl,
            final_temperature=1000.0,
            total_steps=4,
            scenario_names=("s0", "s1", "s2"),
            log=lambda m, s: None,
            log_every=10,
        )
        loss(model, batch).backward()
        return [p.grad.clone() for p in selector.parameters()]

    with_kl, without = selector_grads(1.0), selector_grads(0.0)
    assert any((a - b).abs().sum() > 0 for a, b in zip(with_kl, without))


def test_search_trains_the_selector_in_its_own_adam_group(tiny_feature_map):
    model = make_model("dnn", tiny_feature_map, hidden=[8])
    selector = Selector(model.embedding.output_dim, [8], 3)
    settings = trainer(3e-3, weight_decay=1e-6)
    ssim = SsimConfig(phase="search", selector_lr=1e-5)
    backbone, own = phases.search_optimizer(model, selector, settings, ssim).param_groups
    assert {id(p) for p in own["params"]} == {id(p) for p in selector.parameters()}
    assert {id(p) for p in backbone["params"]} == {id(p) for p in model.parameters()}
    assert (own["lr"], own["weight_decay"]) == (1e-5, 0.0)
    assert (backbone["lr"], backbone["weight_decay"]) == (3e-3, 1e-6)


def test_a_search_ends_at_the_final_temperature_and_keeps_the_head_setting(prepared, tmp_path):
    """The annealing spans exactly the search's steps (τ = final at the end), and heads=shared
    gives one selector head (SSIM-ND), per_scenario one head per scenario."""
    folder = tmp_path / "ssim"
    run_search(prepared, folder)
    assert json.loads((folder / "summary.json").read_text())["final_temperature"] == pytest.approx(1000.0)
    k = prepared.feature_map.num_scenarios
    assert torch.load(folder / "selector.pt")["state"]["heads.weight"].shape[0] == k
    shared = tmp_path / "shared"
    torch.manual_seed(0)
    phases.search(
        make_model("dnn", prepared.feature_map, hidden=[32, 16]),
        load_splits(prepared, "cpu"),
        prepared.feature_map.scenario_names,
        SETTINGS,
        SsimConfig(phase="search", heads="shared", **SMALL_SSIM),
        HardGate(),
        lambda m, s: None,
        shared,
        {"dataset": "synthetic", "data_key": prepared.manifest["cache_key"]},
    )
    saved = torch.load(shared / "selector.pt")
    assert saved["shared_head"] and saved["state"]["heads.weight"].shape[0] == 1


def test_the_frozen_selector_takes_no_gradient_and_stays_in_eval_mode(prepared, tmp_path):
    folder = tmp_path / "ssim"
    run_search(prepared, folder)
    frozen = artifacts.load_frozen_selector(folder, prepared.feature_map, torch.device("cpu"))
    frozen.train()
    assert not frozen.training and not any(module.training for module in frozen.modules())
    model = make_model("dnn", prepared.feature_map, hidden=[8])
    batch = read_split(prepared.split_path("train"), prepared.feature_map).slice(0, 256)
    RetrainLoss(soft_weights(frozen, 1000.0))(model, batch).backward()  # a gate that could carry gradient
    assert all(p.grad is None and not p.requires_grad for p in frozen.parameters())


def test_pipeline_searches_with_search_backbone_and_retrains_the_job_backbone(tmp_path, monkeypatch):
    built = built_in_a_pipeline(
        tmp_path, monkeypatch, "backbone=star", "ssim.search_backbone={_target_: ssimctr.models.backbones.dnn.DNN}"
    )
    assert [name for name, _ in built] == ["STAR", "DNN", "STAR"]  # the job's model, the searcher, the retrained model
