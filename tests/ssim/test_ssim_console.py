"""What SSIM jobs say on the console: the command that retrains on a search, a reused search, no MLflow
download bar, and a search made on other data named by the options that differ."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from conftest import compose
from ssimctr.cli import runner
from ssimctr.cli.runner import JobInfo, run
from ssimctr.errors import UserError
from ssimctr.ssim import artifacts
from ssimctr.tracking.base import NullTracker
from ssimctr.tracking.mlflow_tracker import MlflowTracker, quiet_downloads

SMALL = (
    "dataset.rows=4000",
    "dataset.users=300",
    "dataset.items=100",
    "trainer=debug",
    "trainer.progress=false",
    "ssim.selector_hidden=[8]",
)


class RunTracker(NullTracker):
    """A tracker whose run has the id `run_id`."""

    def __init__(self, run_id: str | None) -> None:
        self._run_id = run_id

    @property
    def run_id(self) -> str | None:
        return self._run_id


def printed(tmp_path: Path, name: str, *overrides: str) -> str:
    """What a small job prints (120 columns)."""
    out = io.StringIO()
    run(
        compose(f"paths.outputs={tmp_path}", *SMALL, *overrides),
        JobInfo(output_dir=tmp_path / name),
        Console(file=out, width=120),
    )
    return out.getvalue()


def test_a_search_ends_with_the_retrain_command_on_its_run_or_its_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "make_tracker", lambda *args: RunTracker("f00d"))
    lines = printed(tmp_path, "tracked", "ssim=search").splitlines()
    assert lines[-1] == (  # the last line, after the results table
        f"SSIM search saved in {tmp_path / 'tracked' / 'ssim'}. Next, retrain on it: ssimctr ssim=retrain "
        "ssim.from_run=f00d (with this job's dataset, scenario and split options)"
    )
    monkeypatch.setattr(runner, "make_tracker", lambda *args: RunTracker(None))
    folder = tmp_path / "untracked" / "ssim"
    assert f"Next, retrain on it: ssimctr ssim=retrain ssim.from_path={folder} (" in printed(
        tmp_path, "untracked", "ssim=search"
    )


def test_a_reused_search_is_announced_with_the_run_that_made_it(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "make_tracker", lambda *args: RunTracker("beef"))
    first = printed(tmp_path, "first", "ssim=pipeline")
    second = printed(tmp_path, "second", "ssim=pipeline")
    assert "SSIM search reused" not in first
    assert "SSIM search reused: run beef made this search (same data, searcher, seed and options): " in second


def test_a_search_on_other_data_is_refused_by_the_options_that_differ(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "make_tracker", lambda *args: RunTracker(None))
    printed(tmp_path, "search", "ssim=search")
    folder = tmp_path / "search" / "ssim"
    message = (
        f"the search in {folder} was made on other data (dataset.rows=4000 in the search, 3000 here); retrain "
        "with the search's dataset, scenario and split options"
    )
    with pytest.raises(UserError) as refused:
        printed(tmp_path, "retrain", "ssim=retrain", f"ssim.from_path={folder}", "dataset.rows=3000")
    assert str(refused.value) == message


def test_the_data_difference_names_up_to_three_options_else_the_input_or_the_code():
    here = {
        "options": {"dataset": {"rows": 10, "seed": 1}, "split": {"kind": "time"}},
        "source": "a",
        "preparation_code": "x",
    }
    other = {"options": {"dataset": {"rows": 20, "seed": 2}, "split": {"kind": "random"}, "scenario": {"k": 1}}}
    text = artifacts.data_difference({**here, **other}, here)
    assert text == (
        "dataset.rows=20 in the search, 10 here; dataset.seed=2 in the search, 1 here; "
        "scenario.k=1 in the search, None here; and 1 more options"
    )
    assert artifacts.data_difference({**here, "source": "b"}, here) == "the same options, other input files"
    assert artifacts.data_difference({**here, "preparation_code": "y"}, here).endswith(
        "another version of the preparation code"
    )


def test_downloading_a_search_shows_no_mlflow_progress_bar(tmp_path, capfd):
    tracker = MlflowTracker(f"sqlite:///{tmp_path}/m.db", "downloads")
    run_id = tracker.start("search", {})
    folder = tmp_path / "ssim"
    folder.mkdir()
    for name in ("a.txt", "b.txt"):
        (folder / name).write_text(name)
    tracker.log_artifact(folder)
    capfd.readouterr()
    tracker.client.download_artifacts(run_id, "ssim", str(tmp_path / "shown"))  # MLflow's own: the bar
    assert "Downloading artifacts" in capfd.readouterr().err
    downloaded = tracker.download_artifacts(run_id, "ssim", tmp_path / "quiet")
    assert "Downloading artifacts" not in capfd.readouterr().err
    assert sorted(path.name for path in downloaded.iterdir()) == ["a.txt", "b.txt"]


def test_quiet_downloads_puts_the_variable_back(monkeypatch):
    from mlflow.environment_variables import MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR

    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "true")
    with quiet_downloads():
        assert MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.get() is False
    assert MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.get() is True
    monkeypatch.delenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    with quiet_downloads():
        pass
    assert not MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.is_set()
