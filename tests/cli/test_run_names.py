"""Run names put what sets a run apart first: the MLflow UI's runs table cuts a name at its column's width."""

from __future__ import annotations

import pytest

from ssimctr.cli.runner import JobInfo, _run_name

CHOICES = {"dataset": "synthetic", "backbone": "dnn", "regime": "mt", "ssim": "disabled", "trainer": "default"}


@pytest.mark.parametrize(
    ("overrides", "choices", "name"),
    [
        (["regime=mt_s", "seed=2"], {"regime": "mt_s"}, "mt_s seed=2 · synthetic-dnn"),
        ([], {}, "seed=7 · synthetic-dnn-mt"),
        (  # keys after the seed; where and how it runs (paths, tracking, threads, progress) never named
            ["paths.outputs=/tmp/x", "trainer.lr=0.01", "backbone=mmoe", "trainer.threads=1", "tracking.run_name=null"],
            {"backbone": "mmoe"},
            "mmoe seed=7 trainer.lr=0.01 · synthetic-mt",
        ),
        (["ssim=pipeline"], {"ssim": "pipeline"}, "pipeline seed=7 · synthetic-dnn-mt"),
        (
            ["+experiment=table_ssim", "dataset.rows=100"],
            {"ssim": "search"},
            "seed=7 dataset.rows=100 · synthetic-dnn-mt-ssim-search",
        ),
    ],
)
def test_the_distinguishing_part_comes_first(overrides, choices, name):
    info = JobInfo(choices={**CHOICES, **choices}, overrides=overrides)
    assert _run_name(int(next((o[5:] for o in overrides if o.startswith("seed=")), 7)), info) == name
