"""task=cold_start: which rows are cold, what trains, what is evaluated, and clear errors."""

from __future__ import annotations

import json

import polars as pl
import pytest
from rich.console import Console

from conftest import compose, make_model
from ssimctr.cli.runner import JobInfo, run
from ssimctr.coldstart.episodes import build_episodes
from ssimctr.coldstart.plain import PlainModel, own_logits
from ssimctr.errors import UserError
from ssimctr.tasks.cold_start import ColdStartTask

SMALL = (
    "tracking=none",
    "dataset.rows=30000",
    "dataset.users=3000",
    "dataset.items=600",
    "trainer=debug",
    "trainer.progress=false",
    "task=cold_start",
)


def removed(frames: dict[str, pl.DataFrame], cold: pl.DataFrame) -> int:
    held_out = frames["train"].join(cold, on="user_key", how="semi").height
    assert held_out > 0
    return held_out


def _frames(data) -> dict[str, pl.DataFrame]:
    return {name: pl.read_parquet(data.split_path(name)) for name in ("train", "val", "test")}


@pytest.mark.parametrize("holdout", [None, 0.2])
def test_cold_entities_never_reach_training_and_their_ids_are_out_of_vocabulary(prepared_synthetic, holdout):
    task = ColdStartTask("user", holdout, 7, 0, 5)
    entity = task.entity(prepared_synthetic.feature_map)
    frames = _frames(prepared_synthetic)
    cold, train, parts = task.rows(frames, entity)
    assert cold.height > 0 and train.height == frames["train"].height - (
        0 if holdout is None else removed(frames, cold)
    )
    assert train.join(cold, on="user_key", how="semi").height == 0
    for name, (cold_rows, warm_rows) in parts.items():
        assert cold_rows.height + warm_rows.height == frames[name].height
        assert cold_rows.height > 0 and (cold_rows["user_id"] == 0).all()
        assert warm_rows.join(cold, on="user_key", how="semi").height == 0
    if holdout is None:  # the natural definition: no train row at all
        assert frames["train"].join(cold, on="user_key", how="semi").height == 0
    else:  # about the held-out share of every entity
        everyone = pl.concat([f.select("user_key") for f in frames.values()]).n_unique()
        assert cold.height == pytest.approx(holdout * everyone, rel=0.15)


def test_support_and_query_are_disjoint_and_in_time_order(prepared_synthetic):
    frame = _frames(prepared_synthetic)["test"]
    episodes, counts = build_episodes(frame, "user_key", 2, prepared_synthetic.feature_map)
    sizes = frame.group_by("user_key").len()
    assert counts.tasks == sizes.filter(pl.col("len") > 2).height
    assert counts.left_out_entities == sizes.filter(pl.col("len") <= 2).height
    assert counts.support_rows == 2 * counts.tasks and episodes.shots == 2
    support, query = episodes.support.row_id.tolist(), episodes.query.row_id.tolist()
    assert not set(support) & set(query)
    assert len(support) + len(query) + counts.left_out_rows == frame.height
    times = dict(zip(frame["row_id"].to_list(), frame["ts"].to_list()))
    for task in range(episodes.num_tasks):
        before = [times[r] for r, t in zip(support, episodes.support_task.tolist()) if t == task]
        after = [times[r] for r, t in zip(query, episodes.query_task.tolist()) if t == task]
        assert before == sorted(before) and after == sorted(after) and max(before) <= min(after)


def test_zero_shot_prediction_never_updates_a_weight(prepared_synthetic):
    fm = prepared_synthetic.feature_map
    model = make_model("dnn", fm, hidden=[16])
    task = ColdStartTask("user", 0.3, 7, 0, 5)
    frames = _frames(prepared_synthetic)
    _, _, parts = task.rows(frames, task.entity(fm))
    cold = parts["test"][0]
    episodes, _ = build_episodes(cold, "user_key", 0, fm)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    logits = PlainModel(task.entity(fm)).predict_cold(model, episodes)
    assert all((before[k] == v).all() for k, v in model.state_dict().items())
    assert logits.shape == (len(episodes.query),)
    assert (logits == own_logits(model, episodes.query)).all()


def _run(tmp_path, *overrides: str) -> dict[str, float]:
    cfg = compose(f"paths.outputs={tmp_path}", *SMALL, *overrides)
    return run(cfg, JobInfo(output_dir=tmp_path / "run"), Console(quiet=True))


def test_a_run_reports_cold_and_warm_metrics_per_scenario(tmp_path):
    results = _run(tmp_path, "task.holdout=0.2", "task.shots=2")
    for prefix in ("test", "test/warm"):
        for metric in ("auc", "logloss"):
            assert {f"{prefix}/{metric}/{s}" for s in ("s0", "s1", "s2", "overall", "mean")} <= set(results)
    report = json.loads((tmp_path / "run" / "coldstart.json").read_text())
    assert report["entity"] == "user" and report["shots"] == 2
    assert report["episodes"]["test"]["tasks"] > 0
    assert set(report["scenarios"]["test"]) == {"s0", "s1", "s2"}
    query = sum(v["query_rows"] for v in report["scenarios"]["test"].values())
    assert query == report["episodes"]["test"]["query_rows"]
    written = pl.read_csv(tmp_path / "run" / "test_warm_results.csv")
    assert written["scenario"].to_list() == ["s0", "s1", "s2", "overall", "mean"]


def test_a_dataset_without_users_is_one_clear_error(tmp_path):
    with pytest.raises(UserError, match=r"task.entity=user needs .*dataset.user=<column>"):
        _run(tmp_path, "dataset.user=null")


def test_no_cold_entity_to_evaluate_names_the_counts_and_the_fix(tmp_path):
    with pytest.raises(UserError, match=r"no cold user to evaluate .* at most task.shots=10000 rows.*task.holdout"):
        _run(tmp_path, "task.holdout=0.2", "task.shots=10000")


def test_other_regimes_and_bad_options_are_refused(tmp_path):
    with pytest.raises(UserError, match="regime=mt"):
        _run(tmp_path, "regime=st")
    with pytest.raises(UserError, match="task.entity=shop"):
        _run(tmp_path, "task.entity=shop")
    with pytest.raises(UserError, match="task.holdout=1.5"):
        _run(tmp_path, "task.holdout=1.5")
