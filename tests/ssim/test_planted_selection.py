"""ssim/selection=planted: the oracle selection of planted data shares exactly the rows of the truth column."""

from __future__ import annotations

import polars as pl
import pytest
import torch
from rich.console import Console

from conftest import compose, synthetic_config
from ssimctr.cli import runner
from ssimctr.cli.runner import JobInfo, run
from ssimctr.config.schema import ScenarioConfig, SplitConfig
from ssimctr.data import synthetic
from ssimctr.data.datasplit import open_split
from ssimctr.data.loaders import parquet_files
from ssimctr.data.prepare import TRUTH_COLUMN, prepare
from ssimctr.errors import UserError
from ssimctr.ssim.selection import Given, PlantedTruth
from ssimctr.tracking.base import NullTracker

PLANTED = ("dataset.shareable=0.5", "dataset.truth=shareable")


def _train(tmp_path, **planting):
    config = synthetic_config(rows=4000, users=300, items=100, **planting)
    data = prepare(config, ScenarioConfig(kind="column", column="scenario"), SplitConfig(kind="time"), tmp_path)
    return data, open_split(data.split_path("train"), data.feature_map, True, 10**6, torch.device("cpu"))


def _given(data, train) -> Given:
    return Given(0.3, 0, data.feature_map, train, torch.device("cpu"), None, {})


def test_the_gate_is_the_planted_flag_of_each_row_whatever_the_ratio(tmp_path):
    data, train = _train(tmp_path, shareable=0.5, truth=synthetic.SHAREABLE)
    gate, description = PlantedTruth().gate(_given(data, train))
    flags = pl.read_parquet(parquet_files(data.split_path("train")), columns=["row_id", TRUTH_COLUMN])
    flag_of = dict(zip(flags["row_id"].to_list(), flags[TRUTH_COLUMN].to_list()))
    batches = list(train.loader(512, shuffle=True, seed=3))
    for batch in batches:
        assert gate(batch).tolist() == [float(flag_of[i]) for i in batch.row_id.tolist()]
    shared = torch.cat([gate(batch) for batch in batches])
    assert 0.3 < shared.mean() < 0.7  # about half the rows flagged (shareable=0.5), not the ratio 0.3
    assert description == "planted truth"


def test_data_without_a_truth_column_is_refused_in_one_line(tmp_path):
    data, train = _train(tmp_path)
    with pytest.raises(
        UserError, match=r"^ssim/selection=planted shares the rows of the data's planted truth column, "
    ):
        PlantedTruth().gate(_given(data, train))


class Tags(NullTracker):
    def __init__(self) -> None:
        self.tags: dict[str, str] = {}

    def set_tags(self, tags: dict[str, str]) -> None:
        self.tags.update(tags)


def test_a_retrain_on_the_planted_answer_needs_no_search(tmp_path, monkeypatch):
    trackers = []
    monkeypatch.setattr(runner, "make_tracker", lambda *args: trackers.append(Tags()) or trackers[-1])
    small = (
        f"paths.outputs={tmp_path}",
        "dataset.rows=4000",
        "dataset.users=300",
        "dataset.items=100",
        "trainer=debug",
        "trainer.progress=false",
        "ssim=retrain",
        "ssim/selection=planted",
    )
    results = run(compose(*small, *PLANTED), JobInfo(output_dir=tmp_path / "oracle"), Console(quiet=True))
    assert {"test/auc/s0", "test/auc/mean"} <= set(results)
    assert trackers[-1].tags == {
        "ssim.phase": "retrain",
        "ssim.initial_weights": "fresh",
        "ssim.selection": "planted truth",
    }
    with pytest.raises(UserError, match="planted truth column"):
        run(compose(*small), JobInfo(output_dir=tmp_path / "plain"), Console(quiet=True))
