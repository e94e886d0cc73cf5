"""ssim.reuse_search: a pipeline retrains on a finished search of the same key instead of searching
again (ssimctr/ssim/cache.py), so the transfer rows of experiment=table_ssim share the DNN row's search;
and the regime's loss reduction reaches both SSIM losses."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
import torch
from rich.console import Console

from conftest import compose
from ssimctr.cli import runner
from ssimctr.cli.runner import JobInfo, run
from ssimctr.ssim import criteria, losses, phases
from ssimctr.tracking.base import NullTracker

SMALL = (
    "tracking=none",
    "dataset.rows=6000",
    "dataset.users=500",
    "dataset.items=200",
    "trainer=debug",
    "trainer.progress=false",
    "ssim=pipeline",
    "ssim.selector_hidden=[16]",
)


class RecordingTracker(NullTracker):
    """Records the tags, artifacts and metrics (the last value of each) a run logs."""

    def __init__(self) -> None:
        self.tags: dict[str, str] = {}
        self.artifacts: list[Path] = []
        self.metrics: dict[str, float] = {}

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.metrics.update(metrics)

    def set_tags(self, tags: dict[str, str]) -> None:
        self.tags.update(tags)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self.artifacts.append(Path(path))


class Pipelines:
    """Small ssim=pipeline jobs, by default in one output folder (one data and search cache); counts
    the searches they make."""

    def __init__(self, outputs: Path, monkeypatch) -> None:
        self.outputs, self.searches, self.runs = outputs, 0, 0
        self.trackers: list[RecordingTracker] = []
        real = phases.search

        def counting(*args, **kwargs):
            self.searches += 1
            return real(*args, **kwargs)

        def tracker(*args) -> RecordingTracker:
            self.trackers.append(RecordingTracker())
            return self.trackers[-1]

        monkeypatch.setattr(phases, "search", counting)
        monkeypatch.setattr(runner, "make_tracker", tracker)

    def run(self, *overrides: str, outputs: Path | None = None) -> tuple[dict[str, float], RecordingTracker]:
        """The results and the tracker of one job."""
        self.runs += 1
        outputs = outputs or self.outputs
        cfg = compose(f"paths.outputs={outputs}", *SMALL, *overrides)
        results = run(cfg, JobInfo(output_dir=outputs / f"run{self.runs}"), Console(quiet=True))
        return results, self.trackers[-1]


def searched(tracker: RecordingTracker) -> Path:
    """The search folder a pipeline logged (its own, or the reused one from the cache)."""
    [folder] = [path for path in tracker.artifacts if path.name == "ssim"]
    return folder


def test_a_transfer_row_reuses_the_dnn_rows_search(tmp_path, monkeypatch):
    pipelines = Pipelines(tmp_path, monkeypatch)
    _, dnn = pipelines.run()
    _, star = pipelines.run("backbone=star", "search_backbone=dnn")
    assert pipelines.searches == 1
    assert star.tags["ssim.search_reused"] == "true" and "ssim.search_reused" not in dnn.tags
    assert star.tags["ssim.search_key"] == dnn.tags["ssim.search_key"]
    assert searched(star).parent.name == dnn.tags["ssim.search_key"]  # the cache entry, logged as ssim/
    for name in ("selection.parquet", "initial_state.pt", "selector.pt", "embedding.pt"):
        assert (searched(star) / name).read_bytes() == (searched(dnn) / name).read_bytes()
    selection = {key: value for key, value in dnn.metrics.items() if key.startswith("search/ssim/shared_fraction/")}
    assert len(selection) == 3  # s0, s1, s2: the reused search's selection metrics, logged again
    assert {key: star.metrics.get(key) for key in selection} == selection


def test_another_seed_text_encoder_or_reuse_off_searches_again(tmp_path, monkeypatch):
    pipelines = Pipelines(tmp_path, monkeypatch)
    _, first = pipelines.run()
    _, other_seed = pipelines.run("seed=7")
    assert pipelines.searches == 2 and other_seed.tags["ssim.search_key"] != first.tags["ssim.search_key"]
    _, with_text = pipelines.run("text_encoder=hashing")  # the title becomes a field: another embedding
    assert pipelines.searches == 3 and with_text.tags["ssim.search_key"] != first.tags["ssim.search_key"]
    _, off = pipelines.run("ssim.reuse_search=false")
    assert pipelines.searches == 4 and "ssim.search_reused" not in off.tags


def test_a_search_is_the_same_whichever_job_makes_it(tmp_path, monkeypatch):
    """The transfer row searching first (its DNN built after its STAR) makes the DNN row's search; and a
    pipeline on a reused search gives the results of the pipeline that searched."""
    pipelines = Pipelines(tmp_path / "dnn_first", monkeypatch)
    _, star = pipelines.run("backbone=star", "search_backbone=dnn", outputs=tmp_path / "star_first")
    fresh, dnn = pipelines.run()
    reused, again = pipelines.run()
    assert "ssim.search_reused" not in star.tags and again.tags["ssim.search_reused"] == "true"
    assert pl.read_parquet(searched(star) / "selection.parquet").equals(
        pl.read_parquet(searched(dnn) / "selection.parquet")
    )
    timing = [key for key in fresh if "rows_per_s" in key]
    assert {k: v for k, v in reused.items() if k not in timing} == {k: v for k, v in fresh.items() if k not in timing}


def test_a_pipelines_search_is_the_search_of_an_ssim_search_run(tmp_path, monkeypatch):
    pipelines = Pipelines(tmp_path, monkeypatch)
    _, alone = pipelines.run("ssim=search")
    _, pipeline = pipelines.run()
    assert pl.read_parquet(searched(alone) / "selection.parquet").equals(
        pl.read_parquet(searched(pipeline) / "selection.parquet")
    )


@pytest.mark.parametrize("reduction", ["row", "scenario"])
def test_the_regime_loss_reduction_reaches_the_search_and_the_retrain(tmp_path, monkeypatch, reduction):
    seen = {"search": set(), "retrain": set()}
    for module, name, phase in ((criteria, "SearchLoss", "search"), (phases, "RetrainLoss", "retrain")):
        real = getattr(losses, name)

        def recording(*args, _real=real, _phase=phase, **kwargs):
            loss = _real(*args, **kwargs)
            seen[_phase].add(loss.reduction)
            return loss

        monkeypatch.setattr(module, name, recording)
    Pipelines(tmp_path, monkeypatch).run(f"regime.loss_reduction={reduction}")
    assert seen == {"search": {reduction}, "retrain": {reduction}}


def test_the_cache_entry_is_written_whole(tmp_path, monkeypatch):
    pipelines = Pipelines(tmp_path, monkeypatch)
    _, tracker = pipelines.run()
    entries = list((tmp_path / "cache" / "ssim_search").iterdir())
    assert [entry.name for entry in entries] == [tracker.tags["ssim.search_key"]]  # no staging folder left
    assert torch.load(entries[0] / "ssim" / "selector.pt")["hidden"] == [16]
