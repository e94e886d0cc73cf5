"""Compare finished runs: one row per group of tags, mean ± std over seeds, best and significance marks.

Pure functions (no mlflow): `aggregate` -> `ReportTable`, `significance`, `render_terminal`,
`render_markdown`, `render_csv`, `plot_bars`. The runs come from `ssimctr.tracking.runs.search_runs`;
the `ssimctr-report` command (`ssimctr.report.cli:main`) wires them together.
"""

from ssimctr.report.plot import plot_bars
from ssimctr.report.render import pooling_warnings, render_csv, render_markdown, render_terminal
from ssimctr.report.table import (
    Cell,
    Column,
    PairedTest,
    ReportTable,
    Row,
    aggregate,
    config_differences,
    significance,
)

__all__ = [
    "Cell",
    "Column",
    "PairedTest",
    "ReportTable",
    "Row",
    "aggregate",
    "config_differences",
    "plot_bars",
    "pooling_warnings",
    "render_csv",
    "render_markdown",
    "render_terminal",
    "significance",
]
