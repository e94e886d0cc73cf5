"""task=cold_start: which rows are cold, what trains, what is evaluated, and clear errors."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import polars as pl
import pytest
from rich.console import Console

from conftest import compose, synthetic_config
from ssimctr.cli.runner import JobInfo, run
from ssimctr.coldstart.episodes import build_episodes
from ssimctr.config.schema import ScenarioConfig, SplitConfig
from ssimctr.data.prepare import Holdout, prepare
from ssimctr.data.sources.base import SPLITS
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
    task = ColdStartTask("user", holdout, 7, 0, 3, 5)
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


@pytest.fixture(scope="module")
def held_out_preparation(tmp_path_factory):
    """The conftest's synthetic data prepared twice: as it is, and with a seeded 30% of the users held out."""
    cache = tmp_path_factory.mktemp("held_out")
    config = synthetic_config(min_freq=2)
    scenario, split = ScenarioConfig(kind="column", column="scenario"), SplitConfig(kind="time")
    full = prepare(config, scenario, split, cache)
    holdout = Holdout("user", 0.3, 7)
    return full, prepare(config, scenario, split, cache, holdout=holdout), holdout


def test_held_out_users_rows_never_reach_training_the_vocabularies_or_the_statistics(held_out_preparation):
    """Refit by hand from the full preparation: decode its train split with its vocabularies, drop the
    held-out users' rows, count again with min_freq 2, order by count then value: the held-out
    preparation's vocabularies are exactly that, and its numeric statistics those of the kept rows."""
    full, held, holdout = held_out_preparation
    train = pl.read_parquet(full.split_path("train"))
    out = train.filter(holdout.held_out(pl.col("user_key")))
    kept = train.filter(~holdout.held_out(pl.col("user_key")))
    assert out.height > 1000
    assert held.manifest["dropped"]["held_out"] == out.height
    assert held.manifest["splits"]["train"]["rows"] == kept.height
    assert pl.read_parquet(held.split_path("train")).filter(holdout.held_out(pl.col("user_key"))).height == 0
    for split in ("val", "test"):  # their later rows stay, to be evaluated
        assert pl.read_parquet(held.split_path(split)).height == pl.read_parquet(full.split_path(split)).height
    changed = 0
    for field in held.feature_map.categorical:
        vocabulary = pl.read_parquet(full.path / "vocab" / f"{field.name}.parquet")
        values = kept.select(pl.col(field.name).alias("index")).join(vocabulary, on="index", how="inner")
        expected = (
            values.group_by("value")
            .len("count")
            .filter(pl.col("count") >= 2)
            .sort(["count", "value"], descending=[True, False])
        )
        refit = pl.read_parquet(held.path / "vocab" / f"{field.name}.parquet")
        assert refit["value"].to_list() == expected["value"].to_list(), field.name
        assert refit["count"].to_list() == expected["count"].to_list(), field.name
        changed += vocabulary.height != refit.height
    assert changed >= 2  # user_id at least, and values only held-out users had
    held_out_ids = out.select("user_id").unique().join(kept.select("user_id").unique(), on="user_id", how="anti")
    user_vocabulary = pl.read_parquet(full.path / "vocab" / "user_id.parquet")
    gone = held_out_ids.join(user_vocabulary, left_on="user_id", right_on="index")["value"]
    refit_users = pl.read_parquet(held.path / "vocab" / "user_id.parquet")["value"]
    assert len(gone) > 100 and not gone.is_in(refit_users.implode()).any()
    for before, after in zip(full.feature_map.numeric, held.feature_map.numeric):
        raw = kept[before.name] * before.std + before.mean  # the synthetic numeric fields have no missing value
        assert after.mean == pytest.approx(raw.mean(), rel=1e-5) and after.std == pytest.approx(raw.std(), rel=1e-4)
        assert after.mean != pytest.approx(before.mean, rel=1e-6)


def test_held_out_users_are_no_meta_task_and_no_training_row_of_a_run(held_out_preparation):
    _, held, holdout = held_out_preparation
    task = ColdStartTask("user", holdout.share, holdout.seed, 2, 3, 5)
    entity = task.entity(held.feature_map)
    frames = _frames(held)
    cold, train, parts = task.rows(frames, entity)
    assert train.height == frames["train"].height  # nothing of theirs left to remove
    meta_tasks, counts = build_episodes(train, "user_key", 5, held.feature_map, entity.attributes)
    everything = pl.concat([frames[name] for name in ("train", "val", "test")])
    held_rows = everything.join(cold, on="user_key", how="semi")["row_id"]
    assert counts.tasks > 50 and held_rows.len() > 0
    rows = set(meta_tasks.support.row_id.tolist()) | set(meta_tasks.query.row_id.tolist())
    assert not rows & set(held_rows.to_list())
    assert cold.height == everything.select("user_key").unique().filter(holdout.held_out(pl.col("user_key"))).height


def _run(tmp_path, *overrides: str) -> dict[str, float]:
    cfg = compose(f"paths.outputs={tmp_path}", *SMALL, *overrides)
    return run(cfg, JobInfo(output_dir=tmp_path / "run"), Console(quiet=True))


def test_a_run_reports_every_phase_and_warm_metrics_per_scenario(tmp_path):
    results = _run(tmp_path, "task.holdout=0.2", "task.shots=2", "task.warmup_rounds=2")
    prefixes = ("test", "test/warm_a", "test/warm_b", "test/cold_all", "test/warm")
    for prefix in prefixes:
        for metric in ("auc", "logloss"):
            assert {f"{prefix}/{metric}/{s}" for s in ("s0", "s1", "s2", "overall", "mean")} <= set(results)
    assert not any(key.startswith("test/warm_c/") for key in results)
    assert 0 < results["test/auc/overall"] < 1 and results["test/auc/overall"] != results["test/warm_b/auc/overall"]
    assert {"val/cold/auc/mean", "val/auc/mean"} <= set(results)
    report = json.loads((tmp_path / "run" / "coldstart.json").read_text())
    assert report["entity"] == "user" and report["shots"] == 2 and report["warmup_rounds"] == 2
    assert report["attributes"] == ["user_age", "user_gender", "user_city", "user_activity"]
    assert report["episodes"]["test"]["tasks"] > 0
    assert report["episodes"]["test"]["support_rows"] == 4 * report["episodes"]["test"]["tasks"]
    assert set(report["scenarios"]["test"]) == {"s0", "s1", "s2"}
    query = sum(v["query_rows"] for v in report["scenarios"]["test"].values())
    assert query == report["episodes"]["test"]["query_rows"]
    for name in ("test", "test_warm_a", "test_cold_all", "test_warm"):
        written = pl.read_csv(tmp_path / "run" / f"{name}_results.csv")
        assert written["scenario"].to_list() == ["s0", "s1", "s2", "overall", "mean"]


def test_a_run_reads_each_prepared_split_once(tmp_path, monkeypatch):
    """The task's frames are the job's, read once; the job's splits open on first use, which this task never makes."""
    reads: Counter[Path] = Counter()
    read_parquet = pl.read_parquet

    def counted(source, *args, **kwargs):
        for path in map(Path, source if isinstance(source, list) else [source]):
            folder = path if path.name in SPLITS else path.parent
            reads[folder] += folder.name in SPLITS
        return read_parquet(source, *args, **kwargs)

    monkeypatch.setattr(pl, "read_parquet", counted)
    results = _run(tmp_path)
    assert "test/auc/overall" in results
    split_reads = {folder.name: count for folder, count in reads.items() if count}
    assert split_reads == dict.fromkeys(SPLITS, 1), reads


def test_a_dataset_without_users_is_one_clear_error(tmp_path):
    with pytest.raises(UserError, match=r"task.entity=user needs .*dataset.user=<column>"):
        _run(tmp_path, "dataset.user=null")


def test_no_cold_entity_to_evaluate_names_the_counts_and_the_fix(tmp_path):
    with pytest.raises(UserError, match=r"no cold user to evaluate .* at most 30000 rows \(task.shots=10000 x "):
        _run(tmp_path, "task.holdout=0.2", "task.shots=10000")


def test_other_regimes_and_bad_options_are_refused(tmp_path):
    with pytest.raises(UserError, match="regime=mt"):
        _run(tmp_path, "regime=st")
    with pytest.raises(UserError, match="task.entity=shop"):
        _run(tmp_path, "task.entity=shop")
    with pytest.raises(UserError, match="task.holdout=1.5"):
        _run(tmp_path, "task.holdout=1.5")
    with pytest.raises(UserError, match="task.warmup_rounds=0"):
        _run(tmp_path, "task.shots=2", "task.warmup_rounds=0")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("dataset.user_features=[user_age,nope]", r"dataset.user_features names nope, which is not a categorical"),
        ("dataset.user_features=[user_id]", r"dataset.user_features names user_id, an id column"),
        ("dataset.item_features=[item_brand,user_city]", r"both name user_city: an attribute belongs to one side"),
    ],
)
def test_attribute_declarations_are_checked(tmp_path, override, message):
    with pytest.raises(UserError, match=message):
        _run(tmp_path, override)


def test_a_method_that_needs_attributes_says_so_when_none_are_declared(tmp_path):
    with pytest.raises(UserError, match=r"coldstart=metaemb .* dataset.user_features declares none"):
        _run(tmp_path, "coldstart=metaemb", "dataset.user_features=[]")


def test_a_dropped_meta_phase_is_said_and_tagged():
    """The run's tags carry the method's (coldstart.<key>); meta_kept=false is said on the console."""
    tags: dict[str, str] = {}
    console = Console(record=True, width=200)
    job = SimpleNamespace(
        console=console, tracker=SimpleNamespace(set_tags=tags.update), settings=SimpleNamespace(monitor="val/auc/mean")
    )
    task = ColdStartTask("user", None, 7, 0, 3, 5)
    task._report_tags(job, SimpleNamespace(tags={"meta_kept": "false", "meta_monitor": "val/cold/auc/mean"}))
    assert tags == {"coldstart.meta_kept": "false", "coldstart.meta_monitor": "val/cold/auc/mean"}
    assert "the base model is kept and scores the cold rows" in console.export_text(clear=False)
    tags.clear()
    task._report_tags(job, SimpleNamespace(tags={"meta_kept": "true"}))
    assert tags == {"coldstart.meta_kept": "true"} and console.export_text().count("base model is kept") == 1
