"""Run names put what sets a run apart first: the MLflow UI's runs table cuts a name at its column's width."""

from __future__ import annotations

import os

import pytest
from omegaconf import OmegaConf

from ssimctr.cli.runner import JobInfo, _run_name
from ssimctr.tracking.base import SWEEP_COMMON_ENV
from ssimctr.tracking.callbacks import MlflowParentRunCallback, _common_overrides

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
    assert _run_name(int(next((o[5:] for o in overrides if o.startswith("seed=")), 7)), info, []) == name


def test_what_every_job_of_a_multirun_shares_goes_to_the_end():
    # ssimctr -m regime=mt,mt_s seed=1,2 trainer=debug dataset.rows=6000 dataset=synthetic
    common = _common_overrides(
        ["regime=mt,mt_s", "seed=1,2", "trainer=debug", "dataset.rows=6000", "dataset=synthetic"]
    )
    assert common == ["trainer=debug", "dataset.rows=6000", "dataset=synthetic"]
    info = JobInfo(
        choices={**CHOICES, "regime": "mt_s", "trainer": "debug"},
        overrides=["regime=mt_s", "seed=2", "trainer=debug", "dataset.rows=6000", "dataset=synthetic"],
    )
    assert _run_name(2, info, common) == "mt_s seed=2 · synthetic-dnn debug dataset.rows=6000"
    assert _run_name(2, info, []) == "mt_s debug synthetic seed=2 dataset.rows=6000 · dnn"  # a single job: all its own


def test_a_multirun_exports_its_common_overrides_to_its_jobs(monkeypatch):
    monkeypatch.delenv(SWEEP_COMMON_ENV, raising=False)
    callback = MlflowParentRunCallback()
    config = OmegaConf.create({"hydra": {"overrides": {"task": ["regime=mt,single", "trainer=debug"]}}})
    callback.common_overrides = _common_overrides(list(config.hydra.overrides.task))
    callback.on_job_start(config)
    info = JobInfo(choices={**CHOICES, "trainer": "debug"}, overrides=["regime=single", "trainer=debug"])
    assert _run_name(1, info) == "single seed=1 · synthetic-dnn debug"
    callback.on_multirun_end(config)
    assert SWEEP_COMMON_ENV not in os.environ
