"""ssimctr.report pure functions on hand-made run records: aggregation, best marks, paired test, renderers."""

from __future__ import annotations

import ast
import csv
import io
import math
import re
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from scipy import stats

from ssimctr.errors import UserError
from ssimctr.report import aggregate, plot_bars, render_csv, render_markdown, render_terminal, significance
from ssimctr.report.table import Cell, Column, natural_key, paired_test
from ssimctr.tracking.runs import RunRecord

SEEDS = ("1", "2", "3")
# AUC per group (regime) and scenario, one value per seed. s0: mt better in every seed (significant);
# s1: mt better on average only (noise); s2: single better in every seed (significant).
AUC = {
    "mt": {"s0": [0.760, 0.772, 0.755], "s1": [0.700, 0.690, 0.712], "s10": [0.650, 0.655, 0.648]},
    "single": {"s0": [0.751, 0.760, 0.749], "s1": [0.705, 0.680, 0.714], "s10": [0.660, 0.661, 0.655]},
}


def make_records(auc: dict = AUC, seeds: tuple[str, ...] = SEEDS, split: str = "test") -> list[RunRecord]:
    records = []
    for regime, scenarios in auc.items():
        for i, seed in enumerate(seeds):
            metrics = {}
            for scenario, values in scenarios.items():
                metrics[f"{split}/auc/{scenario}"] = values[i]
                metrics[f"{split}/logloss/{scenario}"] = 1.2 - values[i]
            metrics[f"{split}/auc/mean"] = float(np.mean([v[i] for v in scenarios.values()]))
            metrics[f"{split}/auc/overall"] = 0.7 + 0.01 * i
            metrics[f"{split}/logloss/mean"] = float(np.mean([1.2 - v[i] for v in scenarios.values()]))
            metrics[f"{split}/logloss/overall"] = 0.5 - 0.01 * i
            metrics["val/auc/s0"] = 0.5
            tags = {"backbone": "dnn", "regime": regime, "ssim": "disabled", "seed": seed, "dataset": "synthetic"}
            records.append(
                RunRecord(
                    f"{regime}-{seed}",
                    f"run-{regime}-{seed}",
                    "FINISHED",
                    tags,
                    {"trainer.lr": "0.001" if regime == "mt" else "0.01"},
                    metrics,
                    experiment="ssimctr-synthetic",
                )
            )
    return records


@pytest.fixture(scope="module")
def table():
    return aggregate(make_records(), ("backbone", "regime", "ssim"), "test", ("auc", "logloss"))


def row_of(table, regime: str) -> int:
    return next(i for i, row in enumerate(table.rows) if row.group[1] == regime)


def test_columns_are_scenarios_in_natural_order_then_mean_and_overall(table) -> None:
    assert [c.key for c in table.columns] == [
        "auc/s0",
        "auc/s1",
        "auc/s10",
        "auc/mean",
        "auc/overall",
        "logloss/s0",
        "logloss/s1",
        "logloss/s10",
        "logloss/mean",
        "logloss/overall",
    ]
    assert sorted(["s10", "s2", "s1"], key=natural_key) == ["s1", "s2", "s10"]


def test_cells_are_mean_and_sample_std_of_the_runs(table) -> None:
    assert [row.group for row in table.rows] == [("dnn", "mt", "disabled"), ("dnn", "single", "disabled")]
    assert table.n_runs == 6 and table.experiments == ("ssimctr-synthetic",) and table.skipped == 0
    for regime, scenarios in AUC.items():
        row = table.rows[row_of(table, regime)]
        assert row.n == 3
        for scenario, values in scenarios.items():
            auc = row.cell(Column("auc", scenario))
            assert auc.values == tuple(values)
            assert auc.mean == pytest.approx(np.mean(values), abs=0, rel=1e-15)
            assert auc.std == pytest.approx(np.std(values, ddof=1), rel=1e-12)
            loss = row.cell(Column("logloss", scenario))
            assert loss.mean == pytest.approx(np.mean([1.2 - v for v in values]), rel=1e-12)


def test_best_is_highest_auc_and_lowest_logloss(table) -> None:
    mt, single = row_of(table, "mt"), row_of(table, "single")
    assert table.best(Column("auc", "s0")) == (mt,)
    assert table.best(Column("auc", "s10")) == (single,)
    assert table.best(Column("logloss", "s0")) == (mt,)
    assert table.best(Column("logloss", "s10")) == (single,)


def test_star_only_when_best_is_consistently_better(table) -> None:
    tests = significance(table, alpha=0.05)
    mt, single = row_of(table, "mt"), row_of(table, "single")
    for metric, alternative in (("auc", "greater"), ("logloss", "less")):
        s0, s1, s10 = (tests[Column(metric, s)] for s in ("s0", "s1", "s10"))
        assert (s0.best, s0.runner_up, s0.n_pairs) == (mt, single, 3) and s0.significant
        assert s1.best == mt and not s1.significant
        assert s10.best == single and s10.significant
        # the p-value is scipy's one-sided paired t-test on the logged numbers
        x, y = [row.cell(Column(metric, "s0")).values for row in (table.rows[mt], table.rows[single])]
        assert s0.pvalue == pytest.approx(stats.ttest_rel(x, y, alternative=alternative).pvalue)
    assert 0.01 < tests[Column("auc", "s0")].pvalue < 0.05
    assert not significance(table, alpha=0.01)[Column("auc", "s0")].significant


def test_no_test_with_fewer_than_two_paired_seeds() -> None:
    column = Column("auc", "s0")
    best = Cell((0.9, 0.91, 0.92), ("1", "2", "3"))
    assert paired_test(column, best, Cell((0.5, 0.5), ("3", "4"))).pvalue is None  # one common seed
    assert paired_test(column, best, Cell((0.5, 0.51, 0.5), (None, None, None))).n_pairs == 0
    one_seed = aggregate(make_records(seeds=("7",)), ("regime",), "test", ("auc",))
    assert not any(t.significant for t in significance(one_seed).values())
    assert "\\*" not in render_markdown(one_seed, significance(one_seed)).split("\n", 2)[2]


def test_repeated_seeds_are_averaged_before_pairing() -> None:
    cell = Cell((0.7, 0.8, 0.6), ("1", "1", "2"))
    assert cell.by_seed() == {"1": pytest.approx(0.75), "2": 0.6}


def test_group_by_other_tags_and_params() -> None:
    records = make_records()
    by_seed = aggregate(records, ("seed",), "test", ("auc",))
    assert [row.group for row in by_seed.rows] == [("1",), ("2",), ("3",)]
    assert by_seed.rows[0].cell(Column("auc", "s0")).values == (0.760, 0.751)
    by_param = aggregate(records, ("params.trainer.lr", "tags.regime"), "test", ("logloss",))
    assert [row.group for row in by_param.rows] == [("0.001", "mt"), ("0.01", "single")]
    assert by_param.metrics == ("logloss",) and all(c.metric == "logloss" for c in by_param.columns)


def test_a_metric_of_another_split_is_a_column_group_beside_the_test_metrics() -> None:
    """`search:ssim/selection_auc` reads `search/ssim/selection_auc/<scenario>` (an SSIM pipeline's search)."""
    records = make_records()
    for record in records[:3]:  # the mt runs searched; the single runs did not
        record.metrics.update({"search/ssim/selection_auc/s0": 0.8, "search/ssim/selection_auc/overall": 0.7})
    table = aggregate(records, ("regime",), "test", ("auc", "search:ssim/selection_auc"))
    searched = table.columns_of("search:ssim/selection_auc")
    assert [column.key for column in searched] == ["search:ssim/selection_auc/s0", "search:ssim/selection_auc/overall"]
    assert table.rows[row_of_group(table, "mt")].cell(searched[0]).values == (0.8, 0.8, 0.8)
    assert table.rows[row_of_group(table, "single")].cell(searched[0]).n == 0
    assert len(table.columns_of("auc")) == 5
    with pytest.raises(UserError, match="no search/ssim/gate/<scenario> metric"):
        aggregate(records, ("regime",), "test", ("auc", "search:ssim/gate"))


def row_of_group(table, value: str) -> int:
    return next(i for i, row in enumerate(table.rows) if row.group[0] == value)


def test_missing_tag_value_nan_metrics_and_runs_without_split_metrics() -> None:
    records = make_records()
    records[0].tags.pop("ssim")
    records[1].metrics["test/auc/s0"] = math.nan
    parent = RunRecord("parent", "sweep", "FINISHED", {"ssimctr.kind": "sweep"}, {}, {"best/val/auc/mean": 0.7})
    table = aggregate([*records, parent], ("regime", "ssim"), "test", ("auc",))
    assert table.skipped == 1 and table.n_runs == 6
    assert [row.group for row in table.rows] == [("mt", "-"), ("mt", "disabled"), ("single", "disabled")]
    cell = table.rows[1].cell(Column("auc", "s0"))
    assert cell.values == (0.755,) and cell.seeds == ("3",) and math.isnan(cell.std)
    assert "| 0.7550 (n=1) |" in render_markdown(table)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"group_by": ("backbone", "optimizer")}, "--group-by 'optimizer' is not a tag"),
        (
            {"metrics": ("auc", "gauc")},
            "no test/gauc/<scenario> metric in the selected runs (metrics of split test: auc, logloss)",
        ),
        ({"split": "train"}, "has a train/<metric>/<scenario> metric (splits logged: test, val)"),
        ({"group_by": ()}, "at least one tag"),
    ],
)
def test_aggregate_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(UserError, match=re.escape(message)):
        aggregate(make_records(), **{"group_by": ("regime",), "split": "test", "metrics": ("auc",), **kwargs})


def parse_markdown(text: str) -> tuple[str, list[dict[str, str]]]:
    lines = text.strip().splitlines()
    header = [cell.strip() for cell in lines[2].strip("|").split("|")]
    rows = [dict(zip(header, (cell.strip() for cell in line.strip("|").split("|")))) for line in lines[4:]]
    return lines[0], rows


def parse_cell(text: str) -> tuple[float, float | None, bool, bool]:
    """(mean, std, bold, star) of "**0.7623 ± 0.0087**\\*"."""
    match = re.fullmatch(r"(\*\*)?([\d.]+)(?: ± ([\d.]+))?(?: \(n=\d+\))?(?:\*\*)?(\\\*)?", text)
    assert match, text
    return float(match[2]), float(match[3]) if match[3] else None, bool(match[1]), bool(match[4])


def test_markdown_parses_back_to_the_numbers_and_marks(table) -> None:
    tests = significance(table)
    caption, rows = parse_markdown(render_markdown(table, tests, command="ssimctr-report --split test"))
    assert caption.startswith("Table: `ssimctr-report --split test` — ssimctr-synthetic · split test · 6 runs")
    assert len(rows) == 2
    for index, row in enumerate(table.rows):
        parsed = rows[index]
        assert (parsed["backbone"], parsed["regime"], parsed["ssim"], parsed["n"]) == (*row.group, "3")
        for column in table.columns:
            mean, std, bold, star = parse_cell(parsed[column.key])
            cell = row.cell(column)
            assert mean == pytest.approx(cell.mean, abs=5e-5) and std == pytest.approx(cell.std, abs=5e-5)
            assert bold == (index in table.best(column))
            assert star == (bold and tests[column].significant)
    stars = {key for parsed in rows for key, value in parsed.items() if value.endswith("\\*")}
    assert stars == {"auc/s0", "auc/s10", "logloss/s0", "logloss/s10"}


def test_csv_parses_back_to_the_exact_numbers(table) -> None:
    rows = list(csv.DictReader(io.StringIO(render_csv(table))))
    assert len(rows) == 2
    for row, parsed in zip(table.rows, rows):
        assert (parsed["backbone"], parsed["regime"], parsed["ssim"], int(parsed["n"])) == (*row.group, 3)
        for column in table.columns:
            cell = row.cell(column)
            assert float(parsed[f"{column.key}/mean"]) == cell.mean
            assert float(parsed[f"{column.key}/std"]) == cell.std
            assert int(parsed[f"{column.key}/n"]) == cell.n == 3
    values = [float(r["auc/s0/mean"]) for r in rows]
    assert values == [np.mean(AUC["mt"]["s0"]), np.mean(AUC["single"]["s0"])]


def test_terminal_tables_bold_the_best_and_star_the_significant(table) -> None:
    console = Console(record=True, width=200, force_terminal=True, color_system="standard")
    rich_tables = render_terminal(table, significance(table))
    assert len(rich_tables) == 2
    for rich_table in rich_tables:
        console.print(rich_table)
    plain = console.export_text(styles=False, clear=False)
    assert "AUC (higher is better) · ssimctr-synthetic · split test · 6 runs in 2 groups" in plain
    assert "Logloss (lower is better)" in plain
    styled = console.export_text(styles=True)
    best_s0 = f"{np.mean(AUC['mt']['s0']):.4f} ± {np.std(AUC['mt']['s0'], ddof=1):.4f}*"
    noise_s1 = f"{np.mean(AUC['mt']['s1']):.4f} ± {np.std(AUC['mt']['s1'], ddof=1):.4f}"
    other_s0 = f"{np.mean(AUC['single']['s0']):.4f} ± {np.std(AUC['single']['s0'], ddof=1):.4f}"
    assert f"\x1b[1m{best_s0}\x1b[0m" in styled
    assert f"\x1b[1m{noise_s1}\x1b[0m" in styled and f"{noise_s1}*" not in plain
    assert other_s0 in plain and f"\x1b[1m{other_s0}" not in styled


def test_plot_bars_writes_a_png(table, tmp_path) -> None:
    path = plot_bars(table, tmp_path / "plots" / "auc.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def imported_modules(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_report_never_imports_mlflow_and_runs_imports_it_lazily() -> None:
    import ssimctr.report
    import ssimctr.tracking.runs

    for path in Path(ssimctr.report.__file__).parent.glob("*.py"):
        assert "mlflow" not in imported_modules(ast.parse(path.read_text())), path
    module = ast.parse(Path(ssimctr.tracking.runs.__file__).read_text())
    top_level = [node for node in module.body if not isinstance(node, ast.FunctionDef | ast.ClassDef | ast.If)]
    assert "mlflow" not in imported_modules(ast.Module(body=top_level, type_ignores=[]))
