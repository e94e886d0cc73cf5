"""Grouped bar chart of one metric per scenario and group (matplotlib Agg, no pyplot state)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ssimctr.report.render import describe, metric_label
from ssimctr.report.table import ReportTable


def plot_bars(
    table: ReportTable | Sequence[ReportTable], path: str | Path, metric: str = "auc", title: str | None = None
) -> Path:
    """Bars = groups, clusters = scenarios (and `mean`); height = mean, error bar = std over runs; one
    panel per table (a report's sections: their scenarios differ), stacked.

    The value axis starts just below the lowest bar (AUCs differ in the third decimal).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    tables = [table] if isinstance(table, ReportTable) else list(table)
    widths = [len(part.columns_of(metric)) * max(1, len(part.rows)) ** 0.5 for part in tables]
    figure = Figure(figsize=(max(6.0, 1.2 * max(widths) + 2), 4.5 * len(tables)), layout="constrained")
    FigureCanvasAgg(figure)
    for part, axes in zip(tables, figure.subplots(len(tables), 1, squeeze=False)[:, 0]):
        _bars(axes, part, metric, title if len(tables) == 1 else None)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    return path


def _bars(axes, table: ReportTable, metric: str, title: str | None) -> None:
    """One table's grouped bars on `axes`."""
    columns = [c for c in table.columns_of(metric) if c.scenario != "overall"]
    if not columns:
        raise ValueError(f"the table has no {metric} column")
    means = np.array([[row.cell(c).mean for c in columns] for row in table.rows])
    stds = np.nan_to_num(np.array([[row.cell(c).std for c in columns] for row in table.rows]))
    groups = len(table.rows)
    width = 0.8 / groups
    x = np.arange(len(columns))
    for index, row in enumerate(table.rows):
        axes.bar(
            x - 0.4 + width * (index + 0.5),
            means[index],
            width,
            yerr=stds[index],
            capsize=3,
            label=" / ".join(row.group) + f" (n={row.n})",
        )
    axes.set_xticks(x, [c.scenario for c in columns])
    axes.set_xlabel("scenario")
    axes.set_ylabel(f"{table.split} {metric_label(metric)} (mean ± std)")
    finite = np.isfinite(means)
    if finite.any():
        low = float(np.min((means - stds)[finite]))
        high = float(np.max((means + stds)[finite]))
        pad = max((high - low) * 0.15, 1e-3)
        bottom = low - pad
        if not math.isnan(bottom):
            axes.set_ylim(bottom, high + pad)
    axes.legend(title=" / ".join(table.group_by), fontsize="small", loc="best")
    axes.set_title(title or f"{metric_label(metric)} · {describe(table)}", fontsize="medium")
    axes.grid(axis="y", alpha=0.3)
    axes.set_axisbelow(True)
