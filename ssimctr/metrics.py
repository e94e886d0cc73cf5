"""Per-scenario AUC and logloss (numpy/scipy only).

Metric names double as MLflow metric keys:
`{split}/auc/{scenario}`, `{split}/logloss/{scenario}`, `{split}/auc/overall`,
`{split}/logloss/overall` (all rows pooled), `{split}/auc/mean`, `{split}/logloss/mean`
(macro mean over scenarios).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from scipy.stats import rankdata


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Exact ROC AUC (Mann-Whitney U with average ranks for ties); NaN when labels hold one class."""
    y, s = _check_pair(labels, scores, "scores")
    pos = y == 1.0
    n_pos = int(pos.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)
    u = ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def logloss(labels: np.ndarray, logits: np.ndarray) -> float:
    """Mean binary cross-entropy from logits: mean(softplus(z) - y * z), in float64; NaN when empty."""
    y, z = _check_pair(labels, logits, "logits")
    if y.size == 0:
        return float("nan")
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def scenario_metrics(
    split: str,
    labels: np.ndarray,
    logits: np.ndarray,
    scenario: np.ndarray,
    scenario_names: Sequence[str],
) -> dict[str, float]:
    """AUC and logloss per scenario, pooled over all rows (`overall`) and macro-averaged (`mean`).

    A scenario with one class or no rows gets NaN (and one warning) instead of an exception;
    the AUC mean skips scenarios whose AUC is NaN, the logloss mean skips scenarios without rows.
    """
    y, z = _check_pair(labels, logits, "logits")
    s = _check_scenario(scenario, y.size, len(scenario_names))
    out: dict[str, float] = {}
    aucs: list[float] = []
    losses: list[float] = []
    for k, name in enumerate(scenario_names):
        mask = s == k
        yk = y[mask]
        if yk.size == 0:
            warnings.warn(f"{split}: scenario {name!r} has no rows; its AUC and logloss are NaN", stacklevel=2)
        elif yk.min() == yk.max():
            warnings.warn(
                f"{split}: scenario {name!r} has only one class (all {int(yk[0])}); its AUC is NaN", stacklevel=2
            )
        out[f"{split}/auc/{name}"] = auc(yk, z[mask])
        out[f"{split}/logloss/{name}"] = logloss(yk, z[mask])
        aucs.append(out[f"{split}/auc/{name}"])
        if yk.size:
            losses.append(out[f"{split}/logloss/{name}"])
    out[f"{split}/auc/overall"] = auc(y, z)
    out[f"{split}/logloss/overall"] = logloss(y, z)
    out[f"{split}/auc/mean"] = _mean([a for a in aucs if not np.isnan(a)])
    out[f"{split}/logloss/mean"] = _mean(losses)
    return out


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def _as_1d(name: str, a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    return a


def _binary_labels(labels: np.ndarray) -> np.ndarray:
    y = _as_1d("labels", labels).astype(np.float64)
    if not np.all((y == 0.0) | (y == 1.0)):
        raise ValueError("labels must be 0 or 1")
    return y


def _check_pair(labels: np.ndarray, values: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    y = _binary_labels(labels)
    v = _as_1d(name, values).astype(np.float64)
    if v.size != y.size:
        raise ValueError(f"labels and {name} differ in length: {y.size} != {v.size}")
    return y, v


def _check_scenario(scenario: np.ndarray, n: int, k: int) -> np.ndarray:
    raw = _as_1d("scenario", scenario)
    if raw.size != n:
        raise ValueError(f"labels and scenario differ in length: {n} != {raw.size}")
    s = raw.astype(np.int64)
    if not np.array_equal(s, raw) or (s.size and (s.min() < 0 or s.max() >= k)):
        raise ValueError(f"scenario must hold integer indices in 0..{k - 1}")
    return s
