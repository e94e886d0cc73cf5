"""The required tests for the CTR backbones DNN, DeepFM, DCN (v1) and DCN-V2."""
from __future__ import annotations

import pytest
import torch

from conftest import (assert_gradients_stay_in_own_tower, assert_single_tower_broadcasts, assert_tower_contract,
                      train_briefly)
from ssimctr.errors import UserError
from ssimctr.models.backbones.dcn import DCN
from ssimctr.models.backbones.dcnv2 import DCNv2
from ssimctr.models.backbones.deepfm import DeepFM
from ssimctr.models.backbones.dnn import DNN

SMALL = dict(embedding_dim=8, hidden=[32, 16])
CASES = {
    "dnn": (DNN, {}),
    "dnn_bn_dropout": (DNN, dict(batch_norm=True, dropout=0.1)),
    "deepfm": (DeepFM, {}),
    "deepfm_first_order_bn": (DeepFM, dict(first_order=True, batch_norm=True)),
    "dcn": (DCN, {}),
    "dcn_bn": (DCN, dict(batch_norm=True, cross_layers=2)),
    "dcnv2_parallel": (DCNv2, {}),
    "dcnv2_stacked_low_rank": (DCNv2, dict(structure="stacked", rank=4)),
}
PRIVATE = ("mlp.", "cross.", "head.")  # per-tower parameters; cross nets hold [L, K, ...]


def build(case: str, feature_map, num_towers: int, **extra):
    cls, params = CASES[case]
    return cls(feature_map=feature_map, num_towers=num_towers, scenario_feature=True, **{**SMALL, **params, **extra})


def per_tower(name: str, grad: torch.Tensor, k: int) -> torch.Tensor:
    """A private parameter's gradient as [K, -1] (batch-norm features are laid out tower-major)."""
    return (grad.transpose(0, 1) if name.startswith("cross.") else grad).reshape(k, -1)


@pytest.mark.parametrize("case", CASES)
def test_shapes_and_logits(case, tiny_feature_map):
    assert_tower_contract(build(case, tiny_feature_map, 3), tiny_feature_map)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("scenario", [0, 2])
def test_gradients_stay_in_own_tower(case, scenario, tiny_feature_map):
    torch.manual_seed(0)
    model = build(case, tiny_feature_map, tiny_feature_map.num_scenarios)
    assert assert_gradients_stay_in_own_tower(model, tiny_feature_map, scenario, PRIVATE, per_tower)


@pytest.mark.parametrize(("case", "embedding_dim"),
                         [("deepfm", 16), ("dcn", 16), ("dcnv2_parallel", 8), ("dcnv2_stacked_low_rank", 8)])
def test_learns(case, embedding_dim, prepared_synthetic):
    model = build(case, prepared_synthetic.feature_map, 3, embedding_dim=embedding_dim)
    assert train_briefly(model, prepared_synthetic)["test/auc/mean"] > 0.55


@pytest.mark.parametrize("case", CASES)
def test_single_tower_broadcasts(case, tiny_feature_map):
    torch.manual_seed(0)
    assert_single_tower_broadcasts(build(case, tiny_feature_map, 1), tiny_feature_map)


def test_dcnv2_rejects_bad_options(tiny_feature_map):
    with pytest.raises(UserError, match="structure"):
        build("dcnv2_parallel", tiny_feature_map, 3, structure="diagonal")
    with pytest.raises(UserError, match="rank"):
        build("dcnv2_parallel", tiny_feature_map, 3, rank=0)
