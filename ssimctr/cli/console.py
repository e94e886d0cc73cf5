"""What a job shows the user: the prepared data in a few lines, per-scenario results as a rich
table and as CSV."""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ssimctr.data.prepare import PreparedDataset

COLUMNS = ("scenario", "rows", "ctr", "auc", "logloss")
logger = logging.getLogger(__name__)  # the job's main.log (Hydra's job log) gets the lines printed here


def describe_data(console: Console, data: PreparedDataset) -> None:
    """Scenarios, split sizes, cache state, dropped rows and (synthetic data) the oracle test AUC."""
    manifest = data.manifest
    sizes = ", ".join(f"{s} {manifest['splits'][s]['rows']:,}" for s in ("train", "val", "test"))
    state = "cached" if data.cache_hit else f"prepared in {manifest.get('seconds', 0):.1f}s"
    summary = (
        f"{len(manifest['scenarios'])} scenarios ({', '.join(manifest['scenarios'])}); {sizes} rows; "
        f"{state} -> {data.path}"
    )
    console.print(f"data [bold]{escape(str(manifest['dataset']))}[/]: {escape(summary)}")
    logger.info("data %s: %s", manifest["dataset"], summary)
    if manifest.get("dropped"):
        console.print(escape(f"dropped rows: {manifest['dropped']}"))
        logger.info("dropped rows: %s", manifest["dropped"])
    if "oracle_auc" in manifest:
        oracle = manifest["oracle_auc"]["test"]
        line = "oracle test AUC (true click probability): " + ", ".join(f"{k} {v:.4f}" for k, v in oracle.items())
        console.print(line)
        logger.info(line)


def split_summary(manifest: dict, scenario_names: Sequence[str], split: str) -> list[dict]:
    """Rows, positives and CTR per scenario of a split, from the manifest."""
    counts = manifest["splits"][split]["scenarios"]
    return [
        {
            "scenario": name,
            "rows": counts[name]["rows"],
            "positives": counts[name]["positives"],
            "ctr": counts[name]["positives"] / counts[name]["rows"] if counts[name]["rows"] else float("nan"),
        }
        for name in scenario_names
    ]


def results_rows(results: dict[str, float], summary: list[dict], split: str = "test") -> list[dict]:
    """One row per scenario, then `overall` (all rows pooled) and `mean` (macro mean; rows/ctr None).

    `results` comes from `scenario_metrics(split, ...)`, `summary` holds rows, positives and ctr per scenario.
    """
    rows = [
        {
            "scenario": s["scenario"],
            "rows": s["rows"],
            "ctr": s["ctr"],
            "auc": results[f"{split}/auc/{s['scenario']}"],
            "logloss": results[f"{split}/logloss/{s['scenario']}"],
        }
        for s in summary
    ]
    total = sum(s["rows"] for s in summary)
    positives = sum(s["positives"] for s in summary)
    rows.append(
        {
            "scenario": "overall",
            "rows": total,
            "ctr": positives / total if total else float("nan"),
            "auc": results[f"{split}/auc/overall"],
            "logloss": results[f"{split}/logloss/overall"],
        }
    )
    rows.append(
        {
            "scenario": "mean",
            "rows": None,
            "ctr": None,
            "auc": results[f"{split}/auc/mean"],
            "logloss": results[f"{split}/logloss/mean"],
        }
    )
    return rows


def print_results(console: Console, rows: list[dict], title: str, footer: str | None = None) -> None:
    """Print `title` on one line, then `rows` as a table; `overall` and `mean` sit in a bold section below
    the scenarios."""
    table = Table()
    table.add_column("Scenario")
    for name in ("Rows", "CTR", "AUC", "Logloss"):
        table.add_column(name, justify="right")
    summary_rows = [r for r in rows if r["scenario"] in ("overall", "mean")]
    for row in (r for r in rows if r["scenario"] not in ("overall", "mean")):
        table.add_row(*_cells(row))
    if summary_rows:
        table.add_section()
    for row in summary_rows:
        table.add_row(*_cells(row), style="bold")
    console.print(escape(title), style="bold", highlight=False, soft_wrap=True)
    console.print(table)
    if footer:
        console.print(footer)
    logger.info(
        "%s: %s",
        title,
        "; ".join(
            f"{r['scenario']} AUC {_fmt(r['auc'], '{:.4f}')} logloss {_fmt(r['logloss'], '{:.4f}')}" for r in rows
        ),
    )
    if footer:
        logger.info(footer)


def write_results_csv(path: Path, rows: list[dict]) -> None:
    """Write `rows` as CSV with header scenario,rows,ctr,auc,logloss (None as an empty field)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def _cells(row: dict) -> tuple[str, str, str, str, str]:
    return (
        str(row["scenario"]),
        _fmt(row["rows"], "{:,}"),
        _fmt(row["ctr"], "{:.2%}"),
        _fmt(row["auc"], "{:.4f}"),
        _fmt(row["logloss"], "{:.4f}"),
    )


def _fmt(value: float | int | None, spec: str) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    return spec.format(value)
