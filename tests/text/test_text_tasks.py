"""Text through the job: task=multi_modal turns the dataset's text fields on (hashing by default),
ID-only stays the default everywhere else, and text runs end to end in the multi-scenario and
cold-start studies."""

from __future__ import annotations

import math

import pytest
from rich.console import Console

from conftest import compose
from ssimctr.cli.runner import JobInfo, run

SMALL = ("tracking=none", "dataset.rows=6000", "dataset.users=600", "dataset.items=300", "trainer=debug")


def test_text_is_off_by_default_and_on_in_the_multi_modal_task():
    assert compose().text_encoder.kind == "none"
    assert compose("task=cold_start").text_encoder.kind == "none"
    assert compose("task=multi_modal").text_encoder.kind == "hashing"
    assert compose("task=multi_modal", "text_encoder=minilm").text_encoder.kind == "minilm"
    assert compose("task=multi_modal", "text_encoder=none").text_encoder.kind == "none"  # the ID-only row
    assert compose("experiment=table_multimodal").task._target_.endswith("MultiScenarioTask")


@pytest.mark.parametrize(
    "overrides",
    [
        ("task=multi_modal",),
        ("task=multi_modal", "backbone=star", "ssim=pipeline", "ssim.selector_hidden=[16]"),
        ("task=cold_start", "task.entity=item", "coldstart=metaemb", "text_encoder=hashing"),
    ],
    ids=["multi_modal", "ssim_star", "cold_start"],
)
def test_a_job_with_text_fields_trains_and_reports_every_scenario(overrides, tmp_path):
    cfg = compose(f"paths.outputs={tmp_path}", *SMALL, *overrides)
    console = Console(record=True, width=200)
    results = run(cfg, JobInfo(output_dir=tmp_path / "job"), console)
    assert "text title: " in console.export_text()
    assert all(math.isfinite(results[f"test/auc/{s}"]) for s in ("s0", "s1", "s2", "mean"))
