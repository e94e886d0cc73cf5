"""The contract every model of conf/backbone keeps, checked for each name in MODEL_SCHEMAS (and the
variants that switch on batch norm, dropout, other structures): [B, K] logits and forward = own tower,
each row training only its own tower's private parameters under mt, one tower broadcast to every
scenario, learning on the synthetic data. The routed path (docs/methods.md §3.12): `model(batch)`
computes each row's own tower only, with the full path's logits and gradients at K = 3 and 10 on
batches with absent scenarios and one-row segments, batch norm over a tower's own rows. And the
defaults: each lives in its schema only."""

from __future__ import annotations

import copy
import dataclasses
import inspect

import pytest
import torch
import torch.nn.functional as F
import yaml
from hydra import compose, initialize_config_dir
from hydra.utils import get_class
from omegaconf import OmegaConf
from torch.func import functional_call, vmap

from conftest import (
    REPO,
    assert_gradients_stay_in_own_tower,
    assert_single_tower_broadcasts,
    assert_tower_contract,
    make_batch,
    make_model,
    train_briefly,
)
from ssimctr.config.models import MODEL_SCHEMAS, DNNConfig, backbone_config
from ssimctr.config.schema import register
from ssimctr.data.batch import Batch
from ssimctr.features.feature_map import CategoricalField, FeatureMap, NumericField
from ssimctr.models.base import own_scenario
from ssimctr.models.routing import Routes

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


# The routed path: model(batch) computes each row's own tower only.

# rows per scenario: absent scenarios and one-row segments, interleaved in the batch
COUNTS = {3: [9, 0, 1], 10: [5, 0, 1, 3, 0, 1, 7, 2, 1, 4]}
NOISY = ("dropout", "batch_norm")  # in training, the two paths draw other masks / normalize other rows


def scenarios_map(k: int) -> FeatureMap:
    """conftest's tiny_feature_map with K scenarios."""
    return FeatureMap(
        categorical=(CategoricalField("a", 10), CategoricalField("b", 7), CategoricalField("c", 4)),
        numeric=(NumericField("x", 0.0, 1.0, -3.0, 3.0), NumericField("y", 0.0, 1.0, -3.0, 3.0)),
        scenario_names=tuple(f"s{i}" for i in range(k)),
        scenario_column="scenario",
        label_column="click",
    )


def uneven_batch(fm: FeatureMap, counts: list[int], seed: int = 0) -> Batch:
    """A random batch with counts[k] rows of scenario k, in shuffled order."""
    batch = make_batch(fm, rows=sum(counts), seed=seed)
    scenario = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    shuffle = torch.randperm(len(scenario), generator=torch.Generator().manual_seed(seed))
    return dataclasses.replace(batch, scenario=scenario[shuffle])


def logits_and_gradients(model, batch: Batch, routed: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor | None]]:
    """Own-scenario logits by one path and the gradients of their BCE (dense), with the same random state."""
    model.zero_grad(set_to_none=True)
    torch.manual_seed(1)
    logits = model(batch) if routed else own_scenario(model.towers(batch), batch.scenario)
    F.binary_cross_entropy_with_logits(logits, batch.label).backward()
    grads = {n: None if p.grad is None else p.grad.to_dense() for n, p in model.named_parameters()}
    return logits.detach(), grads


@pytest.mark.parametrize("k", sorted(COUNTS))
@pytest.mark.parametrize("case", CASES)
def test_routed_equals_the_own_column_of_every_tower(case, k):
    """Logits and every parameter's gradient equal the full path's (to float rounding: other matrix shapes
    sum in another order). In training where the case has no dropout or batch norm (STAR's partitioned
    norm included: both paths use scenario k's own statistics), else in evaluation."""
    fm = scenarios_map(k)
    model = build(case, fm, k)
    noisy = any(CASES[case].overrides.get(option) for option in NOISY)
    model.train(not noisy)
    batch = uneven_batch(fm, COUNTS[k])
    state = copy.deepcopy(model.state_dict())
    full, full_grads = logits_and_gradients(model, batch, routed=False)
    model.load_state_dict(state)  # the same running statistics for the second pass
    routed, routed_grads = logits_and_gradients(model, batch, routed=True)
    torch.testing.assert_close(routed, full, rtol=1e-5, atol=1e-6)
    assert routed_grads.keys() == full_grads.keys()
    for name, grad in full_grads.items():
        assert (routed_grads[name] is None) == (grad is None), name
        if grad is not None:
            torch.testing.assert_close(routed_grads[name], grad, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("scenario", [0, 2])
def test_routed_gradients_stay_in_own_tower(case, scenario, tiny_feature_map):
    """A batch of one scenario through `model(batch)`: every parameter gets a gradient (a tower without
    rows runs on none), and of each per-tower parameter only the own tower's slice is non-zero."""
    k = tiny_feature_map.num_scenarios
    model = build(case, tiny_feature_map, k)
    batch = make_batch(tiny_feature_map, rows=32)
    batch = dataclasses.replace(batch, scenario=torch.full_like(batch.scenario, scenario))
    F.binary_cross_entropy_with_logits(model(batch), batch.label).backward()
    private = CASES[case].private
    seen = set()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        prefix = next((q for q in private if name.startswith(q)), None)
        if prefix is None:
            continue
        seen.add(prefix)
        reached = per_tower(name, p.grad, k).abs().sum(1) > 0
        assert reached.tolist() == [tower == scenario for tower in range(k)], name
    assert seen == set(private)


@pytest.mark.parametrize("name", ["dnn", "deepfm", "dcn", "dcnv2"])
def test_routed_batch_norm_normalizes_a_tower_over_its_own_rows(name):
    """batch_norm=True, in training: tower k's rows are normalized with the statistics of scenario k's rows
    alone, as the full path does on a batch of scenario k only, and only those update tower k's running
    statistics; a segment of one row is normalized with the running statistics, left unchanged."""
    k = 3
    fm = scenarios_map(k)
    torch.manual_seed(0)
    model = make_model(name, fm, k, embedding_dim=8, hidden=[32, 16], batch_norm=True)
    for module in model.modules():  # running statistics away from (0, 1), so that using them shows
        if isinstance(module, torch.nn.BatchNorm1d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
    alone = {s: copy.deepcopy(model) for s in range(k)}
    batch = uneven_batch(fm, COUNTS[k])
    bn = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert bn
    with torch.no_grad():
        routed = model(batch)
    for s in range(k):
        rows = torch.nonzero(batch.scenario == s).squeeze(1)
        if len(rows) == 0:
            continue
        reference = alone[s].train(len(rows) > 1)  # one row: evaluation's running statistics
        with torch.no_grad():
            expected = reference.towers(batch.take(rows))[:, s]
        torch.testing.assert_close(routed[rows], expected, rtol=1e-5, atol=1e-6)
        for module_name, norm in bn:
            width = norm.num_features // k
            features = slice(s * width, (s + 1) * width)
            after = dict(reference.named_modules())[module_name]
            for stat in ("running_mean", "running_var"):
                torch.testing.assert_close(getattr(norm, stat)[features], getattr(after, stat)[features])


@pytest.mark.parametrize("case", ["dnn", "mmoe", "star", "pepnet"])
def test_under_vmap_forward_takes_the_full_path(case, tiny_feature_map):
    """Inside torch.func.vmap (MAML's tasks) the segment sizes would be data-dependent shapes: `model(batch)`
    computes every tower and reads each row's own, and gives each task's routed logits."""
    model = build(case, tiny_feature_map, tiny_feature_map.num_scenarios).eval()
    tasks = [make_batch(tiny_feature_map, rows=8, seed=seed) for seed in range(3)]
    rows = {
        f.name: torch.stack([getattr(t, f.name) for t in tasks]) for f in dataclasses.fields(Batch) if f.name != "text"
    }
    weights = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    with torch.no_grad():
        batched = vmap(lambda task: functional_call(model, weights, (Batch(**task),)))(rows)
        for t, task in enumerate(tasks):
            torch.testing.assert_close(batched[t], model(task), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", CASES)
def test_single_tower_forward_is_its_one_tower(case, tiny_feature_map):
    model = build(case, tiny_feature_map, 1).eval()
    batch = make_batch(tiny_feature_map, rows=16)
    assert torch.equal(model(batch), model.towers(batch)[:, 0])


def test_routes_group_and_ungroup_the_rows():
    scenario = torch.tensor([2, 0, 2, 3, 0, 2])
    routes = Routes(scenario, 5)
    assert routes.counts == [2, 0, 3, 1, 0]
    assert routes.order.tolist() == [1, 4, 0, 2, 5, 3]  # stable: each scenario's rows in batch order
    assert routes.tower.tolist() == [0, 0, 2, 2, 2, 3]
    x = torch.arange(6.0).unsqueeze(1) * torch.tensor([1.0, 10.0])
    parts = routes.group(x)
    assert [p[:, 0].tolist() for p in parts] == [[1, 4], [], [0, 2, 5], [3], []]
    assert torch.equal(routes.ungroup(parts), x)
    assert [p.tolist() for p in routes.group(torch.arange(6).unsqueeze(0), dim=1)][2] == [[0, 2, 5]]
    per_tower = torch.arange(5).view(5, 1, 1) * 100 + torch.arange(6).view(1, 6, 1)  # [K, B, 1]: 100·k + row
    assert [p[:, 0].tolist() for p in routes.own(per_tower)] == [[1, 4], [], [200, 202, 205], [303], []]


def test_routes_refuse_a_scenario_without_a_tower():
    with pytest.raises(ValueError, match="scenario ids go up to 3, but the model has 3 towers"):
        Routes(torch.tensor([0, 3]), 3)


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
