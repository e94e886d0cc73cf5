import csv
import math

from rich.console import Console

from ssimctr.cli.console import print_results, results_rows, write_results_csv

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
