import warnings

import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from ssimctr.metrics import auc, logloss, scenario_metrics

NAMES = ["s0", "s1", "s2"]


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _data(n: int, seed: int, pos_rate: float = 0.1):
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < pos_rate).astype(np.int64)
    logits = np.clip(rng.normal(labels * 0.8 - 1.0, 2.0), -15, 15)
    scenario = rng.integers(0, 3, size=n)
    return labels, logits, scenario


@pytest.mark.parametrize("n", [10, 257, 5000])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_matches_sklearn_with_ties(n, seed):
    labels, logits, _ = _data(n, seed, pos_rate=0.2)
    labels[:2] = [0, 1]
    scores = np.round(_sigmoid(logits), 1)  # many ties
    assert len(np.unique(scores)) < n
    assert auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-9)


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.float32, np.float64, bool])
def test_auc_label_dtypes(dtype):
    labels, logits, _ = _data(300, 3, pos_rate=0.3)
    assert auc(labels.astype(dtype), logits.astype(np.float32)) == pytest.approx(
        roc_auc_score(labels, logits.astype(np.float32)), abs=1e-9
    )


def test_auc_one_class_is_nan_without_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isnan(auc(np.zeros(5), np.arange(5.0)))
        assert np.isnan(auc(np.ones(5), np.arange(5.0)))
        assert np.isnan(auc(np.zeros(0), np.zeros(0)))


@pytest.mark.parametrize("n", [10, 257, 5000])
@pytest.mark.parametrize("seed", [0, 1])
def test_logloss_matches_sklearn(n, seed):
    labels, logits, _ = _data(n, seed)
    logits = np.round(logits, 1)
    assert logloss(labels, logits) == pytest.approx(log_loss(labels, _sigmoid(logits), labels=[0, 1]), abs=1e-9)


def test_logloss_extreme_logits_are_finite():
    value = logloss(np.array([1, 0]), np.array([-1000.0, 1000.0]))
    assert value == pytest.approx(1000.0)


def test_scenario_metrics_keys_and_values():
    labels, logits, scenario = _data(3000, 7, pos_rate=0.15)
    out = scenario_metrics("val", labels, logits, scenario, NAMES)
    expected = {f"val/{m}/{s}" for m in ("auc", "logloss") for s in [*NAMES, "overall", "mean"]}
    assert set(out) == expected
    for k, name in enumerate(NAMES):
        m = scenario == k
        assert out[f"val/auc/{name}"] == pytest.approx(roc_auc_score(labels[m], logits[m]), abs=1e-9)
        assert out[f"val/logloss/{name}"] == pytest.approx(
            log_loss(labels[m], _sigmoid(logits[m]), labels=[0, 1]), abs=1e-9
        )
    assert out["val/auc/overall"] == pytest.approx(roc_auc_score(labels, logits), abs=1e-9)
    assert out["val/logloss/overall"] == pytest.approx(log_loss(labels, _sigmoid(logits)), abs=1e-9)
    assert out["val/auc/mean"] == pytest.approx(np.mean([out[f"val/auc/{n}"] for n in NAMES]), abs=1e-12)
    assert out["val/logloss/mean"] == pytest.approx(np.mean([out[f"val/logloss/{n}"] for n in NAMES]), abs=1e-12)


def test_one_class_scenario_is_nan_with_warning():
    labels, logits, scenario = _data(2000, 8, pos_rate=0.2)
    labels[scenario == 2] = 0
    with pytest.warns(UserWarning, match=r"val: scenario 's2' has only one class \(all 0\)") as record:
        out = scenario_metrics("val", labels, logits, scenario, NAMES)
    assert len(record) == 1
    assert np.isnan(out["val/auc/s2"])
    assert np.isfinite(out["val/logloss/s2"])
    assert out["val/auc/mean"] == pytest.approx((out["val/auc/s0"] + out["val/auc/s1"]) / 2, abs=1e-12)
    assert out["val/logloss/mean"] == pytest.approx(np.mean([out[f"val/logloss/{n}"] for n in NAMES]), abs=1e-12)
    assert np.isfinite(out["val/auc/overall"])


def test_zero_row_scenario():
    labels, logits, scenario = _data(1000, 9, pos_rate=0.3)
    scenario = np.where(scenario == 1, 0, scenario)
    with pytest.warns(UserWarning, match=r"test: scenario 's1' has no rows") as record:
        out = scenario_metrics("test", labels, logits, scenario, NAMES)
    assert len(record) == 1
    assert np.isnan(out["test/auc/s1"]) and np.isnan(out["test/logloss/s1"])
    assert out["test/auc/mean"] == pytest.approx((out["test/auc/s0"] + out["test/auc/s2"]) / 2, abs=1e-12)
    assert out["test/logloss/mean"] == pytest.approx((out["test/logloss/s0"] + out["test/logloss/s2"]) / 2, abs=1e-12)


def test_all_scenarios_one_class_means_are_nan_without_runtime_warning():
    labels = np.zeros(6)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        out = scenario_metrics("val", labels, np.zeros(6), np.array([0, 0, 1, 1, 2, 2]), NAMES)
    assert [w.category for w in record] == [UserWarning] * 3
    assert np.isnan(out["val/auc/mean"]) and np.isnan(out["val/auc/overall"])
    assert out["val/logloss/mean"] == pytest.approx(np.log(2.0))


def test_length_mismatch_raises():
    with pytest.raises(ValueError):
        auc(np.array([0, 1, 1]), np.array([0.1, 0.2]))
    with pytest.raises(ValueError):
        logloss(np.array([0, 1]), np.array([0.1, 0.2, 0.3]))
    with pytest.raises(ValueError):
        scenario_metrics("val", np.array([0, 1]), np.array([0.1, 0.2]), np.array([0]), NAMES)


def test_scenario_out_of_range_raises():
    with pytest.raises(ValueError):
        scenario_metrics("val", np.array([0, 1]), np.array([0.1, 0.2]), np.array([0, 3]), NAMES)
