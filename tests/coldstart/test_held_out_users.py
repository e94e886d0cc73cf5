"""What the methods learn on held-out users of the synthetic data (a seeded fifth of the train split's users
leave training; their train rows, user id out of vocabulary, are the cold rows): DropoutNet beats the plain
model in the cold phase, the generators' losses fall over their passes, and a warm-up round moves the
cold users' scores."""

from __future__ import annotations

import polars as pl
import pytest
import torch
from coldstart_helpers import build
from sklearn.metrics import roc_auc_score

from conftest import make_model, trainer
from ssimctr.coldstart.episodes import build_episodes
from ssimctr.data.datasplit import MemorySplit
from ssimctr.data.loaders import InMemoryLoader, batch_from_frame
from ssimctr.tasks.cold_start import ColdStartTask
from ssimctr.train.loop import validator

HOLDOUT = 0.2
LEARNING = dict(epochs=5, patience=5, batch_size=512, progress=False)
OPTIONS = {  # ~460 warm meta tasks: more passes than the defaults' one
    "none": {},
    "dropoutnet": {},
    "metaemb": {"meta_epochs": 10, "tasks_per_batch": 50},
    "cvar": {"cvar_epochs": 10, "tasks_per_batch": 50},
}


@pytest.fixture(scope="module")
def held_out_users(prepared_synthetic) -> dict[str, float]:
    """Cold-phase AUC and the first / last pass losses of each method, trained on the same warm rows with the
    same seed; warm-a's AUC after one round of 3 rows."""
    fm = prepared_synthetic.feature_map
    entity = ColdStartTask("user", HOLDOUT, 0, 3, 1, 5).entity(
        fm, ["user_age", "user_gender", "user_city", "user_activity"], ["item_category", "item_brand", "item_price"]
    )
    frames = {name: pl.read_parquet(prepared_synthetic.split_path(name)) for name in ("train", "val")}
    keys = frames["train"].select("user_key").unique().sort("user_key").sample(fraction=HOLDOUT, seed=0)
    warm = frames["train"].join(keys, on="user_key", how="anti")
    out_of_vocabulary = pl.lit(0, dtype=frames["train"]["user_id"].dtype).alias("user_id")
    cold = frames["train"].join(keys, on="user_key", how="semi").with_columns(out_of_vocabulary)
    assert cold.height > 3000 and (cold["user_id"] == 0).all()
    episodes, _ = build_episodes(cold, "user_key", 3, fm, entity.attributes, rounds=1)
    meta_tasks, _ = build_episodes(warm, "user_key", 5, fm, entity.attributes)
    val = batch_from_frame(frames["val"].join(keys, on="user_key", how="anti"), fm)
    validate = validator(InMemoryLoader(val, 4096, shuffle=False), fm.scenario_names)
    label = episodes.query.label.numpy()
    results: dict[str, float] = {}
    for name, options in OPTIONS.items():
        torch.manual_seed(0)
        model = make_model("dnn", fm, hidden=[16])
        method = build(name, entity, **options)
        fits = method.train(
            model, MemorySplit(batch_from_frame(warm, fm)), meta_tasks, validate, trainer(3e-3, **LEARNING), None
        )
        cold_phase, warm_a = method.predict_cold(model, episodes)
        results[name] = roc_auc_score(label, cold_phase.numpy())
        results[f"{name}/moved"] = float((warm_a - cold_phase).abs().mean())
        if len(fits) == 2:
            losses = [epoch[method.loss_names[0]] for epoch in fits[1].epochs]
            results[f"{name}/first"], results[f"{name}/last"] = losses[0], losses[-1]
    print({key: round(value, 4) for key, value in results.items()})
    return results


@pytest.mark.slow
def test_dropoutnet_beats_the_plain_model_on_held_out_users(held_out_users):
    assert 0.52 < held_out_users["none"] < held_out_users["dropoutnet"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["metaemb", "cvar"])
def test_the_generators_learn_on_the_warm_entities(held_out_users, name):
    assert held_out_users[f"{name}/last"] < held_out_users[f"{name}/first"]
    assert held_out_users[name] > 0.52


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_a_warm_up_round_moves_the_cold_users_scores(held_out_users, name):
    assert held_out_users[f"{name}/moved"] > 1e-3
