"""Tests that kill mutants `make mutation` (mutmut) left alive in ssimctr/ssim/ and ssimctr/train/sharing.py:
each checks a behaviour the other SSIM tests reached without pinning down."""

from __future__ import annotations

import json
import math
from pathlib import Path

import polars as pl
import pytest
import torch
import torch.nn.functional as F
from rich.console import Console

from conftest import compose, make_batch, make_model
from ssimctr.cli import runner
from ssimctr.cli.runner import JobInfo, run
from ssimctr.data.batch import Batch
from ssimctr.errors import UserError
from ssimctr.ssim import artifacts, criteria, losses, phases
from ssimctr.ssim.criteria import HardGate, SoftGate
from ssimctr.ssim.selection import RandomSelection, soft_weights
from ssimctr.ssim.selector import Selector, hard_gate, temperature
from ssimctr.tasks import base as tasks_base
from ssimctr.tracking.base import NullTracker
from ssimctr.train.sharing import REDUCTIONS, FixedSharing, sharing_loss

SMALL = (
    "dataset.rows=4000",
    "dataset.users=400",
    "dataset.items=150",
    "trainer=debug",
    "trainer.progress=false",
)


class Tracker(NullTracker):
    """Records tags, the steps of each metric and artifact downloads; serves downloads from `runs`."""

    def __init__(self, runs: dict[str, Path], run_id: str | None) -> None:
        self.runs, self._run_id, self.tags, self.metrics, self.downloads = runs, run_id, {}, {}, []

    @property
    def run_id(self) -> str | None:
        return self._run_id

    def set_tags(self, tags: dict[str, str]) -> None:
        self.tags.update(tags)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        for key in metrics:
            self.metrics.setdefault(key, []).append(step)

    def download_artifacts(self, run_id: str, artifact_path: str, destination: Path) -> Path:
        self.downloads.append((run_id, artifact_path, destination))
        return self.runs[run_id]


class Jobs:
    """Small SSIM jobs run through the CLI runner in one output folder, each with a recording tracker."""

    def __init__(self, tmp_path: Path, monkeypatch) -> None:
        self.tmp_path, self.runs, self.trackers, self.searches, self.run_id = tmp_path, {}, [], 0, None
        real = phases.search

        def counting(*args, **kwargs):
            self.searches += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(phases, "search", counting)
        monkeypatch.setattr(runner, "make_tracker", self._tracker)

    def _tracker(self, *args) -> Tracker:
        self.trackers.append(Tracker(self.runs, self.run_id))
        return self.trackers[-1]

    def run(self, name: str, *overrides: str, run_id: str | None = None) -> Tracker:
        """Run the job `name` (its tracker's run id `run_id`); its tracker."""
        self.run_id = run_id
        cfg = compose(f"paths.outputs={self.tmp_path}", *SMALL, *overrides)
        run(cfg, JobInfo(output_dir=self.tmp_path / name), Console(quiet=True))
        return self.trackers[-1]


@pytest.fixture
def jobs(tmp_path, monkeypatch) -> Jobs:
    return Jobs(tmp_path, monkeypatch)


def _search(jobs: Jobs) -> Path:
    """An ssim=search job (backbone hidden [24], its dropout an interpolation); its search folder."""
    tracker = jobs.run(
        "search", "ssim=search", "backbone.hidden=[24]", "backbone.dropout=${trainer.optimizer.weight_decay}"
    )
    assert tracker.tags == {"ssim.phase": "search"}
    assert "ssim/search/gate_mean" in tracker.metrics
    return jobs.tmp_path / "search" / "ssim"


def test_a_search_job_records_its_resolved_backbone_and_sizes_the_selector_by_it(jobs):
    folder = _search(jobs)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["backbone"]["hidden"] == [24] and summary["backbone"]["dropout"] == 0.0
    assert torch.load(folder / "selector.pt")["hidden"] == [24]


def test_a_retrain_job_reads_the_search_of_from_path_and_tags_its_lineage(jobs):
    folder = _search(jobs)
    tracker = jobs.run("retrain", "ssim=retrain", "backbone.hidden=[24]", f"ssim.from_path={folder}")
    assert jobs.searches == 1 and not tracker.downloads
    assert tracker.tags == {
        "ssim.search_path": str(folder),
        "ssim.phase": "retrain",
        "ssim.initial_weights": "search",
        "ssim.selection": "batch top r=0.95",
    }
    assert "train/loss" in tracker.metrics  # the retrain logs its epochs


def test_a_retrain_job_downloads_the_search_of_from_run(jobs):
    jobs.runs["abc123"] = _search(jobs)
    tracker = jobs.run("retrain", "ssim=retrain", "ssim.from_run=abc123")
    assert tracker.downloads == [("abc123", "ssim", jobs.tmp_path / "retrain" / "search")]
    assert tracker.tags["ssim.search_run_id"] == "abc123" and tracker.tags["ssim.initial_weights"] == "fresh"


def test_a_retrain_job_without_a_search_needs_the_random_selector(jobs):
    tracker = jobs.run("random", "ssim=retrain", "ssim/selection=random", "ssim.ratio=0.5")
    assert tracker.tags == {"ssim.phase": "retrain", "ssim.initial_weights": "fresh", "ssim.selection": "random r=0.5"}
    with pytest.raises(UserError, match="needs a search"):
        jobs.run("none", "ssim=retrain")


def test_a_retrain_job_builds_its_model_with_retrain_dropout(jobs, monkeypatch):
    built, real = [], tasks_base.build_model

    def recording(backbone, *args, **kwargs):
        built.append(backbone.get("dropout"))
        return real(backbone, *args, **kwargs)

    monkeypatch.setattr(tasks_base, "build_model", recording)
    jobs.run("random", "ssim=retrain", "ssim/selection=random", "ssim.retrain_dropout=0.25")
    assert built == [0.0, 0.25]  # the job's model as configured, the retrained one with retrain_dropout


def test_a_search_job_passes_the_regime_loss_reduction(jobs, monkeypatch):
    reductions, real = [], losses.SearchLoss

    def recording(*args, **kwargs):
        reductions.append(kwargs.get("reduction"))
        return real(*args, **kwargs)

    monkeypatch.setattr(criteria, "SearchLoss", recording)
    jobs.run("search", "ssim=search", "ssim.selector_hidden=[8]", "regime.loss_reduction=scenario")
    assert reductions == ["scenario"]


def test_ssim_phases_refuse_a_regime_without_joint_towers():
    """The multi-scenario task's declaration (`supports.ssim_regimes`) refuses it before any data or run."""
    with pytest.raises(UserError, match=r"ssim=search does not support regime=single .*: use regime=mt or regime=mt_s"):
        runner.check_job(compose("regime=single", "ssim=search"), {})


def test_soft_weights_are_sigmoid_of_temperature_times_score():
    scores = torch.tensor([0.001, -0.002, 0.0005, 0.0])
    weights = soft_weights(lambda batch: scores, 1000.0)(None)
    torch.testing.assert_close(weights, torch.sigmoid(torch.tensor([1.0, -2.0, 0.5, 0.0])))


def _meta_batch(rows: int) -> Batch:
    """A batch whose tensors live on the meta device: shapes and devices only."""
    meta = torch.device("meta")
    return Batch(
        cat=torch.zeros(rows, 2, dtype=torch.long, device=meta),
        num=torch.zeros(rows, 0, device=meta),
        scenario=torch.zeros(rows, dtype=torch.long, device=meta),
        label=torch.zeros(rows, device=meta),
        row_id=torch.arange(rows, device=meta),
    )


def test_random_selection_gates_live_on_the_batch_device():
    assert RandomSelection(0.5, seed=0)(_meta_batch(10)).device.type == "meta"


def test_shared_by_row_is_a_table_of_every_row_id_on_the_device(tmp_path):
    pl.DataFrame({"row_id": [3, 0, 5, 1], "score": [0.9, 0.1, 0.5, 0.7]}).write_parquet(tmp_path / "selection.parquet")
    table = artifacts.shared_by_row(tmp_path, 0.5, torch.device("cpu"))
    assert table.tolist() == [False, True, False, True, False, False]  # ids 2 and 4 absent: not shared
    assert artifacts.shared_by_row(tmp_path, 0.5, torch.device("meta")).device.type == "meta"


def _scenario_sum_by_hand(logits, label, scenario, gate, own) -> torch.Tensor:
    """Σ_k (Σ_i a_ik ℓ_ik) / n_k, a_ik = own_i 1[d_i = k] + g_i, written out row by row."""
    total = torch.zeros((), dtype=logits.dtype)
    for k in range(logits.shape[1]):
        weights = torch.stack([own[i] * (scenario[i] == k) + gate[i] for i in range(len(label))])
        losses = torch.stack([F.binary_cross_entropy_with_logits(logits[i, k], label[i]) for i in range(len(label))])
        if weights.sum() > 0:
            total = total + (weights * losses).sum() / weights.sum()
    return total


def test_the_scenario_sum_uses_own_weight_and_fractional_tower_counts():
    torch.manual_seed(0)
    logits, label = torch.randn(3, 3), torch.tensor([1.0, 0.0, 1.0])
    scenario, gate = torch.tensor([0, 0, 1]), torch.tensor([0.0, 0.3, 0.2])
    own = torch.tensor([1.0, 0.0, 1.0])  # the search's 1(g = 0), not 1 − g
    # tower 2 has no row of its own: its count is 0.3 + 0.2 = 0.5, a fraction
    expected = _scenario_sum_by_hand(logits, label, scenario, gate, own)
    got = sharing_loss(logits, label, scenario, gate, own_weight=own, reduction="scenario")
    torch.testing.assert_close(got, expected)


def test_fixed_sharing_reduces_as_configured(tiny_feature_map):
    torch.manual_seed(0)
    model = make_model("dnn", tiny_feature_map, hidden=[8])
    batch = make_batch(tiny_feature_map, rows=12)
    towers = model.towers(batch)
    for reduction in REDUCTIONS:
        expected = sharing_loss(towers, batch.label, batch.scenario, 1.0, reduction=reduction)
        torch.testing.assert_close(FixedSharing(1.0, reduction)(model, batch), expected)
    assert FixedSharing(1.0, "scenario")(model, batch) != FixedSharing(1.0, "row")(model, batch)


def test_the_selector_scores_each_row_with_its_own_scenario_head():
    torch.manual_seed(0)
    selector = Selector(6, [4], 3)
    assert selector.heads.out_features == 3 and not any(isinstance(m, torch.nn.Dropout) for m in selector.modules())
    x, scenario = torch.randn(5, 6), torch.tensor([0, 1, 2, 1, 0])
    every = selector.heads(selector.mlp(x))
    torch.testing.assert_close(selector(x, scenario), every[torch.arange(5), scenario])
    assert selector(x[:1], scenario[:1]).shape == (1,)


def test_a_shared_head_scores_every_scenario_alike_and_dropout_is_applied():
    torch.manual_seed(0)
    shared = Selector(6, [4], 3, shared_head=True)
    x = torch.randn(4, 6)
    assert shared.heads.out_features == 1
    torch.testing.assert_close(shared(x, torch.tensor([0, 1, 2, 2])), shared(x, torch.zeros(4, dtype=torch.long)))
    assert shared(x[:1], torch.tensor([2])).shape == (1,)
    dropped = Selector(6, [4], 3, dropout=0.3)
    assert [m.p for m in dropped.modules() if isinstance(m, torch.nn.Dropout)] == [0.3]


def test_the_ste_clamps_a_large_positive_gradient_to_one():
    p = torch.tensor([0.9, 0.8], requires_grad=True)
    (hard_gate(p, 0.5) * torch.tensor([5.0, 0.5])).sum().backward()
    assert p.grad.tolist() == [1.0, 0.5]


def test_temperature_at_the_edges_of_the_schedule():
    assert temperature(0, 1, 1000.0) == 1000.0  # one step: it is the last
    assert temperature(0, 2, 1000.0) == 1.0 and temperature(1, 2, 1000.0) == pytest.approx(1000.0)
    assert temperature(80, 50, 1000.0) == pytest.approx(1000.0)  # past the last step τ stays final


def _search_loss(scores: torch.Tensor, **options) -> tuple[losses.SearchLoss, list]:
    """A SearchLoss whose selector gives the fixed `scores` [B] (so the gates are known); its log."""
    logged = []
    defaults = dict(epsilon=0.5, lambda_kl=0.4, final_temperature=1000.0, total_steps=5, gate=HardGate(), log_every=10)
    loss = losses.SearchLoss(
        lambda embedding, scenario: scores,
        scenario_names=["s0", "s1", "s2"],
        log=lambda metrics, step: logged.append((step, metrics)),
        **{**defaults, **options},
    )
    return loss, logged


def test_the_hard_gate_shares_above_epsilon_and_masks_the_own_tower_the_soft_gate_weighs_by_p():
    p = torch.tensor([0.2, 0.5, 0.7, 0.9])
    g, own = HardGate().gates(p, 0.5)
    assert g.tolist() == [0.0, 0.0, 1.0, 1.0] and own.tolist() == [1.0, 1.0, 0.0, 0.0]
    g, own = SoftGate().gates(p, 0.5)
    torch.testing.assert_close(g, p)
    torch.testing.assert_close(own, 1 - p)


def test_the_hard_gate_own_tower_mask_carries_no_gradient(tiny_feature_map):
    """A shared row's selector gradient is (1/B)[mean_k BCE_k − λe]: the mask 1(g = 0) adds no own-tower term."""
    torch.manual_seed(0)
    model, batch = make_model("dnn", tiny_feature_map, hidden=[8]), make_batch(tiny_feature_map, rows=6)
    scores = torch.tensor([3.0, -3.0, 2.0, -2.0, 1.0, -1.0], requires_grad=True)
    loss, _ = _search_loss(scores, total_steps=1, final_temperature=1.0)
    loss(model, batch).backward()
    with torch.no_grad():
        towers, g = model.towers(batch), (scores > 0).float()
        every = F.binary_cross_entropy_with_logits(towers, batch.label[:, None].expand_as(towers), reduction="none")
        p = torch.sigmoid(scores)
        expected = g * (every.mean(1) - 0.4 * math.e) / 6 * p * (1 - p)  # STE passes it on; sigmoid's slope
    torch.testing.assert_close(scores.grad, expected)


def test_the_soft_gate_trains_own_towers_with_one_minus_p(tiny_feature_map):
    torch.manual_seed(0)
    model, batch = make_model("dnn", tiny_feature_map, hidden=[8]), make_batch(tiny_feature_map, rows=6)
    scores = torch.tensor([0.002, -0.001, 0.0, 0.003, -0.004, 0.001])
    loss, _ = _search_loss(scores, gate=SoftGate(), total_steps=1)
    p = torch.sigmoid(1000.0 * scores)
    towers = model.towers(batch)
    expected = sharing_loss(towers, batch.label, batch.scenario, p, own_weight=1 - p) + 0.4 * math.e * (1 - p.mean())
    torch.testing.assert_close(loss(model, batch), expected)


def test_both_ssim_losses_reduce_as_the_regime_says(tiny_feature_map):
    torch.manual_seed(0)
    model, batch = make_model("dnn", tiny_feature_map, hidden=[8]), make_batch(tiny_feature_map, rows=6)
    scores = torch.tensor([3.0, -3.0, 2.0, -2.0, 1.0, -1.0])
    g = (scores > 0).float()
    towers = model.towers(batch)
    search, _ = _search_loss(scores, total_steps=1, final_temperature=1.0, reduction="scenario")
    expected = sharing_loss(towers, batch.label, batch.scenario, g, own_weight=1 - g, reduction="scenario")
    torch.testing.assert_close(search(model, batch), expected + 0.4 * math.e * (1 - g.mean()))
    retrain = losses.RetrainLoss(lambda b: g, reduction="scenario")
    torch.testing.assert_close(retrain(model, batch), expected)


def test_gate_statistics_are_logged_every_log_every_steps_with_per_scenario_fractions(tiny_feature_map):
    model = make_model("dnn", tiny_feature_map, hidden=[8])
    scores = torch.tensor([5.0, -5.0, 5.0, -5.0])  # scenarios 0, 1, 2, 0: gates 1, 0, 1, 0
    loss, logged = _search_loss(scores, log_every=2, total_steps=6)
    for _ in range(6):
        loss(model, make_batch(tiny_feature_map, rows=4))
    assert [step for step, _ in logged] == [0, 2, 4, 5]
    fractions = {key.rsplit("/", 1)[1]: value for key, value in logged[0][1].items() if "/shared/" in key}
    assert fractions == {"s0": 0.5, "s1": 0.0, "s2": 1.0}
    loss, logged = _search_loss(torch.tensor([5.0, 5.0]))
    loss(model, make_batch(tiny_feature_map, rows=2))  # scenario s2 has no row: fraction 0
    assert logged[0][1]["ssim/search/shared/s2"] == 0.0


def test_the_row_reduction_follows_the_formula_for_fractional_gates_and_own_weights():
    torch.manual_seed(0)
    logits, label, scenario = torch.randn(4, 3), torch.tensor([1.0, 0.0, 1.0, 0.0]), torch.tensor([0, 1, 2, 0])
    own = F.binary_cross_entropy_with_logits(logits[torch.arange(4), scenario], label, reduction="none")
    every = F.binary_cross_entropy_with_logits(logits, label[:, None].expand(4, 3), reduction="none").mean(1)
    torch.testing.assert_close(sharing_loss(logits, label, scenario, 0.5), (0.5 * own + 0.5 * every).mean())
    weight = torch.tensor([1.0, 0.0, 0.25, 1.0])
    got = sharing_loss(logits, label, scenario, 0.5, own_weight=weight)
    torch.testing.assert_close(got, (weight * own + 0.5 * every).mean())
    with pytest.raises(ValueError, match="reduction must be one of row, scenario, got mean"):
        sharing_loss(logits, label, scenario, 0.5, reduction="mean")


def test_the_scenario_sum_keeps_the_logits_precision_and_device():
    logits = torch.tensor([[0.3, -1.2], [2.0, 0.1], [-0.5, 0.7]], dtype=torch.float64)
    label, scenario, gate = torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64), torch.tensor([0, 1, 1]), 0.3
    gates = torch.full((3,), gate, dtype=torch.float64)
    expected = _scenario_sum_by_hand(logits, label, scenario, gates, 1 - gates)
    torch.testing.assert_close(
        sharing_loss(logits, label, scenario, gate, reduction="scenario"), expected, rtol=0, atol=1e-15
    )
    meta = torch.device("meta")
    on_meta = sharing_loss(logits.to(meta), label.to(meta), scenario.to(meta), gate, reduction="scenario")
    assert on_meta.device == meta


PIPELINE = ("ssim=pipeline", "ssim.selector_hidden=[8]")


def test_a_pipeline_logs_its_search_under_search_and_records_the_resolved_backbone(jobs):
    tracker = jobs.run("first", *PIPELINE, "backbone.dropout=${trainer.optimizer.weight_decay}")
    assert tracker.tags["ssim.search_run_id"] == "this run" and tracker.tags["ssim.phase"] == "pipeline"
    assert tracker.metrics["search/ssim/search/gate_mean"][0] == 0  # the search's own steps
    summary = json.loads((jobs.tmp_path / "first" / "ssim" / "summary.json").read_text())
    assert summary["backbone"]["dropout"] == 0.0


def test_a_reused_search_names_the_run_that_searched_or_untracked(jobs):
    jobs.run("untracked", *PIPELINE)
    assert jobs.run("reuses_untracked", *PIPELINE).tags["ssim.search_run_id"] == "untracked"
    assert jobs.run("tracked", *PIPELINE, "seed=9", run_id="run-1").tags["ssim.search_run_id"] == "run-1"
    again = jobs.run("reuses_tracked", *PIPELINE, "seed=9", run_id="run-2")
    assert again.tags["ssim.search_run_id"] == "run-1" and again.tags["ssim.search_reused"] == "true"
    assert jobs.searches == 2


def test_a_search_is_reused_only_on_the_same_data_backbone_and_seed(jobs):
    pinned = (*PIPELINE, "trainer.seed=5")  # the batches' seed stays: the job's seed alone must count
    keys = {
        jobs.run(name, *pinned, *overrides).tags["ssim.search_key"]
        for name, overrides in (
            ("base", ()),
            ("backbone", ("backbone.hidden=[32]",)),
            ("data", ("dataset.rows=3000",)),
            ("seed", ("seed=9",)),
        )
    }
    assert len(keys) == 4 and jobs.searches == 4
    jobs.run("again", *pinned)
    assert jobs.searches == 4
