"""The report warns when a group pools runs whose configs differ beyond the seed (e.g. 100k- and 500k-row runs)."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from conftest import compose
from ssimctr.report import aggregate, config_differences, pooling_warnings
from ssimctr.report.cli import main
from ssimctr.report.table import UNSET, sections
from ssimctr.tracking import flatten_params
from ssimctr.tracking.runs import RunRecord


def logged_params(*overrides: str) -> dict[str, str]:
    """The params a job logs (runner._log_config): its resolved config, flattened."""
    return flatten_params(OmegaConf.to_container(compose(*overrides), resolve=True))


def record(run_id: str, params: dict[str, str], seed: str, backbone: str = "dnn") -> RunRecord:
    tags = {"backbone": backbone, "regime": "mt", "ssim": "disabled", "seed": seed}
    return RunRecord(run_id, run_id, "FINISHED", tags, params, {"test/auc/s0": 0.7, "test/auc/mean": 0.7})


@pytest.fixture(scope="module")
def configs() -> dict[str, dict[str, str]]:
    """Real logged params: repeats that differ only in seed, output folder and run name; a small debug run."""
    return {
        "seed1": logged_params("seed=1", "paths.outputs=/tmp/a", "tracking.run_name=one"),
        "seed2": logged_params("seed=2", "paths.outputs=/tmp/b", "trainer.progress=false"),
        "small": logged_params("seed=3", "paths.outputs=/tmp/c", "dataset.rows=100000", "trainer=debug"),
    }


def test_seeds_output_folders_and_run_names_are_not_differences(configs) -> None:
    assert configs["seed1"]["trainer.seed"] == "1" and configs["seed1"]["paths.outputs"] == "/tmp/a"
    assert config_differences([record("a", configs["seed1"], "1"), record("b", configs["seed2"], "2")]) == {}


def test_other_keys_are_named_with_their_values(configs) -> None:
    runs = [record("a", configs["seed1"], "1"), record("b", configs["seed2"], "2"), record("c", configs["small"], "3")]
    assert config_differences(runs) == {
        "dataset.rows": ("100000", "500000"),
        "trainer.epochs": ("2", "20"),
        "trainer.patience": ("1", "2"),
        "trainer.limit_train_batches": ("20", "null"),
    }
    # a key that only some runs logged; runs without params (older runs) are not compared
    partial = [record("a", {"lr": "0.1", "x": "1"}, "1"), record("b", {"lr": "0.1"}, "2"), record("c", {}, "3")]
    assert config_differences(partial) == {"x": ("1", UNSET)}
    assert config_differences([record("a", {"lr": "0.1"}, "1"), record("b", {}, "2")]) == {}


def test_one_warning_line_per_mixed_group(configs) -> None:
    runs = [
        record("a", configs["seed1"], "1"),
        record("b", configs["small"], "2"),
        record("c", configs["seed1"], "1", backbone="dcn"),
        record("d", configs["seed2"], "2", backbone="dcn"),
    ]
    table = aggregate(runs, metrics=["auc"])
    assert [row.group for row in table.rows] == [("dcn", "mt", "disabled"), ("dnn", "mt", "disabled")]
    assert table.rows[0].differences == {}
    assert pooling_warnings(table) == [
        "group dnn / mt / disabled pools 2 runs with different dataset.rows (100000, 500000), "
        "trainer.epochs (2, 20), trainer.limit_train_batches (20, null) and trainer.patience (1, 2); "
        "add them to --group-by (e.g. params.dataset.rows) "
        "or narrow the runs with --filter"
    ]
    two = aggregate([record("a", {"dataset.rows": "1", "trainer.epochs": "1"}, "1"),
                     record("b", {"dataset.rows": "2", "trainer.epochs": "10"}, "2")], metrics=["auc"])  # fmt: skip
    assert pooling_warnings(two) == [
        "group dnn / mt / disabled pools 2 runs with different dataset.rows (1, 2) and trainer.epochs (1, 10); "
        "add them to --group-by (e.g. params.dataset.rows) or narrow the runs with --filter"
    ]
    many = aggregate([record(str(i), {"text": f"{i}" + "x" * 50}, str(i)) for i in range(6)], metrics=["auc"])
    cut = [f"{i}" + "x" * 36 + "..." for i in range(4)]
    assert pooling_warnings(many)[0].startswith(
        f"group dnn / mt / disabled pools 6 runs with different text ({', '.join(cut)}, ... (6 values)); "
    )


def add_run(client: MlflowClient, experiment: str, tags: dict[str, str], params: dict[str, str], auc: float) -> None:
    run_id = client.create_run(experiment, tags=tags).info.run_id
    client.log_batch(
        run_id,
        metrics=[Metric(f"test/auc/{s}", auc, 0, 1) for s in ("s0", "s1", "mean")],
        params=[Param(k, v) for k, v in params.items()],
        synchronous=True,
    )
    client.set_terminated(run_id, "FINISHED")


def test_report_warns_on_stderr_and_grouping_by_the_key_silences_it(configs, tmp_path: Path, capsys) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("ssimctr-synthetic", artifact_location=(tmp_path / "a").as_uri())
    big = {**configs["seed1"], "trainer.epochs": "10"}
    small = {**configs["seed1"], "dataset.rows": "100000", "trainer.epochs": "1"}
    for seed, params in (("1", big), ("2", big), ("1", small), ("2", small)):
        params = {**params, "seed": seed, "trainer.seed": seed, "paths.outputs": f"/tmp/{seed}"}
        add_run(client, experiment, {"backbone": "dnn", "regime": "mt", "ssim": "disabled", "seed": seed}, params, 0.7)
    for seed in ("1", "2"):  # a clean group: seeds only
        tags = {"backbone": "dcn", "regime": "mt", "ssim": "disabled", "seed": seed}
        add_run(client, experiment, tags, {**big, "seed": seed, "tracking.run_name": f"dcn {seed}"}, 0.71)
    capsys.readouterr()  # mlflow's lines about creating the store

    assert main(["--uri", uri, "--metric", "auc"]) == 0
    out, err = capsys.readouterr()
    assert "6 runs in 2 groups" in out
    assert re.sub(r"\s+", " ", err).strip() == (
        "warning: group dnn / mt / disabled pools 4 runs with different dataset.rows (100000, 500000) and "
        "trainer.epochs (1, 10); add them to --group-by (e.g. params.dataset.rows) or narrow the runs with --filter"
    )
    assert main(["--uri", uri, "--metric", "auc", "--group-by", "backbone,params.dataset.rows"]) == 0
    out, err = capsys.readouterr()
    assert "6 runs in 3 groups" in out and err == ""
    assert main(["--uri", uri, "--metric", "auc", "--filter", "params.`trainer.epochs` = '10'"]) == 0
    out, err = capsys.readouterr()
    assert "4 runs in 2 groups" in out and err == ""


def study(run_id: str, dataset: str, task: str, scenarios: tuple[str, ...], value: float, **tags: str) -> RunRecord:
    """A finished run of `dataset` and `task` with AUC `value` in each of its scenarios."""
    metrics = {f"test/auc/{s}": value for s in (*scenarios, "mean")}
    base = {"dataset": dataset, "task": task, "split": "time", "backbone": "dnn", "regime": "mt", "ssim": "disabled"}
    return RunRecord(run_id, run_id, "FINISHED", {**base, "seed": "1", **tags}, {}, metrics, experiment="ssimctr")


STUDIES = [  # one store, as after synthetic, MIND, cold-start and multi-modal runs
    study("syn", "synthetic", "multi_scenario", ("s0", "s1"), 0.70),
    study("mind", "mind", "multi_scenario", ("news", "sports"), 0.60),
    study("cold-none", "synthetic", "cold_start", ("s0", "s1"), 0.55, coldstart="none"),
    study("cold-maml", "synthetic", "cold_start", ("s0", "s1"), 0.58, coldstart="maml"),
    study("text", "synthetic", "multi_modal", ("s0", "s1"), 0.72, text_encoder="hashing"),
    study("ids", "synthetic", "multi_modal", ("s0", "s1"), 0.71, text_encoder="none"),
]


def test_runs_of_different_datasets_tasks_or_methods_are_never_one_row() -> None:
    parts = sections(STUDIES)
    assert [[r.run_id for r in part] for part in parts] == [
        ["mind"],
        ["cold-none", "cold-maml"],
        ["text", "ids"],
        ["syn"],
    ]  # experiment, then dataset, task and split in natural order
    for part in parts:
        table = aggregate(part, ["backbone", "regime"], metrics=["auc"])
        assert all(row.n == 1 for row in table.rows)  # nothing pooled, whatever --group-by says
        assert {c.scenario for c in table.columns} == {key.split("/")[2] for key in part[0].metrics}
    cold = aggregate(parts[1], ["backbone"], metrics=["auc"])
    assert cold.split_by == ("coldstart",) and [row.group for row in cold.rows] == [("maml", "dnn"), ("none", "dnn")]
    assert dict(cold.section) == {"dataset": "synthetic", "task": "cold_start", "split": "time"}
    pooled = aggregate(STUDIES, ["backbone"], metrics=["auc"])  # aggregate alone splits them too
    assert pooled.split_by == ("dataset", "task", "coldstart", "text_encoder") and len(pooled.rows) == 6


def test_the_default_report_has_a_table_per_dataset_and_task(tmp_path: Path, capsys) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("ssimctr-store", artifact_location=(tmp_path / "a").as_uri())
    for record in STUDIES:
        run = client.create_run(experiment, tags=record.tags, run_name=record.run_id).info.run_id
        client.log_batch(run, metrics=[Metric(k, v, 0, 0) for k, v in record.metrics.items()], synchronous=True)
        client.set_terminated(run, "FINISHED")
    capsys.readouterr()
    written = tmp_path / "report.csv"
    assert main(["--uri", uri, "--metric", "auc", "--csv", str(written)]) == 0
    out, err = capsys.readouterr()
    titles = [line for line in out.splitlines() if "AUC (higher is better)" in line]
    assert len(titles) == 4 and err == ""
    assert (
        "task cold_start" in out and "rows also split by coldstart" in out and "rows also split by text_encoder" in out
    )
    rows = list(csv.DictReader(written.open()))
    keys = [(r["dataset"], r["task"], r.get("coldstart", ""), r.get("text_encoder", ""), r["n"]) for r in rows]
    assert sorted(keys) == sorted(
        [
            ("mind", "multi_scenario", "", "", "1"),
            ("synthetic", "cold_start", "maml", "", "1"),
            ("synthetic", "cold_start", "none", "", "1"),
            ("synthetic", "multi_modal", "", "hashing", "1"),
            ("synthetic", "multi_modal", "", "none", "1"),
            ("synthetic", "multi_scenario", "", "", "1"),
        ]
    )
    mind = next(r for r in rows if r["dataset"] == "mind")
    assert mind["auc/news/mean"] == "0.6" and mind["auc/s0/mean"] == ""  # its own scenarios only
