"""Render a ReportTable: rich tables for the terminal, a markdown table, CSV text (all pure)."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence

from rich.table import Table
from rich.text import Text

from ssimctr.report.table import Cell, Column, PairedTest, ReportTable, Row

METRIC_LABELS = {"auc": "AUC", "gauc": "GAUC", "logloss": "Logloss"}
Tests = Mapping[Column, PairedTest]


def metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric)


def describe(table: ReportTable) -> str:
    """ "ssimctr-synthetic · task multi_scenario · split test · 6 runs in 2 groups" (what the report covers:
    the experiment, the dataset, task and data split every row shares, the metrics' split, the runs)."""
    experiments = ", ".join(table.experiments) or "(no experiment name)"
    shared = "".join(
        f" · {tag} {value}" for tag, value in table.section if tag != "dataset" or value not in experiments
    )
    groups = len(table.rows)
    return (
        f"{experiments}{shared} · split {table.split} · {table.n_runs} run{'s' * (table.n_runs != 1)} "
        f"in {groups} group{'s' * (groups != 1)}"
    )


def legend(alpha: float, markdown: bool = False) -> str:
    """What the numbers and the marks mean."""
    bold, star = ("**bold**", "\\*") if markdown else ("bold", "*")
    return (
        f"mean ± std (sample, ddof=1) over the runs of each group, n = runs; {bold} = best per column; "
        f"{star} = best beats the runner-up in a one-sided paired t-test over seeds, p < {alpha:g}"
    )


def pooling_warnings(table: ReportTable, keys: int = 4, values: int = 4, width: int = 40) -> list[str]:
    """One line per group whose runs differ in params beyond the seed (`Row.differences`), e.g.
    "group dnn / mt pools 4 runs with different dataset.rows (100000, 500000) and trainer.epochs (1, 10);
    add them to --group-by (e.g. params.dataset.rows) or narrow the runs with --filter".
    At most `keys` keys with their values (at most `values` each, cut to `width` chars), then a count."""
    lines = []
    for row in table.rows:
        if not row.differences:
            continue
        shown = [f"{key} ({_values(found, values, width)})" for key, found in list(row.differences.items())[:keys]]
        rest = len(row.differences) - len(shown)
        if rest:
            names = list(row.differences)[keys:]
            more = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
            listed = ", ".join(shown) + f" and {rest} more ({more})"
        else:
            listed = ", ".join(shown[:-1]) + (" and " if len(shown) > 1 else "") + shown[-1]
        first = next(iter(row.differences))
        lines.append(
            f"group {' / '.join(row.group)} pools {row.n} runs with different {listed}; "
            f"add them to --group-by (e.g. params.{first}) or narrow the runs with --filter"
        )
    return lines


def _values(found: tuple[str, ...], limit: int, width: int) -> str:
    cut = [value if len(value) <= width else value[: width - 3] + "..." for value in found[:limit]]
    return ", ".join(cut) + (f", ... ({len(found)} values)" if len(found) > limit else "")


def format_value(value: float, digits: int = 4) -> str:
    return "" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def format_cell(cell: Cell, row_n: int | None = None, digits: int = 4) -> str:
    """ "0.7512 ± 0.0031"; just the mean for one run; "(n=k)" appended when k differs from the row's n."""
    if cell.n == 0:
        return ""
    text = format_value(cell.mean, digits)
    if cell.n > 1:
        text += f" ± {format_value(cell.std, digits)}"
    if row_n is not None and cell.n != row_n:
        text += f" (n={cell.n})"
    return text


def marks(table: ReportTable, tests: Tests | None) -> dict[tuple[int, Column], tuple[bool, bool]]:
    """(row index, column) -> (is best, significant) for every best cell."""
    out: dict[tuple[int, Column], tuple[bool, bool]] = {}
    for column in table.columns:
        test = (tests or {}).get(column)
        for index in table.best(column):
            out[(index, column)] = (True, bool(test and test.best == index and test.significant))
    return out


def render_terminal(table: ReportTable, tests: Tests | None = None, digits: int = 4) -> list[Table]:
    """One rich table per metric; best cells bold, significant ones with a trailing `*`.

    Print `legend(alpha)` below them (the tables carry no caption, to say it once).
    """
    marked = marks(table, tests)
    out = []
    for metric in table.metrics:
        columns = table.columns_of(metric)
        direction = "higher" if columns[0].higher_is_better else "lower"
        rich_table = Table(
            title=Text(f"{metric_label(metric)} ({direction} is better) · {describe(table)}", style="table.title")
        )
        for name in table.group_by:
            rich_table.add_column(name, overflow="fold")
        rich_table.add_column("n", justify="right", no_wrap=True)
        for column in columns:  # a narrow terminal wraps "0.7512 ± 0.0031" at the spaces, never cuts digits
            rich_table.add_column(
                column.scenario,
                justify="right",
                overflow="fold",
                style="italic" if column.scenario in ("mean", "overall") else None,
            )
        for index, row in enumerate(table.rows):
            cells = []
            for column in columns:
                best, star = marked.get((index, column), (False, False))
                text = format_cell(row.cell(column), row.n, digits) + ("*" if star else "")
                cells.append(Text(text, style="bold" if best else ""))
            rich_table.add_row(*map(Text, row.group), str(row.n), *cells)  # Text: tag values are not markup
        out.append(rich_table)
    return out


def render_markdown(
    table: ReportTable, tests: Tests | None = None, command: str | None = None, alpha: float = 0.05, digits: int = 4
) -> str:
    """A caption line (command, experiments, split, runs, legend), a blank line, one markdown table."""
    marked = marks(table, tests)
    source = f"`{command}` — " if command else ""
    lines = [f"Table: {source}{describe(table)}. {legend(alpha, markdown=True)}.", ""]
    header = [*table.group_by, "n", *(column.key for column in table.columns)]
    lines.append(_md_row(header))
    lines.append(_md_row(["---"] * len(table.group_by) + ["--:"] * (1 + len(table.columns))))
    for index, row in enumerate(table.rows):
        cells = []
        for column in table.columns:
            text = format_cell(row.cell(column), row.n, digits)
            best, star = marked.get((index, column), (False, False))
            if best and text:
                text = f"**{text}**" + ("\\*" if star else "")
            cells.append(text)
        lines.append(_md_row([*row.group, str(row.n), *cells]))
    return "\n".join(lines) + "\n"


def csv_header(table: ReportTable) -> list[str]:
    fields = [*table.group_by, "n"]
    for column in table.columns:
        fields += [f"{column.key}/mean", f"{column.key}/std", f"{column.key}/n"]
    return fields


def render_csv(table: ReportTable | Sequence[ReportTable]) -> str:
    """One row per group: tag values, n, then mean, std, n per column (full precision, NaN empty). Several
    tables (a report's sections) share one header, the union of theirs; a field a table lacks is empty."""
    tables = [table] if isinstance(table, ReportTable) else list(table)
    header = list(dict.fromkeys(field for part in tables for field in csv_header(part)))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for part in tables:
        for row in part.rows:
            fields = dict(zip(csv_header(part), _csv_row(row, part)))
            writer.writerow([fields.get(name, "") for name in header])
    return buffer.getvalue()


def _csv_row(row: Row, table: ReportTable) -> list[str]:
    fields = [*row.group, str(row.n)]
    for column in table.columns:
        cell = row.cell(column)
        fields += [_raw(cell.mean), _raw(cell.std), str(cell.n)]
    return fields


def _raw(value: float) -> str:
    return "" if math.isnan(value) else repr(value)


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"
