"""SSIM's selection AUC on planted data: the selector's scores against the planted flag (dataset.truth)."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
import torch
from sklearn.metrics import roc_auc_score

from conftest import make_model, synthetic_config
from ssimctr.config.schema import ScenarioConfig, SplitConfig, SsimConfig, TrainerConfig
from ssimctr.data import synthetic
from ssimctr.data.datasplit import MemorySplit, open_split
from ssimctr.data.loaders import read_split
from ssimctr.data.prepare import prepare
from ssimctr.ssim import artifacts, phases
from ssimctr.ssim.criteria import HardGate

NAMES = ("s0", "s1", "s2")
SETTINGS = TrainerConfig(batch_size=256, eval_batch_size=4096, epochs=1, progress=False, seed=0)
SPLITS = ("train", "val", "test")
SSIM = SsimConfig(phase="search", selector_hidden=[16], selector_lr=1e-3, epsilon=0.5, ratio=0.5, log_every=5)


def _selection(scores: np.ndarray, scenario: np.ndarray) -> pl.DataFrame:
    return pl.DataFrame({"row_id": np.arange(len(scores)), "scenario": scenario.astype(np.int32), "score": scores})


@pytest.fixture
def hand_made() -> tuple[np.ndarray, np.ndarray, pl.DataFrame]:
    """400 rows: scenario, planted flag, and the flag per row_id in another order (as read from disk)."""
    rng = np.random.default_rng(0)
    scenario, flag = rng.integers(0, 3, 400), rng.integers(0, 2, 400)
    order = rng.permutation(400)
    return scenario, flag, pl.DataFrame({"row_id": order, "truth": flag[order]})


def test_a_score_equal_to_the_flag_has_auc_one_its_opposite_zero(hand_made):
    scenario, flag, truth = hand_made
    assert artifacts.selection_auc(_selection(flag.astype(float), scenario), truth, NAMES) == {
        name: 1.0 for name in (*NAMES, "overall")
    }
    assert set(artifacts.selection_auc(_selection(-flag.astype(float), scenario), truth, NAMES).values()) == {0.0}


def test_selection_auc_is_sklearns_per_scenario_and_over_all_rows(hand_made):
    scenario, flag, truth = hand_made
    scores = np.random.default_rng(1).normal(size=400) + 0.5 * flag
    result = artifacts.selection_auc(_selection(scores, scenario), truth, NAMES)
    for k, name in enumerate(NAMES):
        assert result[name] == pytest.approx(roc_auc_score(flag[scenario == k], scores[scenario == k]))
    assert result["overall"] == pytest.approx(roc_auc_score(flag, scores))


def _prepared(folder, **planting):
    config = synthetic_config(rows=6_000, users=600, items=200, **planting)
    return prepare(config, ScenarioConfig(kind="column", column="scenario"), SplitConfig(kind="time"), folder)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return _prepared(tmp_path_factory.mktemp("cache"), shareable=0.5, truth=synthetic.SHAREABLE)


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    return _prepared(tmp_path_factory.mktemp("cache"))


def _splits(data) -> dict:
    return {s: open_split(data.split_path(s), data.feature_map, True, 10**6, torch.device("cpu")) for s in SPLITS}


def test_the_planted_truth_is_read_for_the_prepared_train_rows_only_when_there(planted, plain):
    truth = artifacts.planted_truth(_splits(planted)["train"])
    rows = read_split(planted.split_path("train"), planted.feature_map).row_id
    assert sorted(truth["row_id"].to_list()) == sorted(rows.tolist())
    assert artifacts.planted_truth(_splits(plain)["train"]) is None
    assert artifacts.planted_truth(MemorySplit(read_split(planted.split_path("train"), planted.feature_map))) is None


def _search(data, folder) -> list[dict]:
    logged = []
    torch.manual_seed(0)
    model = make_model("dnn", data.feature_map, hidden=[16])
    summary = {"dataset": "synthetic", "data_key": data.manifest["cache_key"]}
    phases.search(
        model, _splits(data), NAMES, SETTINGS, SSIM, HardGate(), lambda m, s: logged.append(m), folder, summary
    )
    return logged


def test_a_search_on_planted_data_logs_and_saves_its_selection_auc(planted, tmp_path):
    logged = _search(planted, tmp_path)
    keys = {f"ssim/selection_auc/{name}" for name in (*NAMES, "overall")}
    metrics = next(m for m in logged if keys <= set(m))
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["selection_auc"] == {key.rsplit("/", 1)[1]: metrics[key] for key in keys}
    assert all(0.0 <= value <= 1.0 for value in summary["selection_auc"].values())


def test_a_search_without_a_planted_answer_logs_no_selection_auc(plain, tmp_path):
    logged = _search(plain, tmp_path)
    assert not any(key.startswith("ssim/selection_auc") for metrics in logged for key in metrics)
    assert "selection_auc" not in json.loads((tmp_path / "summary.json").read_text())
