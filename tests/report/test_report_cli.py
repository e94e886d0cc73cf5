"""`ssimctr-report` and `ssimctr.tracking.runs` against a real sqlite MLflow store built with MlflowClient."""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from mlflow.entities import Metric, RunTag
from mlflow.tracking import MlflowClient

from ssimctr.errors import UserError
from ssimctr.report.cli import main
from ssimctr.tracking.runs import log_report_artifacts, search_runs

SEEDS = ("1", "2", "3")
SCENARIOS = ("s0", "s1", "s2")
# test AUC per regime, scenario and seed: s0 mt better in every seed; s1 noise; s2 single better in every seed
AUC = {
    "mt": {"s0": [0.760, 0.772, 0.755], "s1": [0.700, 0.690, 0.712], "s2": [0.650, 0.655, 0.648]},
    "single": {"s0": [0.751, 0.760, 0.749], "s1": [0.705, 0.680, 0.714], "s2": [0.660, 0.661, 0.655]},
}


@dataclass
class Store:
    uri: str
    client: MlflowClient
    parent: str
    children: dict[tuple[str, str], str]  # (regime, seed) -> run id
    loner: str  # a dcn run outside the multirun


def job_metrics(auc: dict[str, float], seed_index: int) -> dict[str, float]:
    metrics = {}
    for scenario, value in auc.items():
        metrics[f"test/auc/{scenario}"] = value
        metrics[f"test/logloss/{scenario}"] = round(1.2 - value, 6)
    metrics["test/auc/mean"] = float(np.mean(list(auc.values())))
    metrics["test/logloss/mean"] = float(np.mean([round(1.2 - v, 6) for v in auc.values()]))
    metrics["test/auc/overall"] = 0.70 + 0.001 * seed_index
    metrics["test/logloss/overall"] = 0.50 - 0.001 * seed_index
    return metrics


def add_run(
    client: MlflowClient,
    experiment_id: str,
    tags: dict[str, str],
    metrics: dict[str, float],
    status: str = "FINISHED",
    parent: str | None = None,
) -> str:
    if parent:
        tags = {**tags, "mlflow.parentRunId": parent}
    run = client.create_run(experiment_id, tags=tags, run_name=tags.get("regime", "run"))
    run_id = run.info.run_id
    # an earlier epoch value first: the report must read the latest one
    client.log_batch(run_id, metrics=[Metric(k, 0.0, 0, 0) for k in metrics], synchronous=True)
    client.log_batch(
        run_id,
        metrics=[Metric(k, v, 1, 1) for k, v in metrics.items()],
        params=[],
        tags=[RunTag("git_commit", "abc")],
        synchronous=True,
    )
    client.set_terminated(run_id, status)
    return run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """ssimctr-synthetic: a multirun parent with 2 regimes x 3 seeds, a dcn run outside it, a FAILED run;
    experiment `other` (not ssimctr*) with one run."""
    root = tmp_path_factory.mktemp("report-store")
    uri = f"sqlite:///{root}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("ssimctr-synthetic", artifact_location=(root / "artifacts").as_uri())
    other = client.create_experiment("other", artifact_location=(root / "artifacts-other").as_uri())
    parent = client.create_run(experiment, tags={"ssimctr.kind": "sweep"}, run_name="12-00-00").info.run_id
    children = {}
    for regime, scenarios in AUC.items():
        for i, seed in enumerate(SEEDS):
            tags = {
                "dataset": "synthetic",
                "backbone": "dnn",
                "regime": regime,
                "ssim": "disabled",
                "seed": seed,
                "experiment": "None",
            }
            auc = {scenario: values[i] for scenario, values in scenarios.items()}
            children[(regime, seed)] = add_run(client, experiment, tags, job_metrics(auc, i), parent=parent)
    client.log_metric(parent, "best/val/auc/mean", 0.71)
    client.set_terminated(parent, "FINISHED")
    base = {"dataset": "synthetic", "backbone": "dcn", "regime": "mt", "ssim": "disabled", "seed": "1"}
    loner = add_run(client, experiment, base, job_metrics({"s0": 0.8, "s1": 0.8, "s2": 0.8}, 0))
    add_run(
        client,
        experiment,
        {**base, "backbone": "failed"},
        job_metrics({"s0": 0.9, "s1": 0.9, "s2": 0.9}, 0),
        status="FAILED",
    )
    add_run(client, other, {**base, "backbone": "elsewhere"}, job_metrics({"s0": 0.5, "s1": 0.5, "s2": 0.5}, 0))
    return Store(uri, client, parent, children, loner)


def run_report(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = main([*argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_search_runs_returns_finished_runs_with_latest_metrics(store: Store) -> None:
    records = search_runs(store.uri, None, None, None)
    by_id = {r.run_id: r for r in records}
    assert set(by_id) == {*store.children.values(), store.loner, store.parent}
    child = by_id[store.children[("mt", "2")]]
    assert child.status == "FINISHED" and child.parent_run_id == store.parent
    assert child.experiment == "ssimctr-synthetic" and child.run_name == "mt"
    assert child.tags["seed"] == "2" and child.tags["git_commit"] == "abc"
    assert child.metrics["test/auc/s0"] == 0.772  # latest value, not the step-0 one
    assert by_id[store.loner].parent_run_id is None


def test_search_runs_filters(store: Store) -> None:
    children = search_runs(store.uri, ["ssimctr-synthetic"], store.parent, None)
    assert {r.run_id for r in children} == set(store.children.values())
    dnn_mt = search_runs(store.uri, None, store.parent, "tags.regime = 'mt'")
    assert {r.run_id for r in dnn_mt} == {store.children[("mt", s)] for s in SEEDS}
    assert [r.tags["backbone"] for r in search_runs(store.uri, ["other"], None, None)] == ["elsewhere"]


def test_report_numbers_equal_the_mlflow_metrics(store: Store, capsys, tmp_path: Path) -> None:
    md, table_csv = tmp_path / "report.md", tmp_path / "out" / "report.csv"
    code, out, err = run_report(
        capsys, "--uri", store.uri, "--parent", store.parent, "--markdown", str(md), "--csv", str(table_csv)
    )
    assert (code, err) == (0, "")
    assert "AUC (higher is better) · ssimctr-synthetic · split test · 6 runs in 2 groups" in out
    assert "without test/ metrics" not in out  # the parent is not its own child
    rows = {r["regime"]: r for r in csv.DictReader(table_csv.open())}
    assert set(rows) == {"mt", "single"}
    for regime in rows:
        runs = [store.client.get_run(store.children[(regime, seed)]).data.metrics for seed in SEEDS]
        assert rows[regime]["n"] == "3"
        for metric in ("auc", "logloss"):
            for scenario in (*SCENARIOS, "mean", "overall"):
                values = [m[f"test/{metric}/{scenario}"] for m in runs]
                assert float(rows[regime][f"{metric}/{scenario}/mean"]) == np.mean(values)
                assert float(rows[regime][f"{metric}/{scenario}/std"]) == pytest.approx(np.std(values, ddof=1))
    text = md.read_text()
    caption = text.splitlines()[0]
    assert caption.startswith(f"Table: `ssimctr-report --uri {store.uri} --parent {store.parent} --markdown")
    mt = next(line for line in text.splitlines() if line.startswith("| synthetic | dnn | mt |"))
    cells = [c.strip() for c in mt.strip("|").split("|")]
    s0 = f"{np.mean(AUC['mt']['s0']):.4f} ± {np.std(AUC['mt']['s0'], ddof=1):.4f}"
    s1 = f"{np.mean(AUC['mt']['s1']):.4f} ± {np.std(AUC['mt']['s1'], ddof=1):.4f}"
    assert cells[:6] == ["synthetic", "dnn", "mt", "disabled", "3", f"**{s0}**\\*"]  # (the runs have no task tag)
    assert cells[6] == f"**{s1}**"  # best but not significant
    assert cells[7] == f"{np.mean(AUC['mt']['s2']):.4f} ± {np.std(AUC['mt']['s2'], ddof=1):.4f}"


def test_group_by_other_tags_without_parent(store: Store, capsys, tmp_path: Path) -> None:
    out_csv = tmp_path / "r.csv"
    code, out, _ = run_report(
        capsys, "--uri", store.uri, "--group-by", "regime", "--metric", "auc", "--csv", str(out_csv)
    )
    assert code == 0 and "7 runs in 2 groups" in out and "Logloss" not in out
    assert "1 selected run(s) without test/ metrics" in out  # the multirun parent
    rows = {r["regime"]: r for r in csv.DictReader(out_csv.open())}
    assert rows["mt"]["n"] == "4"  # dcn run joins the mt group; FAILED run and experiment `other` stay out
    assert float(rows["mt"]["auc/s0/mean"]) == np.mean([*AUC["mt"]["s0"], 0.8])
    assert "logloss/s0/mean" not in rows["mt"]
    code, out, _ = run_report(capsys, "--uri", store.uri, "--filter", "tags.backbone = 'dcn'", "--csv", str(out_csv))
    assert code == 0 and "1 run in 1 group" in out
    assert [(r["backbone"], r["n"], r["auc/s0/std"]) for r in csv.DictReader(out_csv.open())] == [("dcn", "1", "")]


def test_plot_and_log_to_the_parent(store: Store, capsys, tmp_path: Path) -> None:
    plot, md = tmp_path / "auc.png", tmp_path / "report.md"
    code, out, err = run_report(
        capsys,
        "--uri",
        store.uri,
        "--parent",
        store.parent,
        "--plot",
        str(plot),
        "--markdown",
        str(md),
        "--log-to",
        store.parent,
    )
    assert (code, err) == (0, "") and plot.read_bytes()[:4] == b"\x89PNG"
    logged = {a.path for a in store.client.list_artifacts(store.parent, "report")}
    assert logged == {"report/auc.png", "report/report.md"}
    # nothing written: report.md and report.csv are produced in a temp dir and logged
    code, out, _ = run_report(capsys, "--uri", store.uri, "--parent", store.parent, "--log-to", store.loner)
    assert code == 0 and "logged report.md, report.csv to run" in out
    assert {a.path for a in store.client.list_artifacts(store.loner, "report")} == {
        "report/report.md",
        "report/report.csv",
    }


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--filter", "tags.backbone = 'nope'"], "no finished runs match experiments ssimctr* and filter"),
        (["--group-by", "backbone,optimizer"], "--group-by 'optimizer' is not a tag of the selected runs"),
        (["--filter", "tags.backbone ~ 'dnn'"], "is not a valid MLflow filter"),
        (["--experiment", "ssimctr-nope"], "no experiment named 'ssimctr-nope'"),
        (["--parent", "0123456789abcdef0123456789abcdef"], "no run 0123456789abcdef0123456789abcdef"),
        (["--metric", "gauc"], "no test/gauc/<scenario> metric"),
        (["--plot", "x.png", "--plot-metric", "logloss", "--metric", "auc"], "--plot-metric logloss is not one of"),
    ],
)
def test_user_errors_exit_2_without_traceback(store: Store, capsys, argv: list[str], message: str) -> None:
    code, out, err = run_report(capsys, "--uri", store.uri, *argv)
    assert code == 2 and out == ""
    assert re.sub(r"\s+", " ", err).startswith("error: ") and message in re.sub(r"\s+", " ", err)
    assert "Traceback" not in err


def test_missing_store_is_an_error_and_is_not_created(capsys, tmp_path: Path) -> None:
    database = tmp_path / "nowhere" / "mlflow.db"
    code, _, err = run_report(capsys, "--uri", f"sqlite:///{database}")
    assert code == 2 and "no MLflow store at" in err and not database.exists() and not database.parent.exists()
    with pytest.raises(UserError, match="no MLflow store"):
        search_runs(str(tmp_path / "mlruns"), None, None, None)


def test_log_report_artifacts_checks_files_and_run(store: Store, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such file"):
        log_report_artifacts(store.uri, store.loner, [tmp_path / "missing.md"])
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(UserError, match="not an MLflow run id"):
        log_report_artifacts(store.uri, "x' or 1=1", [tmp_path / "a.txt"])
    uri = log_report_artifacts(store.uri, store.loner, [tmp_path / "a.txt"], artifact_path="extra")
    assert uri.endswith("/extra")
    assert [a.path for a in store.client.list_artifacts(store.loner, "extra")] == ["extra/a.txt"]


def test_default_uri_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch, store: Store) -> None:
    from ssimctr.report.cli import build_parser

    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.uri)
    assert build_parser().parse_args([]).uri == store.uri
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert build_parser().parse_args([]).uri == "sqlite:///outputs/mlflow.db"
