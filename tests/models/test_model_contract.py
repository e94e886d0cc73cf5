"""The contract every model of conf/backbone keeps, checked for each name in MODEL_SCHEMAS (and the
variants that switch on batch norm, dropout, other structures): [B, K] logits and forward = own tower,
each row training only its own tower's private parameters under mt, one tower broadcast to every
scenario, learning on the synthetic data. And the defaults: each lives in its schema only."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.utils import get_class
from omegaconf import OmegaConf

from conftest import (
    REPO,
    assert_gradients_stay_in_own_tower,
    assert_single_tower_broadcasts,
    assert_tower_contract,
    make_model,
    train_briefly,
)
from ssimctr.config.models import MODEL_SCHEMAS, DNNConfig, backbone_config
from ssimctr.config.schema import register

SMALL = dict(embedding_dim=8, hidden=[32, 16])
STAR_PRIVATE = ("norm.gamma_p", "norm.beta_p", "scenario.")
PEPNET_PRIVATE = ("prior.", "layers.", "gates.", "output.")


@dataclasses.dataclass(frozen=True)
class Case:
    name: str  # the model's option name (MODEL_SCHEMAS key)
    overrides: dict  # small hyper-parameters
    private: tuple[str, ...]  # prefixes of the per-tower parameters (stored [K, ...] or, cross nets, [L, K, ...])
    user_item: bool = False  # name user and item fields in the feature map (PEPNet reads them)


CASES = {
    "dnn": Case("dnn", SMALL, ("mlp.",)),
    "dnn_bn_dropout": Case("dnn", dict(SMALL, batch_norm=True, dropout=0.1), ("mlp.",)),
    "deepfm": Case("deepfm", SMALL, ("mlp.",)),
    "deepfm_first_order_bn": Case("deepfm", dict(SMALL, first_order=True, batch_norm=True), ("mlp.",)),
    "dcn": Case("dcn", SMALL, ("mlp.", "cross.", "head.")),
    "dcn_bn": Case("dcn", dict(SMALL, batch_norm=True, cross_layers=2), ("mlp.", "cross.", "head.")),
    "dcnv2": Case("dcnv2", SMALL, ("mlp.", "cross.", "head.")),
    "dcnv2_stacked_low_rank": Case("dcnv2", dict(SMALL, structure="stacked", rank=4), ("mlp.", "cross.", "head.")),
    "shared_bottom": Case("shared_bottom", dict(bottom=[32], tower=[16, 8]), ("tower.",)),
    "shared_bottom_bn": Case("shared_bottom", dict(bottom=[32], tower=[16], batch_norm=True), ("tower.",)),
    "mmoe": Case("mmoe", dict(num_experts=3, expert=[32, 16], tower=[8]), ("gates.", "tower.")),
    "mmoe_bn_bias": Case(
        "mmoe", dict(num_experts=3, expert=[32], tower=[8], batch_norm=True, gate_bias=True), ("gates.", "tower.")
    ),
    "ple": Case("ple", dict(expert=[32, 16], tower=[8]), ("levels.0.gates.", "levels.0.specific_experts.", "tower.")),
    # at non-final levels the shared gate reads every expert: only the last level's specific experts are private
    "ple_2_levels_bn": Case(
        "ple",
        dict(num_levels=2, expert=[16], tower=[8], batch_norm=True, gate_bias=True),
        ("levels.0.gates.", "levels.1.gates.", "levels.1.specific_experts.", "tower."),
    ),
    "hmoe": Case("hmoe", dict(bottom=[32], num_experts=4, expert=[16], tower=[8]), ("gates.", "tower.", "mixture.")),
    "star": Case(
        "star",
        dict(hidden=[16, 8], aux_hidden=[4]),
        STAR_PRIVATE + ("layers.0.partition_", "layers.1.partition_", "layers.2.partition_"),
    ),
    "star_dropout": Case(
        "star", dict(hidden=[16], dropout=0.2), STAR_PRIVATE + ("layers.0.partition_", "layers.1.partition_")
    ),
    "dffm": Case("dffm", dict(hidden=[16, 8], interaction_hidden=4), ("domain.",)),
    "dffm_dropout": Case("dffm", dict(hidden=[16], interaction_hidden=4, dropout=0.2), ("domain.",)),
    "pepnet": Case("pepnet", dict(hidden=[16, 8], gate_hidden=8), PEPNET_PRIVATE),
    "pepnet_user_item": Case("pepnet", dict(hidden=[16, 8], gate_hidden=8), PEPNET_PRIVATE, user_item=True),
    "m2m": Case("m2m", dict(num_experts=3, expert_hidden=[16, 8], scenario_dim=8, attention_dim=4), ("scenario.",)),
}
# case -> (model, hyper-parameters) trained on the synthetic data
LEARNS = {
    "dnn": ("dnn", dict(embedding_dim=16, hidden=[32, 16])),
    "deepfm": ("deepfm", dict(embedding_dim=16, hidden=[32, 16])),
    "dcn": ("dcn", dict(embedding_dim=16, hidden=[32, 16])),
    "dcnv2": ("dcnv2", SMALL),
    "dcnv2_stacked_low_rank": ("dcnv2", dict(SMALL, structure="stacked", rank=4)),
    "shared_bottom": ("shared_bottom", CASES["shared_bottom"].overrides),
    "mmoe": ("mmoe", CASES["mmoe"].overrides),
    "ple": ("ple", CASES["ple"].overrides),
    "hmoe": ("hmoe", CASES["hmoe"].overrides),
    "star": ("star", dict(hidden=[32, 16])),
    "dffm": ("dffm", dict(hidden=[32, 16], interaction_hidden=8)),
    "pepnet": ("pepnet", dict(hidden=[32, 16], gate_hidden=16)),
    "m2m": ("m2m", dict(num_experts=3, expert_hidden=[32, 16], scenario_dim=8, attention_dim=8)),
}
BUILD_TIME = {"feature_map", "num_towers", "scenario_feature"}  # given by ssimctr.models.build


def build(case: str, feature_map, num_towers: int):
    spec = CASES[case]
    if spec.user_item:
        feature_map = dataclasses.replace(feature_map, user="a", item="b")
    torch.manual_seed(0)
    return make_model(spec.name, feature_map, num_towers, **spec.overrides)


def per_tower(name: str, grad: torch.Tensor, k: int) -> torch.Tensor:
    """A private parameter's gradient as [K, -1] (cross nets store [L, K, ...]; batch-norm features are
    laid out tower-major)."""
    return (grad.transpose(0, 1) if name.startswith("cross.") else grad).reshape(k, -1)


def test_every_model_is_covered():
    assert {case.name for case in CASES.values()} == set(MODEL_SCHEMAS)
    assert {name for name, _ in LEARNS.values()} == set(MODEL_SCHEMAS)
    assert set(MODEL_SCHEMAS) <= set(CASES)  # each model's plain case carries its name


@pytest.mark.parametrize("case", CASES)
def test_shapes_and_logits(case, tiny_feature_map):
    assert_tower_contract(build(case, tiny_feature_map, 3), tiny_feature_map)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("scenario", [0, 2])
def test_gradients_stay_in_own_tower(case, scenario, tiny_feature_map):
    model = build(case, tiny_feature_map, tiny_feature_map.num_scenarios)  # shared parameters train too
    private = CASES[case].private
    assert assert_gradients_stay_in_own_tower(model, tiny_feature_map, scenario, private, per_tower) == set(private)


@pytest.mark.parametrize("case", CASES)
def test_single_tower_broadcasts(case, tiny_feature_map):
    assert_single_tower_broadcasts(build(case, tiny_feature_map, 1), tiny_feature_map)


@pytest.mark.parametrize("name", MODEL_SCHEMAS)
def test_encoded_fields_reach_every_model(name, text_feature_map):
    """Text and image-vector fields are fields of every model: the contract holds with them, and the
    hashed bag, the projections and the missing vector all get gradient (checked with the rest)."""
    model = build(name, text_feature_map, text_feature_map.num_scenarios)
    encoded = {n for n, _ in model.named_parameters() if ".encoded." in n}
    assert {n.rsplit(".encoded.", 1)[1] for n in encoded} >= {
        "fields.0.bag.weight",
        "fields.1.projection.weight",
        "fields.2.projection.weight",
        "fields.2.missing",
    }
    private = CASES[name].private
    assert assert_gradients_stay_in_own_tower(model, text_feature_map, 1, private, per_tower) == set(private)
    assert_tower_contract(build(name, text_feature_map, 3), text_feature_map)


@pytest.mark.parametrize("case", LEARNS)
def test_learns(case, prepared_synthetic):
    name, overrides = LEARNS[case]
    torch.manual_seed(0)
    model = make_model(name, prepared_synthetic.feature_map, 3, **overrides)
    assert train_briefly(model, prepared_synthetic)["test/auc/mean"] > 0.55


# The defaults: each lives in its schema only.


@pytest.fixture(scope="module")
def composed_backbones() -> dict[str, dict]:
    """conf/backbone/<name>.yaml as a job composes it: {name: backbone config}."""
    register()
    names = sorted(path.stem for path in (REPO / "conf" / "backbone").glob("*.yaml"))
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return {
            name: OmegaConf.to_container(compose("config", overrides=[f"backbone={name}"]).backbone, resolve=True)
            for name in names
        }


def test_every_backbone_yaml_has_a_schema(composed_backbones):
    assert set(composed_backbones) == set(MODEL_SCHEMAS)


@pytest.mark.parametrize("name", MODEL_SCHEMAS)
def test_backbone_yaml_composes_to_its_schema_defaults(name, composed_backbones):
    path = REPO / "conf" / "backbone" / f"{name}.yaml"
    assert yaml.safe_load(path.read_text()) == {"defaults": [f"/schema_backbone_{name}@_here_", "_self_"]}
    assert composed_backbones[name] == OmegaConf.to_container(OmegaConf.structured(MODEL_SCHEMAS[name]))


@pytest.mark.parametrize("name", MODEL_SCHEMAS)
def test_schema_keys_are_the_model_hyper_parameters_without_defaults(name):
    schema = MODEL_SCHEMAS[name]
    parameters = inspect.signature(get_class(schema._target_)).parameters
    keys = {f.name for f in dataclasses.fields(schema)} - {"_target_"}
    assert set(parameters) - BUILD_TIME == keys
    assert all(parameters[key].default is inspect.Parameter.empty for key in keys)


def test_backbone_config_completes_a_partial_config_with_its_schema():
    partial = {"_target_": DNNConfig._target_, "hidden": [8]}
    assert OmegaConf.to_container(backbone_config(partial)) == dataclasses.asdict(DNNConfig(hidden=[8]))
    with pytest.raises(Exception, match="hiden"):
        backbone_config({"_target_": DNNConfig._target_, "hiden": [8]})
    other = {"_target_": "my.Model", "width": 3}
    assert OmegaConf.to_container(backbone_config(other)) == other
