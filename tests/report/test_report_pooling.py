"""The report warns when a group pools runs whose configs differ beyond the seed (e.g. 100k- and 500k-row runs)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from conftest import compose
from ssimctr.report import aggregate, config_differences, pooling_warnings
from ssimctr.report.cli import main
from ssimctr.report.table import UNSET
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
        "trainer.epochs": ("2", "10"),
        "trainer.batch_size": ("1024", "2048"),
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
        "trainer.batch_size (1024, 2048), trainer.epochs (2, 10), trainer.limit_train_batches (20, null) "
        "and 1 more (trainer.patience); add them to --group-by (e.g. params.dataset.rows) "
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
