import csv
import math
import re

import pytest
import torch
from rich.console import Console
from torch import nn

from conftest import compose, make_batch
from ssimctr.cli.console import print_results, results_rows, write_results_csv
from ssimctr.cli.runner import JobInfo, run
from ssimctr.config.schema import TrainerConfig
from ssimctr.data.batch import Batch
from ssimctr.data.datasplit import MemorySplit
from ssimctr.features.feature_map import FeatureMap
from ssimctr.models.base import MultiScenarioModel
from ssimctr.tasks.outcome import Outcome
from ssimctr.train.loop import EpochClock, FitResult, duration, fit, training_phase
from ssimctr.train.sharing import FixedSharing

SUMMARY = [
    {"scenario": "search", "rows": 1234567, "positives": 61728, "ctr": 61728 / 1234567},
    {"scenario": "feed", "rows": 1000, "positives": 0, "ctr": 0.0},
]
RESULTS = {
    "test/auc/search": 0.734567,
    "test/logloss/search": 0.201234,
    "test/auc/feed": float("nan"),
    "test/logloss/feed": 0.012345,
    "test/auc/overall": 0.741111,
    "test/logloss/overall": 0.199999,
    "test/auc/mean": 0.734567,
    "test/logloss/mean": 0.10679,
}


def test_results_rows():
    rows = results_rows(RESULTS, SUMMARY)
    assert [r["scenario"] for r in rows] == ["search", "feed", "overall", "mean"]
    assert rows[0] == {
        "scenario": "search",
        "rows": 1234567,
        "ctr": 61728 / 1234567,
        "auc": 0.734567,
        "logloss": 0.201234,
    }
    assert math.isnan(rows[1]["auc"])
    assert rows[2]["rows"] == 1235567
    assert rows[2]["ctr"] == 61728 / 1235567
    assert rows[2]["auc"] == 0.741111
    assert rows[3] == {"scenario": "mean", "rows": None, "ctr": None, "auc": 0.734567, "logloss": 0.10679}


def test_results_rows_other_split():
    results = {k.replace("test/", "val/"): v for k, v in RESULTS.items()}
    assert results_rows(results, SUMMARY, split="val")[0]["logloss"] == 0.201234


def test_print_results():
    console = Console(record=True, width=120)
    print_results(console, results_rows(RESULTS, SUMMARY), "Test results", footer="MLflow run: abc123")
    text = console.export_text()
    for expected in (
        "Test results",
        "search",
        "feed",
        "overall",
        "mean",
        "1,234,567",
        "1,235,567",
        "5.00%",
        "0.00%",
        "0.7346",
        "0.2012",
        "0.0123",
        "0.7411",
        "n/a",
        "MLflow run: abc123",
    ):
        assert expected in text, expected
    assert text.index("search") < text.index("overall") < text.index("mean") < text.index("MLflow run")


def test_print_results_without_footer():
    console = Console(record=True, width=120)
    print_results(console, results_rows(RESULTS, SUMMARY), "Results")
    assert "MLflow" not in console.export_text()


def test_write_results_csv_round_trip(tmp_path):
    rows = results_rows(RESULTS, SUMMARY)
    path = tmp_path / "out" / "results.csv"
    write_results_csv(path, rows)
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["scenario", "rows", "ctr", "auc", "logloss"]
        back = list(reader)
    assert [r["scenario"] for r in back] == ["search", "feed", "overall", "mean"]
    assert int(back[0]["rows"]) == 1234567
    assert float(back[0]["ctr"]) == rows[0]["ctr"]
    assert float(back[0]["auc"]) == 0.734567
    assert math.isnan(float(back[1]["auc"]))
    assert back[3]["rows"] == "" and back[3]["ctr"] == ""
    assert float(back[3]["logloss"]) == 0.10679


# -- the console during training: one line per epoch, named phases, the time left, one-line titles --------


class BiasModel(MultiScenarioModel):
    """K bias-only towers: a model `fit` can train in milliseconds."""

    def __init__(self, num_scenarios: int) -> None:
        names = tuple(f"s{k}" for k in range(num_scenarios))
        super().__init__(FeatureMap(categorical=(), scenario_names=names), num_scenarios, 1, True)
        self.bias = nn.Parameter(torch.zeros(num_scenarios))

    def towers(self, batch: Batch) -> torch.Tensor:
        return self.bias.expand(len(batch), -1)


def fit_scripted(train: MemorySplit, scores: list[float], progress: bool, **options) -> FitResult:
    """`fit` of a bias model whose validation gives `scores`, one per epoch."""
    model, values = BiasModel(3), iter(scores)
    settings = TrainerConfig(batch_size=8, epochs=len(scores), patience=2, progress=progress, seed=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    return fit(
        model,
        FixedSharing(0.0),
        optimizer,
        train.loader(8, shuffle=True),
        lambda m: {MONITOR: next(values)},
        settings,
        **options,
    )


MONITOR = "val/auc/mean"
EPOCH_LINE = re.compile(r"^(?:(\w[\w ]*?) )?epoch (\d+)/(\d+): val/(?:cold/)?auc/mean (\d\.\d{4})(.*)$")


def epoch_lines(out: str) -> list[tuple[str, ...]]:
    return [m.groups() for m in map(EPOCH_LINE.match, out.splitlines()) if m]


@pytest.fixture
def train(tiny_feature_map) -> MemorySplit:
    return MemorySplit(make_batch(tiny_feature_map, rows=40, seed=0))


@pytest.mark.parametrize("progress", [True, False])
def test_every_epoch_prints_one_line_with_or_without_the_progress_bar(train, capsys, progress):
    fit_scripted(train, [0.61, 0.65, 0.64, 0.63], progress)  # stops after epoch 4: 2 epochs without a better one
    out = capsys.readouterr().out
    lines = epoch_lines(out)
    assert [(phase, epoch, total, value) for phase, epoch, total, value, _ in lines] == [
        (None, "1", "4", "0.6100"),
        (None, "2", "4", "0.6500"),
        (None, "3", "4", "0.6400"),
        (None, "4", "4", "0.6300"),
    ]
    rest = [line[-1] for line in lines]
    assert rest[0].startswith(" (best), train loss ") and "rows/s; 3 more epochs at most, 0:00:0" in rest[0]
    assert rest[2].startswith(" (best 0.6500, epoch 2), train loss ") and rest[2].endswith(
        "1 more epoch at most, 0:00:00"
    )
    assert rest[3].endswith("; the last epoch")
    bars = [line for line in out.splitlines() if line.startswith("epoch 1/4 ") and "ETA" in line]
    assert len(bars) == (1 if progress else 0)  # the bar: epoch n/N, batches, loss, rows/s, elapsed, the fit's ETA


def test_an_early_stop_says_why(train, capsys):
    fit_scripted(train, [0.61, 0.65, 0.64, 0.63, 0.9, 0.9], False)
    lines = epoch_lines(capsys.readouterr().out)
    assert len(lines) == 4  # epochs 5 and 6 never ran
    assert lines[-1][-1].endswith("stops here: no better val/auc/mean for 2 epochs (trainer.patience)")


def test_a_named_phase_names_its_lines_and_its_result(train, capsys):
    named = fit_scripted(train, [0.6, 0.7], False, phase="retrain")
    with training_phase("base"):
        inherited = fit_scripted(train, [0.6], False)
    assert (named.phase, inherited.phase) == ("retrain", "base")
    lines = epoch_lines(capsys.readouterr().out)
    assert [(phase, epoch, total) for phase, epoch, total, *_ in lines] == [
        ("retrain", "1", "2"),
        ("retrain", "2", "2"),
        ("base", "1", "1"),
    ]
    assert fit_scripted(train, [0.6], False).phase == ""  # outside training_phase


def test_the_best_epoch_is_reported_per_phase_never_averaged():
    def trained(phase: str, best: int) -> FitResult:
        return FitResult(best_epoch=best, phase=phase)

    alone = Outcome({}, {}, [trained("", 3)])
    assert alone.best_epochs == "best epoch 3"
    two = Outcome({}, {}, [trained("base", 2), trained("meta", 1)])
    assert two.best_epochs == "best epoch: base 2, meta 1" and two.best_epoch == 1.5  # the metric keeps the mean
    assert Outcome({}, {}, [trained("retrain", 0)]).best_epochs == "best epoch: retrain 0"


def test_the_time_left_is_the_remaining_epochs_at_the_pace_so_far():
    clock = EpochClock(10)
    assert clock.left(1, step=5, total=10, elapsed=5.0) == pytest.approx(5 + 10 * 9)  # this epoch's pace
    clock.ended(10.0)
    clock.ended(5.0)
    assert clock.left(2) == pytest.approx(7.5 * 8)  # mean epoch (training + validation) x epochs left
    assert clock.left(3, step=2, total=4, elapsed=1.0) == pytest.approx(1.0 + 7.5 * 7)
    assert math.isnan(EpochClock(3).left(1)) and duration(float("nan")) == "?" and duration(3725.4) == "1:02:05"


def test_a_long_title_stays_on_one_line():
    console = Console(record=True, width=80)
    title = "test/warm: cold users, 5-shot, coldstart Maml; best epoch: base 2, meta 1"
    print_results(console, results_rows(RESULTS, SUMMARY), title)
    text = console.export_text()
    assert text.splitlines()[0] == title  # not centred over the narrow table and cut into pieces


TWO_PHASES = {  # overrides: (the phases' names in order of their epoch lines, the titles' best-epoch part)
    "ssim=pipeline": (["search", "retrain"], r"best epoch: retrain \d+"),
    "task=cold_start coldstart=maml task.shots=1 task.warmup_rounds=1": (
        ["base", "meta"],
        r"best epoch: base \d+, meta \d+",
    ),
    "task=cold_start coldstart=metaemb": (["base", "meta"], r"best epoch: base \d+, meta \d+"),
    "regime=finetune": (["pretrain", "finetune s0", "finetune s1", "finetune s2"], r"best epoch: pretrain \d+, "),
    "regime=st": (["st s0", "st s1", "st s2"], r"best epoch: st s0 \d+, st s1 \d+, st s2 \d+"),
}


@pytest.mark.slow
@pytest.mark.parametrize("overrides", list(TWO_PHASES))
def test_a_job_of_several_trainings_names_each_on_its_lines_and_in_the_title(overrides, tmp_path, capsys):
    phases, best = TWO_PHASES[overrides]
    tiny = (f"paths.outputs={tmp_path}", "dataset.rows=8000", "trainer=debug", "trainer.progress=false")
    cfg = compose(*tiny, "tracking=none", *overrides.split())
    console = Console(record=True, width=80)
    run(cfg, JobInfo(output_dir=tmp_path / "run"), console)
    lines = epoch_lines(capsys.readouterr().out)
    assert list(dict.fromkeys(phase for phase, *_ in lines)) == phases
    titles = [line for line in console.export_text().splitlines() if line.startswith("test")]
    assert titles and all(re.match(rf"test(/\w+)?: .+; {best}", title) for title in titles), titles  # unbroken
    assert not any(re.search(r"best epoch.*\d\.\d", title) for title in titles)  # never a mean such as 1.5
