"""Grouped bar chart of one metric per scenario and group (matplotlib Agg, no pyplot state)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ssimctr.report.render import describe, metric_label
from ssimctr.report.table import ReportTable


def plot_bars(table: ReportTable, path: str | Path, metric: str = "auc", title: str | None = None) -> Path:
    """Bars = groups, clusters = scenarios (and `mean`); height = mean, error bar = std over runs.

    The value axis starts just below the lowest bar (AUCs differ in the third decimal).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    columns = [c for c in table.columns_of(metric) if c.scenario != "overall"]
    if not columns:
        raise ValueError(f"the table has no {metric} column")
    means = np.array([[row.cell(c).mean for c in columns] for row in table.rows])
    stds = np.nan_to_num(np.array([[row.cell(c).std for c in columns] for row in table.rows]))
    groups = len(table.rows)
    width = 0.8 / groups
    x = np.arange(len(columns))
    figure = Figure(figsize=(max(6.0, 1.2 * len(columns) * max(1, groups) ** 0.5 + 2), 4.5), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    return path
