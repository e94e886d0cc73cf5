"""Shared fixtures: a small prepared synthetic dataset, tiny batches, a short training helper."""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import os
from pathlib import Path

import hydra
import polars as pl
import pytest
import torch
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from ssimctr.cli.main import CONFIG_DIR
from ssimctr.config.datasets import SyntheticConfig
from ssimctr.config.models import MODEL_SCHEMAS
from ssimctr.config.optim import AdamConfig, DenseTablesConfig, LazyAdamConfig
from ssimctr.config.schema import ScenarioConfig, SplitConfig, TrainerConfig
from ssimctr.data import synthetic
from ssimctr.data.batch import Batch
from ssimctr.data.loaders import InMemoryLoader, read_split
from ssimctr.data.prepare import PreparedDataset, prepare
from ssimctr.features.encoded import HashedTextField, VectorField
from ssimctr.features.feature_map import CategoricalField, FeatureMap, NumericField
from ssimctr.train.loop import evaluate, fit, make_optimizer, validator
from ssimctr.train.sharing import FixedSharing, sharing_loss
from ssimctr.utils.instantiate import instantiate


@pytest.fixture(autouse=True)
def _fresh_process_state():
    """Each test starts from what a new process has: no logging handler left writing to an earlier test's
    closed capture stream (an in-process Hydra app adds them), no MLflow progress-bar switch left set."""
    for logger in [logging.getLogger(), *map(logging.getLogger, list(logging.root.manager.loggerDict))]:
        for handler in list(getattr(logger, "handlers", [])):
            if getattr(getattr(handler, "stream", None), "closed", False):
                logger.removeHandler(handler)
    saved = os.environ.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", None)
    yield
    os.environ.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", None)  # the serving CLIs set it in-process
    if saved is not None:
        os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = saved


REPO = Path(__file__).resolve().parents[1]
SPLITS = ("train", "val", "test")
SHARED_DATA = REPO.parent / "shared" / "data"


def installed(module: str) -> bool:
    """Whether `module` can be imported, without importing it; False also when a parent package is
    absent (`importlib.util.find_spec("a.b")` raises ModuleNotFoundError when `a` is not installed)."""
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def synthetic_config(**overrides) -> SyntheticConfig:
    """The synthetic dataset config of conf/dataset/synthetic.yaml, with overrides."""
    values = dict(
        name="synthetic",
        label=synthetic.LABEL,
        scenario=synthetic.SCENARIO,
        categorical=list(synthetic.CATEGORICAL),
        numeric=list(synthetic.NUMERIC),
        text=list(synthetic.TEXT),
        time=synthetic.TIME,
        user="user_id",
        item="item_id",
        oracle=synthetic.ORACLE,
        rows=30_000,
        users=2_000,
        items=500,
    )
    values.update(overrides)
    return SyntheticConfig(**values)


def compose(*overrides: str) -> DictConfig:
    """The app config composed from the repository's conf/ with `overrides`, as the CLI composes it."""
    with hydra.initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return hydra.compose("config", overrides=list(overrides))


@pytest.fixture(scope="session")
def prepared_synthetic(tmp_path_factory) -> PreparedDataset:
    """30,000 synthetic rows, 3 scenarios, time split 80/10/10, prepared once per session."""
    return prepare(
        synthetic_config(),
        ScenarioConfig(kind="column", column="scenario"),
        SplitConfig(kind="time"),
        tmp_path_factory.mktemp("cache"),
    )


@pytest.fixture
def tiny_feature_map() -> FeatureMap:
    """3 categorical fields, 2 numeric fields, 3 scenarios."""
    return FeatureMap(
        categorical=(CategoricalField("a", 10), CategoricalField("b", 7), CategoricalField("c", 4)),
        numeric=(NumericField("x", 0.0, 1.0, -3.0, 3.0), NumericField("y", 0.0, 1.0, -3.0, 3.0)),
        scenario_names=("s0", "s1", "s2"),
        scenario_column="scenario",
        label_column="click",
    )


@pytest.fixture
def text_feature_map(tiny_feature_map) -> FeatureMap:
    """tiny_feature_map with three encoded fields: hashed text (4 texts + the empty one, 20 buckets),
    frozen 5-d text vectors, 7-d image vectors with a learned missing vector."""
    g = torch.Generator().manual_seed(3)
    texts = pl.Series(["a b", "c", "d e f", "g"])
    tokens = torch.tensor([[20, 20, 20], [1, 2, 20], [3, 20, 20], [4, 5, 6], [7, 20, 20]])
    return dataclasses.replace(
        tiny_feature_map,
        text=("title", "body"),
        vectors=("image",),
        encoded=(
            HashedTextField("title", tokens, 20, texts),
            VectorField("body", torch.randn(5, 5, generator=g), texts),
            VectorField("image", torch.randn(4, 7, generator=g)),
        ),
    )


def make_batch(feature_map: FeatureMap, rows: int = 16, seed: int = 0) -> Batch:
    """A random batch for `feature_map` (every scenario present when rows >= K; with encoded fields,
    every row of each field's table, index 0 included, when rows are enough)."""
    g = torch.Generator().manual_seed(seed)
    cat = torch.stack([torch.randint(0, f.vocab_size, (rows,), generator=g) for f in feature_map.categorical], 1)
    k = feature_map.num_scenarios
    return Batch(
        cat=cat,
        num=torch.randn(rows, len(feature_map.numeric), generator=g),
        scenario=torch.arange(rows) % k,
        label=(torch.rand(rows, generator=g) < 0.3).float(),
        row_id=torch.arange(rows),
        text=torch.stack([torch.arange(rows) % _table_rows(f) for f in feature_map.encoded], 1)
        if feature_map.encoded
        else None,
    )


def _table_rows(field) -> int:
    return (field.tokens if isinstance(field, HashedTextField) else field.vectors).shape[0]


def scenario_totals(data: PreparedDataset) -> dict[str, tuple[int, int]]:
    """(rows, positives) per scenario, summed over the three splits of the manifest."""
    splits = data.manifest["splits"]
    return {
        name: (
            sum(splits[s]["scenarios"][name]["rows"] for s in SPLITS),
            sum(splits[s]["scenarios"][name]["positives"] for s in SPLITS),
        )
        for name in data.feature_map.scenario_names
    }


def per_split_counts(data: PreparedDataset) -> dict[str, dict[str, tuple[int, int]]]:
    """(rows, positives) per split and scenario, as the manifest records them."""
    return {
        s: {name: (v["rows"], v["positives"]) for name, v in data.manifest["splits"][s]["scenarios"].items()}
        for s in SPLITS
    }


def make_model(
    name: str, feature_map: FeatureMap, num_towers: int | None = None, scenario_feature: bool = True, **overrides
):
    """The model of conf/backbone/<name>.yaml (its schema's defaults) with `overrides`, built as the runner
    builds it; `num_towers` None = one tower per scenario."""
    config = OmegaConf.structured(MODEL_SCHEMAS[name](**overrides))
    return instantiate(
        config,
        feature_map=feature_map,
        scenario_feature=scenario_feature,
        num_towers=feature_map.num_scenarios if num_towers is None else num_towers,
    )


def assert_single_tower_broadcasts(model, feature_map: FeatureMap, rows: int = 16) -> None:
    """A one-tower model gives the same logit for every scenario and trains every parameter."""
    batch = make_batch(feature_map, rows=rows)
    towers = model.towers(batch)
    assert towers.shape == (rows, feature_map.num_scenarios)
    torch.testing.assert_close(towers, towers[:, :1].expand(-1, feature_map.num_scenarios))
    sharing_loss(towers, batch.label, batch.scenario, 0.0).backward()
    assert all(p.grad is not None for p in model.parameters())


def one_scenario_batch(feature_map: FeatureMap, scenario: int, rows: int = 32) -> Batch:
    """A random batch whose rows all belong to `scenario`."""
    batch = make_batch(feature_map, rows=rows)
    return dataclasses.replace(batch, scenario=torch.full_like(batch.scenario, scenario))


def assert_gradients_stay_in_own_tower(
    model,
    feature_map: FeatureMap,
    scenario: int,
    private: tuple[str, ...],
    per_tower=lambda name, grad, k: grad.reshape(k, -1),
) -> set[str]:
    """A batch of one scenario trains every parameter; of each private parameter (stored [K, ...],
    `per_tower` lays it out as [K, -1]) it reaches only slice `scenario` under mt (gate 0) and every
    slice under mt_s (gate 1). Returns the private prefixes that matched a parameter."""
    k = feature_map.num_scenarios
    batch = one_scenario_batch(feature_map, scenario)
    seen = set()
    for gate in (0.0, 1.0):
        model.zero_grad(set_to_none=True)
        torch.manual_seed(1)  # the same dropout masks for both gates
        sharing_loss(model.towers(batch), batch.label, batch.scenario, gate).backward()
        for name, p in model.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name
            prefix = next((q for q in private if name.startswith(q)), None)
            if prefix is None:
                continue
            seen.add(prefix)
            grads = per_tower(name, p.grad, k).abs().sum(1)
            for tower in range(k):
                assert bool(grads[tower] > 0) == (gate == 1.0 or tower == scenario), (name, tower, gate)
    return seen


def trainer(lr: float = 1e-3, weight_decay: float = 0.0, rows: str = "sparse_adam", **options) -> TrainerConfig:
    """A TrainerConfig made in code: Adam(lr, weight_decay) for the dense weights, the id tables' rows by
    lazy Adam (`sparse_adam`) or made dense (`adam`), no schedule or regularizer unless given in `options`."""
    tables = LazyAdamConfig() if rows == "sparse_adam" else DenseTablesConfig()
    return TrainerConfig(
        optimizer=AdamConfig(lr=lr, weight_decay=weight_decay), embedding_optimizer=tables, **{"seed": 0, **options}
    )


def optimizer_for(parameters, lr: float, weight_decay: float = 0.0, rows: str = "sparse_adam"):
    """The training optimizer of `trainer(lr, weight_decay, rows)` over `parameters`."""
    return make_optimizer(trainer(lr, weight_decay, rows), parameters)


def assert_tower_contract(model, feature_map: FeatureMap, rows: int = 32) -> None:
    """After a few training steps on random rows: towers() gives [B, K] logits (not probabilities)
    and forward() is each row's own tower."""
    batch = make_batch(feature_map, rows=rows)
    optimizer = optimizer_for(model.parameters(), 0.05)  # the id table's gradients are sparse
    for _ in range(5):
        optimizer.zero_grad()
        sharing_loss(model.towers(batch), batch.label, batch.scenario, 1.0).backward()
        optimizer.step()
    model.eval()
    towers = model.towers(batch)
    assert towers.shape == (rows, feature_map.num_scenarios)
    assert ((towers < 0) | (towers > 1)).any()
    own = model(batch)
    assert own.shape == (rows,)
    torch.testing.assert_close(own, towers[torch.arange(rows), batch.scenario])


def train_briefly(
    model,
    data: PreparedDataset,
    epochs: int = 2,
    gate: float = 0.0,
    lr: float = 3e-3,
    seed: int = 0,
    precision: str = "fp32",
) -> dict[str, float]:
    """Train `model` on `data` for a few epochs (trainer.precision `precision`); return test metrics."""
    torch.manual_seed(seed)
    fm = data.feature_map
    loaders = {
        s: InMemoryLoader(read_split(data.split_path(s), fm), 512, shuffle=s == "train", seed=seed)
        for s in ("train", "val", "test")
    }
    settings = trainer(lr, epochs=epochs, patience=epochs, progress=False, seed=seed, precision=precision)
    fit(
        model,
        FixedSharing(gate),
        make_optimizer(settings, model.parameters()),
        loaders["train"],
        validator(loaders["val"], fm.scenario_names),
        settings,
    )
    return evaluate(model, loaders["test"], "test", fm.scenario_names)


METRICS_OF_A_RUN = [f"{split}/{metric}/{name}" for split in ("val", "test") for metric in ("auc", "logloss")
                    for name in ("s0", "s1", "s2", "mean", "overall")]  # fmt: skip


def sweep_runs(uri: str) -> tuple[Run, list[Run]]:
    """The one multirun parent run of the MLflow store `uri` and its children (by MLflow's parent tag);
    asserts that the store holds no other run."""
    client = MlflowClient(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    [parent] = [r for r in runs if r.data.tags.get("ssimctr.kind") == "sweep"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(runs) == 1 + len(children)
    return parent, children


def assert_every_metric(runs: list[Run]) -> None:
    """Each run logged the val and test AUC and logloss of every synthetic scenario, the mean and pooled."""
    for run in runs:
        assert set(METRICS_OF_A_RUN) <= set(run.data.metrics), sorted(set(METRICS_OF_A_RUN) - set(run.data.metrics))
